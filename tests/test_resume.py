"""A retried run resumes from its newest checkpoint that holds trainer state, however its lost attempt ran, and its
metrics read as one attempt: what the lost attempt logged after that checkpoint is rewound."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from healer import paths
from healer.retention import resume_point
from healer.store import SPECTRA_COLUMNS, Metric, Status, Store
from healer.train.sft import describe_trainer_state
from tests.conftest import REPO, healer, process_gone, wait_until
from tests.test_evals import record

# 200 examples / 16 a batch = 13 batches an epoch: a resume at step 10 skips 10 batches of its epoch, then crosses one
SHORT = ["--set", "train.max_steps=30", "--set", "train.save_steps=10", "--set", "train.logging_steps=1",
         "--set", "train.batch_size=16", "--set", "task.n_train=200", "--set", "eval.every_checkpoint=false",
         "--set", "spectra.every_checkpoint=false"]  # fmt: skip

# What each step of a resumed run must log exactly as the run uninterrupted would. Not compared: times, the end of
# training's train_loss (the mean over the steps of that attempt only) and SFT's num_tokens (TRL counts the tokens of
# the attempt; its count is not in the checkpoint).
SFT_STEP_METRICS = ("loss", "grad_norm", "learning_rate", "mean_token_accuracy", "entropy", "epoch")
RL_STEP_METRICS = ("loss", "reward", "reward_std", "grad_norm", "learning_rate", "completions/mean_length",
                   "outcome/correct", "num_tokens")  # fmt: skip


def _checkpoint(root: Path, run_id: int, step: int, store: Store, *, state: bool = True) -> Path:
    directory = root / f"run-{run_id}" / f"checkpoint-{step}"
    directory.mkdir(parents=True)
    if state:
        (directory / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    store.add_checkpoint(run_id, step, str(directory))
    return directory


def _spectrum(layer: int) -> dict[str, object]:
    numbers = {c: 1.0 for c in SPECTRA_COLUMNS}
    return {**numbers, "param": f"layers.{layer}.q_proj.weight", "layer": layer, "module": "q_proj", "side": "u",
            "method": "exact", "angles_deg": [1.0], "sigma_drift": [0.0]}  # fmt: skip


def test_resume_point_is_the_newest_registered_checkpoint_with_trainer_state(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.db")
    run = store.create_run(kind="sft", method="sft", name="sft", spec={})
    other = store.create_run(kind="sft", method="sft", name="other", spec={})
    assert resume_point(store, run.id) is None, "a run without checkpoints starts over"

    _checkpoint(tmp_path, run.id, 10, store)
    twenty = _checkpoint(tmp_path, run.id, 20, store)
    _checkpoint(tmp_path, run.id, 30, store, state=False)  # its trainer state never written (killed while saving)
    _checkpoint(tmp_path, other.id, 40, store)
    unregistered = tmp_path / f"run-{run.id}" / "checkpoint-40"
    unregistered.mkdir()
    (unregistered / "trainer_state.json").write_text("{}")  # saved, then killed before it was registered
    point = resume_point(store, run.id)
    assert point is not None and (point.step, point.path) == (20, str(twenty))

    store.mark_pruned(run.id, 20)
    assert resume_point(store, run.id).step == 10, "a pruned checkpoint is no resume point"
    (Path(store.checkpoints(run.id)[0].path) / "trainer_state.json").unlink()
    assert resume_point(store, run.id) is None


def test_rewind_deletes_what_came_after_the_step_and_keeps_the_rest(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.db")
    run = store.create_run(kind="sft", method="sft", name="sft", spec={})
    other = store.create_run(kind="sft", method="sft", name="other", spec={})
    for step in range(1, 7):
        for run_id in (run.id, other.id):
            store.log_metrics(run_id, step, {"loss": 1.0 / step, "learning_rate": 0.1})
    for step in (0, 2, 4):
        record(store, run.id, step, "id", correct=50)
        store.record_spectra(run.id, step, "start", run.id, 0, {}, [_spectrum(layer) for layer in range(3)])
    record(store, other.id, 4, "id", correct=50)
    kept = [m for m in store.metrics(run.id) if m.step <= 3]

    assert store.rewind(run.id, after_step=3) == {"metrics": 6, "evals": 1, "spectra": 3}
    assert store.metrics(run.id) == kept, "rows at or before the step keep their ids, values and wall times"
    assert [e.step for e in store.evals(run.id)] == [0, 2] and {s.step for s in store.spectra(run.id)} == {0, 2}
    orphans = store.conn.execute("SELECT COUNT(*) FROM eval_samples WHERE eval_id NOT IN (SELECT id FROM evals)")
    assert orphans.fetchone()[0] == 0, "an evaluation's samples go with it"
    assert len(store.metrics(other.id)) == 12 and len(store.evals(other.id)) == 1, "other runs are untouched"
    assert store.rewind(run.id, after_step=3) == {"metrics": 0, "evals": 0, "spectra": 0}


def test_the_log_names_the_trainer_state_a_checkpoint_lacks(tmp_path: Path) -> None:
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (tmp_path / name).write_bytes(b"")
    assert describe_trainer_state(tmp_path) == "optimizer, scheduler and RNG state"
    (tmp_path / "rng_state.pth").unlink()
    assert describe_trainer_state(tmp_path) == "optimizer and scheduler state; no RNG state, started afresh"


def test_retry_names_the_step_it_resumes_from(healer_home: Path) -> None:
    store = Store(paths.db_path())
    run = store.create_run(kind="sft", method="sft", name="sft", spec={})
    _checkpoint(healer_home, run.id, 10, store)
    _checkpoint(healer_home, run.id, 20, store, state=False)
    store.finish_run(run.id, Status.FAILED, exit_code=-9, reason="killed")
    result = healer("queue", "retry", str(run.id), check=True)
    assert f"run {run.id} queued again; it resumes from step 10 (checkpoint-10)" in result.stdout

    bare = store.create_run(kind="sft", method="sft", name="bare", spec={})
    store.finish_run(bare.id, Status.CANCELLED, exit_code=130, reason="cancelled")
    result = healer("queue", "retry", str(bare.id), check=True)
    assert "it has no checkpoint to resume from, so it starts over" in result.stdout


def test_a_retry_that_starts_over_does_not_measure_its_start_again(tmp_path: Path) -> None:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from healer.presets import load_preset
    from healer.train.callbacks import EvalCallback, SpectraCallback

    store = Store(tmp_path / "h.db")
    spec = load_preset("tiny-sft", ["spectra.ref=base"]).spec
    run = store.create_run(kind="sft", method="sft", name="sft", spec=spec.to_dict())
    measured: list[tuple[str, int]] = []
    callbacks = [kind(store, run, spec, tokenizer=None) for kind in (EvalCallback, SpectraCallback)]
    for callback in callbacks:
        callback.inline = lambda step, path, model, kind=callback.kind: measured.append((kind, step))

    def begin(global_step: int) -> None:
        for callback in callbacks:
            callback.on_train_begin(TrainingArguments(str(tmp_path)), TrainerState(global_step=global_step),
                                    TrainerControl())  # fmt: skip

    begin(0)
    assert measured == [("eval", 0), ("spectra", 0)], "a first attempt measures the model it starts from"
    begin(10)
    assert measured == [("eval", 0), ("spectra", 0)], "a resumed attempt does not"
    for split in ("id", "ood"):
        record(store, run.id, 0, split, correct=50)
    store.record_spectra(run.id, 0, "base", None, None, {}, [_spectrum(0)])
    begin(0)
    assert measured == [("eval", 0), ("spectra", 0)], "nor does one that starts over: the start is measured already"


# -- a real run, killed and retried ---------------------------------------------------------------------------------


def _training(store: Store) -> tuple[int, int] | None:
    """The running run's id and training pid, once it has logged a loss past a checkpoint."""
    running = store.runs([Status.RUNNING])
    run = running[0] if running else None
    checkpoints = store.checkpoints(run.id) if run else []
    if run is None or run.pid is None or not checkpoints:
        return None
    losses = store.metrics(run.id, "loss")
    return (run.id, run.pid) if losses and losses[-1].step > checkpoints[-1].step else None


