"""The demo's progress lines on a real store with seeded records, no training: a line when a stage starts, one per
evaluated checkpoint, one when it ends, with the time left falling as the run goes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from healer.cli.demo_progress import JOB_S, START_S, STEP_S, Progress, Stage, minutes
from healer.stats import wilson
from healer.store import Run, Status, Store

SPEC = {"train": {"save_steps": 50}, "eval": {"every_checkpoint": True}, "spectra": {"every_checkpoint": True}}


def _eval(store: Store, run: int, step: int, split: str, correct: int, n: int = 500) -> None:
    low, high = wilson(correct, n)
    store.record_eval({"run_id": run, "step": step, "checkpoint_path": None, "task": "card_sum", "split": split,
                       "protocol": "single", "max_attempts": 1, "n": n, "correct": correct, "accuracy": correct / n,
                       "ci_low": low, "ci_high": high, "format_error_rate": 0.0, "mean_reward": None, "loss": None,
                       "outcomes": "{}", "settings": "{}", "seconds": 1.0}, [])  # fmt: skip


def _job(store: Store, run: Run, kind: str, step: int, status: Status = Status.DONE) -> None:
    job = store.create_run(kind=kind, method=kind, name=f"{kind} {run.id}@{step}", spec={}, parent_run=run.id,
                           parent_step=step, queued=1)  # fmt: skip
    if status != Status.QUEUED:
        store.finish_run(job.id, status, exit_code=0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 5.0  # past the read interval on every tick
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "healer.db")


def test_a_stage_is_announced_with_its_estimate_reports_checkpoints_once_and_ends(store: Store) -> None:
    sft = store.create_run(kind="sft", method="sft", name="tiny-sft", spec=SPEC, total_steps=300, queued=1)
    rl = store.create_run(kind="rl", method="grpo", name="tiny-grpo", spec=SPEC, total_steps=100, queued=1)
    lines: list[str] = []
    progress = Progress(store, [Stage(1, "SFT", [sft.id]), Stage(2, "RL", [rl.id])], lines.append, clock=Clock())

    # queued: a start, 300 steps, an evaluation of the start and of each of 6 checkpoints, spectra of each
    expected = 2 * START_S + 300 * STEP_S["sft"] + 7 * JOB_S["eval"] + 6 * JOB_S["spectra"]
    assert progress.stage_left(progress.stages[0]) == pytest.approx(expected)
    progress.tick()
    assert lines == [f"stage 1: SFT (run {sft.id} tiny-sft); about {minutes(expected)}"]

    store.mark_running(sft.id, pid=1, host="here")
    store.log_metrics(sft.id, 150, {"loss": 0.5})
    halfway = progress.stage_left(progress.stages[0])
    assert halfway == pytest.approx(expected - START_S - 150 * STEP_S["sft"])
    for step, ood in ((0, 460), (50, 140)):
        _eval(store, sft.id, step, "id", 500)
        _eval(store, sft.id, step, "ood", ood)
        _job(store, sft, "eval", step)
    _eval(store, sft.id, 100, "id", 480)  # its OOD half not recorded yet: no line
    progress.tick()
    progress.tick()
    assert lines[1:] == [
        f"  {sft.id}@0/300: ID 100.0, OOD 92.0; stage 1 has about {minutes(progress.stage_left(progress.stages[0]))} "
        "left",
        f"  {sft.id}@50/300: ID 100.0, OOD 28.0; stage 1 has about "
        f"{minutes(progress.stage_left(progress.stages[0]))} left",
    ]
    assert progress.stage_left(progress.stages[0]) < halfway  # two evaluation jobs are done

    store.finish_run(sft.id, Status.DONE, exit_code=0)
    _job(store, sft, "eval", 300, Status.QUEUED)  # the last checkpoint's evaluation still waits: not done yet
    progress.tick()
    assert not any(line.startswith("stage 1 done") for line in lines)
    for job in store.checkpoint_jobs(sft.id):
        if job.status == Status.QUEUED:
            store.finish_run(job.id, Status.DONE, exit_code=0)
    progress.tick()
    assert re.fullmatch(r"stage 1 done in \d+ min \d\d s|stage 1 done in \d+ s", lines[-2]), lines
    assert lines[-1].startswith(f"stage 2: RL (run {rl.id} tiny-grpo); about ")


def test_a_failed_run_ends_its_stage_and_says_so(store: Store) -> None:
    run = store.create_run(kind="sft", method="sft", name="tiny-sft", spec=SPEC, total_steps=300, queued=1)
    lines: list[str] = []
    progress = Progress(store, [Stage(1, "SFT", [run.id])], lines.append, clock=Clock())
    progress.tick()
    store.finish_run(run.id, Status.FAILED, exit_code=1, reason="boom")
    progress.tick()
    assert lines[-1].endswith(f"(run {run.id} failed)") and lines[-1].startswith("stage 1 done in")
    assert progress.current == 1


def test_the_estimate_takes_this_machines_rate_once_a_run_of_the_kind_finished(store: Store) -> None:
    done = store.create_run(kind="sft", method="sft", name="earlier", spec={}, total_steps=100)
    store.conn.execute("UPDATE runs SET status = 'done', started_at = '2026-01-01T00:00:00+00:00', "
                       "finished_at = '2026-01-01T00:01:52+00:00' WHERE id = ?", [done.id])  # fmt: skip
    store.conn.commit()
    no_jobs = {"eval": {"every_checkpoint": False}}
    queued = store.create_run(kind="sft", method="sft", name="next", spec=no_jobs, total_steps=100, queued=1)
    progress = Progress(store, [Stage(1, "SFT", [queued.id])], lambda line: None)
    rate = (112 - START_S) / 100  # 1 s per step here, against the 2-core figure of STEP_S
    assert progress.stage_left(progress.stages[0]) == pytest.approx(START_S + 100 * rate)


@pytest.mark.parametrize(("seconds", "about", "text"),
                         [(3, True, "5 s"), (42, True, "40 s"), (150, True, "2 min"), (150, False, "2 min 30 s"),
                          (42, False, "42 s")])  # fmt: skip
def test_minutes(seconds: float, about: bool, text: str) -> None:
    assert minutes(seconds, about=about) == text
