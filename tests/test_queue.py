"""The queue and the worker: claims, dependencies, priorities, cancel, kill -9 and retry, with real processes."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from healer import paths
from healer.queue import ready_runs, wait_for
from healer.store import Status, Store
from tests.conftest import REPO, healer

TINY = ["--set", "task.n_train=300", "--set", "train.batch_size=16", "--set", "task.eval_n=20",
        "--set", "eval.batch_size=20", "--set", "train.logging_steps=1"]  # fmt: skip


def sft(steps: int, save: int) -> list[str]:
    return ["presets/tiny-sft.toml", *TINY, "--set", f"train.max_steps={steps}", "--set", f"train.save_steps={save}"]


# -- claims and dependencies, without training --------------------------------------------------------


def _claim_all(db: str, worker: str, ids: list[int], out: multiprocessing.Queue) -> None:
    store = Store(db)
    out.put([i for i in ids if store.claim(i, worker=worker, host="h")])


def test_two_workers_never_claim_the_same_run(tmp_path: Path) -> None:
    db = str(tmp_path / "h.db")
    store = Store(db)
    ids = [store.create_run(kind="sft", method="sft", name=f"r{i}", spec={}, queued=1).id for i in range(150)]
    results: multiprocessing.Queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_claim_all, args=(db, f"w{w}", ids, results)) for w in range(3)]
    for w in workers:
        w.start()
    claimed = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    everything = [i for got in claimed for i in got]
    assert sorted(everything) == ids, "every run claimed exactly once"
    assert all(r.attempts == 1 and r.status == Status.RUNNING for r in store.runs())


def test_foreground_runs_are_not_for_workers(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.db")
    foreground = store.create_run(kind="sft", method="sft", name="now", spec={})
    assert not store.claim(foreground.id, worker="w", host="h")
    assert store.queued_runs() == []


def test_waits_and_their_ends(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.db")
    parent = store.create_run(kind="sft", method="sft", name="sft", spec={}, queued=1)
    after = store.create_run(kind="sft", method="sft", name="b", spec={}, queued=1, after_run=parent.id)
    peak = store.create_run(kind="rl", method="grpo", name="c", spec={}, queued=1, start_ref=f"{parent.id}@peak-ood")
    step = store.create_run(kind="rl", method="grpo", name="d", spec={}, queued=1, start_ref=f"{parent.id}@10")
    assert "to finish" in wait_for(store, store.run(after.id)).reason
    assert "to finish" in wait_for(store, store.run(peak.id)).reason
    assert "save step 10" in wait_for(store, store.run(step.id)).reason

    checkpoint = tmp_path / "checkpoint-10"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "tokenizer_config.json").write_text("{}")
    store.add_checkpoint(parent.id, 10, str(checkpoint))
    assert wait_for(store, store.run(step.id)) is None, "RUN@STEP waits only for that checkpoint"
    assert wait_for(store, store.run(peak.id)) is not None, "RUN@peak-ood waits for the whole run"

    store.finish_run(parent.id, Status.FAILED, exit_code=1, reason="boom")
    for waiting in (after, peak):
        verdict = wait_for(store, store.run(waiting.id))
        assert verdict.fatal and f"run {parent.id}" in verdict.reason and "failed" in verdict.reason


def test_a_waiting_run_leaves_the_claims_until_its_dependency_moves(tmp_path: Path) -> None:
    """A worker checks a waiting run once, blocks it on the run it waits for, and reads it again only after that
    run saves a checkpoint or finishes: claims skip blocked runs by index, however deep the queue."""
    store = Store(tmp_path / "h.db")
    parent = store.create_run(kind="sft", method="sft", name="sft", spec={}, queued=1)
    assert store.claim(parent.id, worker="w", host="h")  # running
    after = store.create_run(kind="sft", method="sft", name="b", spec={}, queued=1, after_run=parent.id)
    step = store.create_run(kind="rl", method="grpo", name="d", spec={}, queued=1, start_ref=f"{parent.id}@10")
    free = store.create_run(kind="sft", method="sft", name="free", spec={}, queued=1)
    failed: list[int] = []

    def ready() -> list[int]:
        return [r.id for r in ready_runs(store, lambda run, why: failed.append(run.id))]

    assert ready() == [free.id]
    assert (store.run(after.id).blocked_on, store.run(step.id).blocked_on) == (parent.id, parent.id)
    assert [r.id for r in store.iter_queued(unblocked=True)] == [free.id], "the next claim reads neither"
    assert [r.id for r in store.iter_queued()] == [after.id, step.id, free.id], "the queue still lists them"

    checkpoint = tmp_path / "checkpoint-10"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "tokenizer_config.json").write_text("{}")
    store.add_checkpoint(parent.id, 10, str(checkpoint))  # unblocks both; the --after one blocks again
    assert ready() == [step.id, free.id]
    assert store.run(after.id).blocked_on == parent.id and store.run(step.id).blocked_on is None
    assert not store.block(step.id, parent.id, 10), "never blocked on a checkpoint that exists"

    store.finish_run(parent.id, Status.DONE, exit_code=0)
    assert store.run(after.id).blocked_on is None
    assert ready() == [after.id, step.id, free.id] and not failed
    assert not store.block(after.id, parent.id), "never blocked on a run that has finished"


def test_queue_add_refuses_bad_input_and_writes_nothing(healer_home: Path) -> None:
    for args, needle in [
        (["presets/tiny-sft.toml", "--set", "train.lr=abc"], "train.lr"),
        (["presets/tiny-sft.toml", "--from", "7@last"], "no run with id 7"),
        (["presets/tiny-sft.toml", "--after", "nope"], "nope"),
        (["presets/tiny-sft.toml", "--gpus", "-1"], "--gpus"),
        (["nope.toml"], "not found"),
    ]:
        result = healer("queue", "add", *args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert json.loads(healer("queue", "ls", "--json", check=True).stdout) == []


def test_queue_commands_on_waiting_runs(healer_home: Path) -> None:
    first = json.loads(healer("queue", "add", *sft(5, 5), "--json", check=True).stdout)
    second = json.loads(healer("queue", "add", *sft(5, 5), "--after", str(first["id"]), "--priority", "3",
                               "--json", check=True).stdout)  # fmt: skip
    assert (second["after_run"], second["priority"], second["waiting_for"]) == (
        first["id"], 3, f"run {first['id']} to finish (--after)")  # fmt: skip
    assert "wait for run" in healer("queue", "rm", str(first["id"])).stderr, "a run others wait for stays"
    healer("queue", "pause", check=True)
    assert "paused" in healer("queue", "ls").stderr
    healer("queue", "resume", check=True)
    healer("queue", "cancel", str(second["id"]), check=True)
    healer("queue", "rm", str(first["id"]), check=True)
    rows = json.loads(healer("queue", "ls", "--json", check=True).stdout)
    assert [(r["id"], r["status"]) for r in rows] == [(second["id"], "cancelled")]
    assert "already cancelled" in healer("queue", "cancel", str(second["id"])).stderr


# -- a real worker ----------------------------------------------------------------------------------


@pytest.fixture
def worker(healer_home: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `healer worker` in the background; at teardown stop it and kill every run it left running."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen([sys.executable, "-m", "healer", "worker", *args], cwd=REPO, env=dict(os.environ),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
    db = paths.db_path()
    if db.exists():
        with Store(db) as store:
            for run in store.runs(status=[Status.RUNNING]):
                if run.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(run.pid, signal.SIGKILL)


def wait_until(condition: Callable[[], object], timeout: float = 240, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_worker_runs_by_priority_and_dependency(worker: Callable[..., subprocess.Popen[str]]) -> None:
    a = json.loads(healer("queue", "add", *sft(10, 5), "--name", "a", "--json", check=True).stdout)["id"]
    b = json.loads(healer("queue", "add", "presets/tiny-grpo.toml", *TINY, "--set", "train.max_steps=2",
                          "--set", "train.save_steps=2", "--set", "rl.num_generations=4", "--from", f"{a}@peak-ood",
                          "--priority", "9", "--name", "b", "--json", check=True).stdout)["id"]  # fmt: skip
    c = json.loads(healer("queue", "add", *sft(2, 2), "--priority", "5", "--name", "c", "--json",
                          check=True).stdout)["id"]  # fmt: skip
    d = json.loads(healer("queue", "add", *sft(2, 2), "--after", str(c), "--priority", "1", "--name", "d", "--json",
                          check=True).stdout)["id"]  # fmt: skip
    process = worker("--exit-when-idle")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    started = [line.split("started run ")[1] for line in output.splitlines() if "started run" in line]
    starts = [int(s.split()[0]) for s in started if not s.split()[1].startswith(("(eval", "(spectra"))]
    assert starts == [c, d, a, b], output  # c (prio 5); then d (prio 1, after c) before a (prio 0); b waits for a
    assert "more checkpoint jobs" in output, "a process evaluates several checkpoints in turn"

    rows = {r["id"]: r for r in json.loads(healer("queue", "ls", "--json", check=True).stdout)}
    assert all(rows[i]["status"] == "done" for i in (a, b, c, d)), rows
    detail = json.loads(healer("runs", "show", str(a), "--json", check=True).stdout)
    assert (rows[b]["parent_run"], rows[b]["parent_step"]) == (a, detail["peaks"]["peak-ood"]["step"])
    assert rows[b]["start_ref"] == f"{a}@peak-ood" and rows[b]["attempts"] == 1

    # every checkpoint, and the model each run started from, was evaluated by a job, never in the training process
    with Store(paths.db_path()) as store:
        for run_id in (a, b, c, d):
            steps = {0, *(ck.step for ck in store.checkpoints(run_id))}
            jobs = [r for r in rows.values() if r["kind"] == "eval" and r["parent_run"] == run_id]
            assert sorted(j["parent_step"] for j in jobs) == sorted(steps) and all(j["status"] == "done" for j in jobs)
            assert {(e.step, e.split) for e in store.evals(run_id)} == {(s, sp) for s in steps for sp in ("id", "ood")}
            log = Path(store.run(run_id).log_path).read_text()
            assert "queued its evaluation as job" in log and "healer: eval step" not in log
        first_eval = min(j["id"] for j in rows.values() if j["kind"] == "eval" and j["parent_run"] == a)
        b_started = store.run(b).started_at
        assert all(store.run(j["id"]).finished_at <= b_started for j in rows.values() if j["parent_run"] == a
                   and j["kind"] == "eval"), "the peak was picked after every evaluation of run a"  # fmt: skip
        assert first_eval > a


@pytest.mark.slow
def test_cancel_stops_a_running_run(worker: Callable[..., subprocess.Popen[str]], healer_home: Path) -> None:
    run = json.loads(healer("queue", "add", *sft(100000, 100000), "--set", "eval.every_checkpoint=false",
                            "--json", check=True).stdout)["id"]  # fmt: skip
    worker()
    with Store(paths.db_path()) as store:
        wait_until(lambda: store.metrics(run, "loss"), what="the run to train")
    result = healer("queue", "cancel", str(run), "--grace", "20", check=True)
    assert "cancelled" in result.stdout
    with Store(paths.db_path()) as store:
        final = store.run(run)
    assert final.status == Status.CANCELLED
    assert not Path(f"/proc/{final.pid}").exists() or b"zombie" in Path(f"/proc/{final.pid}/status").read_bytes()


@pytest.mark.slow
def test_kill_9_then_retry_resumes_from_the_checkpoint(worker: Callable[..., subprocess.Popen[str]]) -> None:
    run = json.loads(healer("queue", "add", *sft(400, 10), "--set", "eval.every_checkpoint=false", "--json",
                            check=True).stdout)["id"]  # fmt: skip
    process = worker()
    with Store(paths.db_path()) as store:
        wait_until(lambda: any(c.step >= 20 for c in store.checkpoints(run)), what="a checkpoint at step 20")
        pid = store.run(run).pid
        os.kill(pid, signal.SIGKILL)
        failed = wait_until(lambda: store.run(run).status == Status.FAILED and store.run(run), what="the reap")
        assert "SIGKILL" in failed.reason or "gone" in failed.reason
        resumed_from = max(c.step for c in store.checkpoints(run))
        steps_before = {m.step for m in store.metrics(run, "loss")}

    retried_at = time.time()
    healer("queue", "retry", str(run), check=True)
    with Store(paths.db_path()) as store:
        try:
            wait_until(lambda: store.run(run).attempts == 2 and store.last_step(run) > max(steps_before),
                       timeout=600, what="the second attempt to train")  # fmt: skip
        except AssertionError as timeout:
            process.terminate()
            state = store.run(run)
            raise AssertionError(
                f"{timeout}: status {state.status} ({state.reason}), attempts {state.attempts}, last step "
                f"{store.last_step(run)} of {max(steps_before)}; jobs: "
                f"{[(j.id, j.kind, j.parent_step, j.status) for j in store.checkpoint_jobs(run)]}\n"
                f"run log:\n{Path(state.log_path or '').read_text()[-3000:]}\n"
                f"worker:\n{process.communicate()[0][-3000:]}"
            ) from None
        healer("queue", "cancel", str(run), "--grace", "20", check=True)
        losses = store.metrics(run, "loss")
        log = Path(store.run(run).log_path).read_text()
    steps = [m.step for m in losses]
    assert len(steps) == len(set(steps)), "no duplicate metric rows after the resume"
    assert "resuming from" in log and f"checkpoint-{resumed_from}" in log
    again = [m.step for m in losses if m.wall_time > retried_at]
    assert min(again) == resumed_from + 1, "the second attempt continued after the checkpoint, not from step 1"


def test_heal_queue_queues_one_rl_run_per_start(healer_home: Path) -> None:
    store = Store(paths.db_path())
    run = store.create_run(kind="sft", method="sft", name="sft", spec={}, model_path="/base")
    for step in (10, 20):
        checkpoint = healer_home / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        (checkpoint / "config.json").write_text("{}")
        (checkpoint / "tokenizer_config.json").write_text("{}")
        store.add_checkpoint(run.id, step, str(checkpoint))
    store.finish_run(run.id, Status.DONE, exit_code=0)
    rows = json.loads(healer("heal", str(run.id), "--preset", "presets/tiny-grpo.toml", "--steps", "10,20", "--queue",
                             "--priority", "4", "--json", check=True).stdout)  # fmt: skip
    assert [(r["start_ref"], r["parent_run"], r["priority"], r["status"]) for r in rows] == [
        (f"{run.id}@10", run.id, 4, "queued"), (f"{run.id}@20", run.id, 4, "queued")]  # fmt: skip
    assert [r["name"] for r in rows] == ["tiny-grpo-from-10", "tiny-grpo-from-20"]
    assert all(r["waiting_for"] is None and r["method"] == "grpo" for r in rows), "their checkpoints exist already"