def _rows(metrics: list[Metric]) -> set[tuple[int, str, int, float | None, float]]:
    return {(m.id, m.name, m.step, m.value, m.wall_time) for m in metrics}


def _kill_9_while_training(*args: str) -> int:
    """`healer run ARGS` in the foreground, then kill -9 of it and of its training process once a loss was logged
    past a checkpoint; the run's id."""
    parent = subprocess.Popen([sys.executable, "-m", "healer", "run", *args, "--quiet"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))  # fmt: skip
    try:  # whatever happens, the parent goes; a training process left alone then cancels itself
        wait_until(paths.db_path().exists, "the database to appear", timeout=60)
        with Store(paths.db_path()) as store:
            run_id, pid = wait_until(lambda: _training(store), "a loss logged past a checkpoint", poll=0.1)
        os.kill(pid, signal.SIGKILL)  # the training process first: it must not hear its parent go and stop neatly
    finally:
        parent.kill()
        parent.wait()
    wait_until(lambda: process_gone(pid), f"the killed training process {pid} to be gone")
    return run_id


def _differences(run_id: int, other_id: int, after_step: int, names: tuple[str, ...]) -> dict[str, float]:
    """The largest difference of each of these metrics between two runs, at the steps after a step."""
    with Store(paths.db_path()) as store:
        ours = {(m.name, m.step): m.value for m in store.metrics(run_id) if m.step > after_step and m.name in names}
        theirs = {(m.name, m.step): m.value for m in store.metrics(other_id) if m.step > after_step and m.name in names}
    assert ours and set(ours) == set(theirs), set(ours) ^ set(theirs)
    differences: dict[str, float] = {}
    for (name, step), value in ours.items():
        gap = abs((value or 0.0) - (theirs[name, step] or 0.0))
        differences[name] = max(differences.get(name, 0.0), gap)
    return differences


