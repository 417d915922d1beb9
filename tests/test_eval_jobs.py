"""Evaluation jobs, the worker's placement of them, checkpoint retention and database faults, without training."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from healer import paths, queue
from healer.errors import HealerError
from healer.presets import load_preset
from healer.refs import resolve_checkpoint
from healer.retention import protected
from healer.runner import create_run
from healer.store import Run, Status, Store
from healer.worker import Child, Worker
from tests.conftest import REPO, healer
from tests.test_lineage_heal import record


def fake_checkpoint(directory: Path, megabytes: int = 0) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text("{}")
    (directory / "tokenizer_config.json").write_text("{}")
    if megabytes:
        with open(directory / "model.safetensors", "wb") as weights:
            weights.truncate(megabytes * 2**20)  # sparse: the size counts, not the bytes
    return str(directory)


def sft_run(store: Store, *overrides: str) -> Run:
    return create_run(store, load_preset("tiny-sft", list(overrides)))


def test_workers_take_evaluation_jobs_first_then_priority_then_age(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.db")
    made = []
    for i in range(23):
        job = i % 5 == 0
        made.append(store.create_run(kind="eval" if job else "sft", method="eval" if job else "sft", name=f"r{i}",
                                     spec={}, queued=1, priority=i % 3, parent_run=1 if job else None))  # fmt: skip
    store.create_run(kind="eval", method="eval", name="a directory's evaluations", spec={}, queued=1, priority=9)
    expected = sorted(store.queued_runs(), key=lambda r: (not r.is_checkpoint_job, -r.priority, r.id))
    assert [r.id for r in store.iter_queued(page=4)] == [r.id for r in expected], "pages join in claim order"
    assert [r.id for r in store.queued_checkpoint_jobs(3)] == [r.id for r in expected[:3]]
    assert all(r.is_checkpoint_job for r in expected[:5]) and not expected[5].is_checkpoint_job


# -- the worker's placement of evaluation jobs --------------------------------------------------------------------


@pytest.fixture
def sleeper() -> subprocess.Popen[bytes]:
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def placement(tmp_path: Path, policy: str, memory: dict[str, tuple[int, int]], gpus: list[str],
              child: subprocess.Popen[bytes], **worker: int) -> tuple[Worker, Run]:  # fmt: skip
    store = Store(tmp_path / "h.db")
    training = store.create_run(kind="sft", method="sft", name="t", spec={})
    path = fake_checkpoint(tmp_path / "checkpoint-5", megabytes=4096)
    job = store.create_run(kind="eval", method="eval", name="e", spec={}, parent_run=training.id, parent_step=5,
                           model_path=path, queued=1)  # fmt: skip
    work = Worker(store, gpus, 1, say=lambda line: None, eval_policy=policy, memory=lambda: memory, **worker)
    work.children.append(Child([training.id], child, ["0"]))
    return work, job


def test_share_puts_an_evaluation_beside_its_run_only_when_the_checkpoint_fits(tmp_path: Path, sleeper) -> None:
    need = 4096 * 5 // 4 + 1024  # the weights, a quarter more, and the headroom, in MiB
    roomy, job = placement(tmp_path, "share", {"0": (80000 - need, 80000)}, ["0"], sleeper)
    assert roomy._eval_gpus(job) == ["0"], "fits beside the training run on its GPU"
    full, job = placement(tmp_path, "share", {"0": (80000 - need + 1, 80000)}, ["0"], sleeper)
    assert full._eval_gpus(job) is None, "one MiB short: wait for a gap"
    second, job = placement(tmp_path, "share", {"0": (79000, 80000), "1": (0, 80000)}, ["0", "1"], sleeper)
    assert second._eval_gpus(job) == ["1"], "a free GPU first"
    foreign, job = placement(tmp_path, "share", {"0": (79000, 80000), "1": (40000, 80000)}, ["0", "1"], sleeper)
    assert foreign._eval_gpus(job) is None, "GPU 1 is someone else's (half its memory taken)"
    cpu, job = placement(tmp_path, "cpu", {"0": (0, 80000)}, ["0"], sleeper)
    assert cpu._eval_gpus(job) == [], "the cpu policy: CUDA_VISIBLE_DEVICES empty"
    busy, job = placement(tmp_path, "share", {"0": (0, 80000)}, ["0"], sleeper)
    busy.children.append(Child([999], sleeper, ["0"], side=True))
    assert busy._eval_gpus(job) is None, "max_evals = 1 evaluation process beside the runs"


def test_wait_policy_gives_an_evaluation_a_slot_and_auto_depends_on_the_gpus(tmp_path: Path, sleeper) -> None:
    work, job = placement(tmp_path, "wait", {}, [], sleeper)
    assert work._full(), "the slot holds the training run and `wait` puts nothing beside it"
    assert work._slot_gpus(job) is None
    work.children.clear()
    assert work._slot_gpus(job) == [], "between runs, on the CPU"
    assert Worker(work.store, [], 1, say=print).eval_policy == "wait"
    assert Worker(work.store, ["0"], 1, say=print).eval_policy == "share"
    with pytest.raises(HealerError, match="--eval-policy"):
        Worker(work.store, [], 1, eval_policy="later")


def test_a_batch_skips_a_cancelled_job_goes_on_past_a_failed_one_and_requeues_what_it_never_began(
    tmp_path: Path,
) -> None:
    db = tmp_path / "h.db"
    store = Store(db)
    training = store.create_run(kind="sft", method="sft", name="t", spec={}, model_path="/base")
    store.finish_run(training.id, Status.DONE, exit_code=0)
    jobs = [store.create_run(kind="eval", method="eval", name=f"e{i}", spec={}, parent_run=training.id,
                             parent_step=step, queued=1, out_dir=str(tmp_path), log_path=str(tmp_path / "e.log"))
            for i, step in enumerate((5, 10, 15))]  # fmt: skip
    for job in jobs:
        assert store.claim(job.id, worker="w", host="h")
    store.finish_run(jobs[1].id, Status.CANCELLED, exit_code=None, reason="cancelled before it started")
    env = {**os.environ, "HEALER_DB": str(db)}
    result = subprocess.run([sys.executable, "-m", "healer.train", *(str(j.id) for j in jobs)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    ended = [store.run(j.id) for j in jobs]
    assert [r.status for r in ended] == [Status.FAILED, Status.CANCELLED, Status.FAILED]
    assert "no checkpoint at step 5" in ended[0].reason and "Traceback" not in result.stdout
    assert f"run {jobs[1].id} was cancelled before it began; skipped" in result.stdout

    # a batch whose process died before it began the second job: that one goes back to the queue
    again = [store.create_run(kind="eval", method="eval", name=f"f{i}", spec={}, parent_run=training.id,
                              parent_step=5, queued=1, log_path=str(tmp_path / "f.log")) for i in range(2)]  # fmt: skip
    for job in again:
        store.claim(job.id, worker="w", host="h")
    store.mark_running(again[0].id, pid=1, host="h")
    dead = subprocess.Popen(["true"])
    dead.wait()
    work = Worker(store, [], 1, say=lambda line: None)
    work.children.append(Child([j.id for j in again], dead, []))
    work.reap_children()
    assert [store.run(j.id).status for j in again] == [Status.FAILED, Status.QUEUED]
    assert work.children == []


def test_a_peak_is_not_picked_while_evaluation_jobs_are_pending(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.db")
    run = store.create_run(kind="sft", method="sft", name="t", spec={}, model_path="/base")
    for step in (5, 10):
        store.add_checkpoint(run.id, step, fake_checkpoint(tmp_path / f"c{step}"))
        record(store, run.id, step, "id", 50)
    record(store, run.id, 5, "ood", 40)
    store.finish_run(run.id, Status.DONE, exit_code=0)
    job = queue.enqueue_job(store, run, 10, str(tmp_path / "c10"))
    assert queue.enqueue_job(store, run, 10, str(tmp_path / "c10")) is None, "one pending job per checkpoint"
    with pytest.raises(HealerError, match="1 evaluation jobs of run 1 are not done yet"):
        resolve_checkpoint(store, f"{run.id}@peak-ood")
    wait = queue.wait_for_start(store, f"{run.id}@peak-ood")
    assert wait is not None and not wait.fatal and "evaluations" in wait.reason
    assert queue.wait_for_start(store, f"{run.id}@last") is None, "@last needs no evaluation"
    assert store.children(run.id) == [], "evaluation jobs are not runs started from the run"
    store.finish_run(job.id, Status.DONE, exit_code=0)
    assert resolve_checkpoint(store, f"{run.id}@peak-ood").step == 5


# -- retention ----------------------------------------------------------------------------------------------------


def test_keep_last_n_prunes_only_what_nothing_protects(healer_home: Path) -> None:
    store = Store(paths.db_path())
    run = sft_run(store, "train.keep='last:2'")
    steps = list(range(10, 101, 10))
    for step in steps:
        store.add_checkpoint(run.id, step, fake_checkpoint(healer_home / "ckpts" / f"checkpoint-{step}"))
    for step in steps:
        if step == 60:
            continue  # its evaluation job is still queued
        ood, ind, loss = {20: 90}.get(step, 10), {30: 99}.get(step, 50), {40: 0.1}.get(step, 1.0)
        record(store, run.id, step, "id", ind, loss=loss)
        record(store, run.id, step, "ood", ood)
    queue.enqueue_job(store, run, 60, str(healer_home / "ckpts" / "checkpoint-60"))
    store.create_run(kind="rl", method="grpo", name="from 10", spec={}, queued=1, start_ref=f"{run.id}@10")
    healer("runs", "keep", f"{run.id}@50", check=True)

    reasons = protected(store, store.run(run.id))
    assert {s: reasons[s] for s in (10, 20, 30, 40, 50, 60)} == {
        10: "start of queued run 3", 20: "peak-ood", 30: "best-id", 40: "loss-pick", 50: "kept by hand",
        60: "read by evaluation job 2"}  # fmt: skip
    dry = healer("runs", "prune", str(run.id), "--dry-run", check=True)
    assert "would delete checkpoints 70, 80" in dry.stdout
    assert all((healer_home / "ckpts" / f"checkpoint-{s}").is_dir() for s in steps), "a dry run deletes nothing"

    healer("runs", "prune", str(run.id), check=True)
    on_disk = {s for s in steps if (healer_home / "ckpts" / f"checkpoint-{s}").is_dir()}
    assert on_disk == {10, 20, 30, 40, 50, 60, 90, 100}
    assert [c.step for c in store.checkpoints(run.id)] == sorted(on_disk)
    assert [c.step for c in store.checkpoints(run.id, pruned=True) if c.pruned_at] == [70, 80]
    with pytest.raises(HealerError, match="was pruned"):
        resolve_checkpoint(store, f"{run.id}@70")
    assert "was pruned" in healer("runs", "keep", f"{run.id}@70").stderr
    shown = json.loads(healer("runs", "show", str(run.id), "--json", check=True).stdout)
    assert [c["step"] for c in shown["checkpoints"] if c["pruned_at"]] == [70, 80]
    assert "last:0" in healer("runs", "prune", str(run.id), "--keep", "last:0").stderr


def test_keep_must_be_all_or_last_n() -> None:
    for bad, needle in (("'last'", 'use "all" or "last:N"'), ("'last:0'", "last:1")):
        result = healer("presets", "show", "tiny-sft", "--set", f"train.keep={bad}")
        assert result.returncode == 2 and needle in result.stderr, result.stderr


# -- database faults ----------------------------------------------------------------------------------------------


def test_a_locked_database_is_one_line_and_nothing_half_written(healer_home: Path) -> None:
    healer("queue", "pause", check=True)  # a write: creates the database
    healer("queue", "resume", check=True)
    holder = sqlite3.connect(paths.db_path(), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        env = {**os.environ, "HEALER_DB_TIMEOUT": "0.3"}
        result = subprocess.run([sys.executable, "-m", "healer", "queue", "add", "presets/tiny-sft.toml"], cwd=REPO,
                                env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "is locked by another process (waited 0.3 s); nothing was written" in lines[0]
    assert json.loads(healer("queue", "ls", "--json", check=True).stdout) == []
    assert json.loads(healer("runs", "ls", "--json", check=True).stdout) == []


def test_metric_writes_refused_by_a_lock_are_kept_and_land_later(tmp_path: Path, monkeypatch) -> None:
    from healer.train.callbacks import StoreCallback

    monkeypatch.setenv("HEALER_DB_TIMEOUT", "0.2")
    store = Store(tmp_path / "h.db")
    run = store.create_run(kind="sft", method="sft", name="t", spec={})
    callback = StoreCallback(store, run.id)
    state = SimpleNamespace(is_world_process_zero=True, global_step=1)
    holder = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    callback.on_log(None, state, None, logs={"loss": 2.0})
    state.global_step = 2
    callback.on_log(None, state, None, logs={"loss": 1.5})
    assert len(callback.pending) == 2 and store.metrics(run.id) == [], "refused, kept, training goes on"
    holder.execute("ROLLBACK")
    state.global_step = 3
    callback.on_log(None, state, None, logs={"loss": 1.0})
    assert [(m.step, m.value) for m in store.metrics(run.id, "loss")] == [(1, 2.0), (2, 1.5), (3, 1.0)]
    assert not callback.pending


# -- the service unit ---------------------------------------------------------------------------------------------


def test_install_service_writes_a_user_unit_with_the_workers_options(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    command = [sys.executable, "-m", "healer", "worker", "--install-service", "--gpus", "none", "--max-parallel", "2"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "config" / "systemd" / "user" / "healer-worker.service"
    text = unit.read_text()
    assert f"wrote {unit}" in result.stdout and "systemctl --user" in result.stderr
    assert f'Environment="HEALER_DB={paths.db_path()}"' in text and "KillMode=process" in text
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_line == (f"ExecStart={sys.executable} -m healer worker --gpus none --eval-policy auto --max-evals 1 "
                         "--max-parallel 2")  # fmt: skip
