"""Evaluation of a real (tiny) model in this process: rows, intervals, samples, both protocols."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from healer.presets import EvalSpec, RunSpec, TaskSpec
from healer.stats import wilson
from healer.store import Store
from healer.tasks import make_task
from healer.train.evaluate import evaluate, generate
from healer.train.loading import load_model, load_tokenizer
from healer.train.tiny import save_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, str]:
    path = str(save_tiny(tmp_path_factory.mktemp("tiny") / "model"))
    spec = RunSpec()
    return load_model(path, spec), load_tokenizer(path, spec), path


def spec_for(**eval_options: object) -> RunSpec:
    task = TaskSpec(name="arithmetic", eval_n=12)
    return RunSpec(task=task, eval=EvalSpec(max_new_tokens=4, batch_size=5, **eval_options))  # type: ignore[arg-type]


def test_single_attempt_evaluation_writes_rows_with_intervals(tiny: tuple, tmp_path: Path) -> None:
    model, tokenizer, path = tiny
    store = Store(tmp_path / "h.db")
    run = store.create_run(kind="sft", method="sft", name="r", spec={})
    model.train()  # as the trainer hands it to the evaluation callback
    stored = evaluate(store, run_id=run.id, step=0, checkpoint_path=path, model=model, tokenizer=tokenizer,
                      spec=spec_for())  # fmt: skip
    assert [e.split for e in stored] == ["id", "ood"]
    for e in stored:
        assert (e.n, e.protocol, e.max_attempts) == (12, "single", 1)
        assert (e.ci_low, e.ci_high) == wilson(e.correct, e.n)
        assert e.loss is not None and 3.0 < e.loss < 6.0  # an untrained model: near log(vocab) = 4.6
        assert sum(json.loads(e.outcomes).values()) == 12
        samples = store.eval_samples(e.id)
        assert len(samples) == 12 and all(s.attempts == 1 and s.transcript is None for s in samples)
        assert sum(s.correct for s in samples) == e.correct
    assert model.training, "the model goes back to training mode after evaluation"


def test_feedback_protocol_retries_with_the_verifiers_complaint(tiny: tuple, tmp_path: Path) -> None:
    model, tokenizer, path = tiny
    store = Store(tmp_path / "h.db")
    run = store.create_run(kind="sft", method="sft", name="r", spec={})
    spec = spec_for(protocol="feedback", max_attempts=3)
    (e,) = evaluate(store, run_id=run.id, step=5, checkpoint_path=path, model=model, tokenizer=tokenizer, spec=spec,
                    splits=("id",))  # fmt: skip
    assert (e.protocol, e.max_attempts) == ("feedback", 3)
    for sample in store.eval_samples(e.id, wrong_only=True):
        assert sample.attempts == 3
        turns = json.loads(sample.transcript or "[]")
        assert [t["role"] for t in turns] == ["assistant", "user", "assistant", "user", "assistant"]
        assert turns[-1]["content"] == sample.completion and turns[1]["content"]


def test_batched_generation_matches_one_at_a_time(tiny: tuple) -> None:
    model, tokenizer, _ = tiny
    task = make_task(TaskSpec(name="arithmetic"))
    conversations = [[{"role": "user", "content": e.prompt}] for e in task.eval_examples("ood", 10, 3)]
    conversations += [[{"role": "user", "content": "1+1="}]]  # a much shorter prompt: left padding matters
    settings = EvalSpec(max_new_tokens=6, batch_size=11)
    model.eval()
    batched = generate(model, tokenizer, conversations, settings)
    single = generate(model, tokenizer, conversations, dataclasses.replace(settings, batch_size=1))
    assert sum(a == b for a, b in zip(batched, single, strict=True)) >= 10
    assert tokenizer.padding_side == "left"


def test_a_queued_evaluation_job_runs_with_its_own_settings(tiny: tuple, tmp_path: Path) -> None:
    """`healer eval RUN@STEP --queue --split ood --protocol feedback` (the TUI's `e`): the job carries the changed
    settings, and the job's process evaluates with them, storing the rows under the run."""
    from healer.evals import eval_overrides
    from healer.queue import queue_checkpoint_job
    from healer.refs import resolve_checkpoint
    from healer.train.checkpoints import run_eval_job

    _, _, path = tiny
    store = Store(tmp_path / "h.db")
    run = store.create_run(kind="sft", method="sft", name="r", spec=spec_for().to_dict(), model_path=path)
    target = resolve_checkpoint(store, f"{run.id}@0")
    job = queue_checkpoint_job(store, target, "eval", eval_overrides([], "ood", 6, "feedback"))
    run_eval_job(store.run(job.id), store)
    (e,) = store.evals(run.id)
    assert (e.step, e.split, e.n, e.protocol) == (0, "ood", 6, "feedback")
    assert run.spec_dict["eval"]["protocol"] == "single"  # the run's own settings are untouched