@pytest.mark.slow
def test_kill_9_of_healer_run_then_retry_resumes_where_its_checkpoint_left_off(healer_home: Path) -> None:
    run_id = _kill_9_while_training("tiny-sft", *SHORT)
    with Store(paths.db_path()) as store:
        point = resume_point(store, run_id)
        assert point is not None and store.run(run_id).status != Status.DONE
        resume = point.step
        before = store.metrics(run_id)
        assert any(m.step > resume for m in before), "the lost attempt logged past its checkpoint"
    stale = Path(point.path).parent / f"checkpoint-{resume + 10}"
    stale.mkdir(exist_ok=True)  # saved (or half saved) by the lost attempt, never registered: HF saves over it
    (stale / "trainer_state.json").write_text("not json")

    retried_at = time.time()  # by wall time: a rewind frees the newest ids, and SQLite gives them out again
    retried = healer("queue", "retry", str(run_id), check=True)
    assert f"it resumes from step {resume} (checkpoint-{resume})" in retried.stdout
    healer("worker", "--exit-when-idle", timeout=900, check=True)

    with Store(paths.db_path()) as store:
        run = store.run(run_id)
        after = store.metrics(run_id)
        checkpoints = [c.step for c in store.checkpoints(run_id)]
    assert (run.status, run.attempts) == ("done", 1), run.reason
    assert checkpoints == [10, 20, 30]
    assert json.loads((stale / "trainer_state.json").read_text())["global_step"] == resume + 10
    assert _rows([m for m in after if m.step <= resume]) == _rows([m for m in before if m.step <= resume])
    new = sorted((m for m in after if m.wall_time > retried_at), key=lambda m: (m.wall_time, m.step))
    assert new and new[0].step == resume + 1, "the retry continued after the checkpoint, not from step 1"
    assert all(m.wall_time > retried_at for m in after if m.step > resume), "no row of the lost attempt past it"
    log = Path(run.log_path or "").read_text()
    assert f"run {run_id}: resuming from step {resume} (checkpoint-{resume}: optimizer, scheduler and RNG state)" in log

    # the same run uninterrupted: HF skips the batches already seen and restores the RNG, so the losses match
    healer("run", "tiny-sft", *SHORT, "--quiet", timeout=900, check=True)
    with Store(paths.db_path()) as store:
        whole = store.runs()[-1].id
    differences = _differences(run_id, whole, resume, SFT_STEP_METRICS)
    assert all(d < 1e-6 for d in differences.values()), differences


@pytest.mark.slow
def test_rl_from_a_checkpoint_resumes_the_same_way(healer_home: Path) -> None:
    sft_args = ["--set", "train.max_steps=10", "--set", "train.save_steps=10", "--set", "train.batch_size=16",
                "--set", "task.n_train=200", "--set", "eval.every_checkpoint=false",
                "--set", "spectra.every_checkpoint=false", "--quiet"]  # fmt: skip
    sft = json.loads(healer("run", "tiny-sft", *sft_args, "--json", check=True).stdout)["id"]
    grpo = ["tiny-grpo", "--from", f"{sft}@10", "--set", "train.max_steps=9", "--set", "train.save_steps=3",
            "--set", "train.logging_steps=1", "--set", "train.batch_size=16", "--set", "rl.num_generations=4",
            "--set", "task.n_train=64", "--set", "eval.every_checkpoint=false",
            "--set", "spectra.every_checkpoint=false"]  # fmt: skip
    run_id = _kill_9_while_training(*grpo)
    with Store(paths.db_path()) as store:
        resume = resume_point(store, run_id).step
    retried_at = time.time()
    assert f"resumes from step {resume}" in healer("queue", "retry", str(run_id), check=True).stdout
    healer("worker", "--exit-when-idle", timeout=900, check=True)
    with Store(paths.db_path()) as store:
        run = store.run(run_id)
        new = sorted((m for m in store.metrics(run_id) if m.wall_time > retried_at), key=lambda m: m.wall_time)
    assert run.status == "done" and run.parent_run == sft, run.reason
    assert new[0].step == resume + 1
    assert f"run {run_id}: resuming from step {resume}" in Path(run.log_path or "").read_text()
    healer("run", *grpo, "--quiet", timeout=900, check=True)
    with Store(paths.db_path()) as store:
        whole = store.runs()[-1].id
    differences = _differences(run_id, whole, resume, RL_STEP_METRICS)
    assert all(d < 1e-6 for d in differences.values()), differences
