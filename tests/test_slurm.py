"""`healer worker --executor slurm` against a real Slurm cluster with accounting (.ci/slurm-up starts one on
localhost): a run, a failure, a cancel and a requeue, each a real job running the real trainer on a node."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from healer import paths
from healer.store import Status, Store
from healer.store.journal import outcome, read_records
from tests.conftest import REPO, healer, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

TINY = ["--set", "task.n_train=300", "--set", "train.batch_size=16", "--set", "task.eval_n=20",
        "--set", "eval.batch_size=20", "--set", "train.logging_steps=1"]  # fmt: skip


def add(steps: int, save: int, *more: str) -> int:
    args = ["queue", "add", "presets/tiny-sft.toml", *TINY, "--set", f"train.max_steps={steps}", "--set",
            f"train.save_steps={save}", *more, "--json"]  # fmt: skip
    return json.loads(healer(*args, check=True).stdout)["id"]


def sacct(job: str) -> tuple[str, str]:
    """(State, ExitCode) of a job, asked of Slurm's accounting directly."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job, "-o", "State,ExitCode"], capture_output=True,
                         text=True, timeout=30).stdout.splitlines()  # fmt: skip
    state, code = out[0].split("|") if out else ("", "")
    return state.split()[0] if state else "", code


def row(run_id: int) -> object:
    with Store(paths.db_path()) as store:
        return store.run(run_id)


@pytest.fixture
def slurm_worker(healer_home: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """`healer worker --executor slurm` in the background; at teardown it stops, and every job it left is scancelled."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen([sys.executable, "-m", "healer", "worker", "--executor", "slurm", *args], cwd=REPO,
                                   env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
    if paths.db_path().exists():
        with Store(paths.db_path()) as store:
            for run in store.runs():
                if run.slurm_job:
                    subprocess.run(["scancel", run.slurm_job], capture_output=True, timeout=30)


def test_an_sft_run_as_a_slurm_job_has_its_metrics_checkpoints_and_evaluations() -> None:
    run_id = add(6, 3)
    worker = healer("worker", "--executor", "slurm", "--exit-when-idle", timeout=400)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    with Store(paths.db_path()) as store:
        run = store.run(run_id)
        assert run.status == Status.DONE and run.exit_code == 0, run.reason
        assert run.executor == "slurm" and run.slurm_job and run.slurm_state == "COMPLETED"
        assert run.node == socket.gethostname().split(".")[0]
        assert [m.step for m in store.metrics(run_id, "loss")] == [1, 2, 3, 4, 5, 6]
        assert [c.step for c in store.checkpoints(run_id)] == [3, 6]
        assert {(e.step, e.split) for e in store.evals(run_id)} == {(s, p) for s in (0, 3, 6) for p in ("id", "ood")}
        assert {s.step for s in store.spectra(run_id)} == {3, 6}
        assert not store.checkpoint_jobs(run_id), "a run on a node measures its checkpoints there, inline"
    assert f"submitted run {run_id}" in worker.stdout and f"slurm job {run.slurm_job} COMPLETED" in worker.stdout
    assert sacct(run.slurm_job) == ("COMPLETED", "0:0")
    assert Path(run.log_path).parent.name == "slurm" and f"healer: run {run_id} done" in Path(run.log_path).read_text()
    listed = json.loads(healer("queue", "ls", "--json", check=True).stdout)
    assert [(r["id"], r["slurm_job"], r["node"]) for r in listed] == [(run_id, run.slurm_job, run.node)]
    assert f"slurm:{run.slurm_job}" in healer("queue", "ls", check=True).stdout
    shown = healer("runs", "show", str(run_id), check=True).stdout
    assert "evaluations" in shown and "checkpoint-6" in shown
    assert f"healer: run {run_id} done" in healer("queue", "logs", str(run_id), check=True).stdout


def test_a_failing_job_brings_back_its_exit_code_and_reason(tmp_path: Path) -> None:
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    run_id = add(6, 3, "--set", f"model.path={empty}", "--set", "model.build=")
    worker = healer("worker", "--executor", "slurm", "--exit-when-idle", timeout=400)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    run = row(run_id)
    assert run.status == Status.FAILED and run.exit_code == 1 and run.slurm_state == "FAILED"
    # the reason is the run's own last words from the node (its journal), which its log shows too
    assert run.reason and run.reason.splitlines()[0] in Path(run.log_path).read_text(), run.reason
    assert "Traceback" in Path(run.log_path).read_text() and "Traceback" not in run.reason
    assert sacct(run.slurm_job) == ("FAILED", "1:0")


def test_cancel_reaches_the_job_through_scancel(slurm_worker: Callable[..., subprocess.Popen[str]]) -> None:
    run_id = add(100000, 100000, "--set", "eval.every_checkpoint=false", "--set", "spectra.every_checkpoint=false")
    slurm_worker()
    with Store(paths.db_path()) as store:
        wait_until(lambda: store.metrics(run_id, "loss"), "the job's metrics to be ingested", timeout=300)
    result = healer("queue", "cancel", str(run_id), check=True)
    job = row(run_id).slurm_job
    assert f"scancel {job}" in result.stdout
    ended = wait_until(lambda: row(run_id).slurm_state == "CANCELLED" and row(run_id), "the worker to see the end")
    assert ended.status == Status.CANCELLED and "scancel" in ended.reason
    assert wait_until(lambda: sacct(job)[0] == "CANCELLED", "sacct to say CANCELLED", timeout=60)

    def left_the_queue() -> bool:  # COMPLETING (CG) for a moment while slurmd reaps its processes
        listed = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, timeout=30).stdout
        return not listed.strip()

    assert wait_until(left_the_queue, "the job to leave the queue", timeout=60)


def test_a_requeued_job_resumes_from_its_last_checkpoint(slurm_worker: Callable[..., subprocess.Popen[str]]) -> None:
    run_id = add(300, 10, "--set", "eval.every_checkpoint=false", "--set", "spectra.every_checkpoint=false")
    process = slurm_worker()
    with Store(paths.db_path()) as store:
        wait_until(lambda: any(c.step >= 20 for c in store.checkpoints(run_id)), "a checkpoint at step 20", 300)
        job = store.run(run_id).slurm_job
        assert job
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)  # what preemption does

        def running_again() -> bool:  # a requeued job waits out a BeginTime delay; a test need not
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True, timeout=30)
            return outcome(store.run(run_id).journal).attempts >= 2

        wait_until(running_again, "the second attempt to begin", timeout=240, poll=1.0)
        try:
            done = wait_until(lambda: store.run(run_id).status in (Status.DONE, Status.FAILED) and store.run(run_id),
                              "the run to end", timeout=400)  # fmt: skip
        except AssertionError:
            process.terminate()
            raise AssertionError(f"worker:\n{process.communicate()[0][-3000:]}") from None
        steps = [m.step for m in store.metrics(run_id, "loss")]
        log = Path(done.log_path).read_text()
    assert done.status == Status.DONE, f"{done.reason}\n{log[-2000:]}"
    assert steps == list(range(1, 301)), "every step once: the second attempt's rewind dropped the lost steps"
    records, _, _ = read_records(Path(done.journal))
    rewinds = [r["after_step"] for r in records if r["op"] == "rewind"]
    resumed = rewinds[-1]
    assert resumed >= 20 and f"resuming from step {resumed}" in log and "attempt 2" in log
    last_rewind = max(i for i, r in enumerate(records) if r["op"] == "rewind")
    after = [r["step"] for r in records[last_rewind:] if r["op"] == "metrics"]
    assert after[0] == resumed + 1, "the second attempt went on after its checkpoint, not from step 1"


def test_a_worker_started_again_watches_the_jobs_the_last_one_left(
    slurm_worker: Callable[..., subprocess.Popen[str]],
) -> None:
    run_id = add(200, 50, "--set", "eval.every_checkpoint=false", "--set", "spectra.every_checkpoint=false")
    first = slurm_worker()
    with Store(paths.db_path()) as store:
        wait_until(lambda: store.metrics(run_id, "loss"), "the job's first metrics", timeout=300)
    first.terminate()
    said = first.communicate(timeout=60)[0]
    assert "1 Slurm jobs keep running" in said
    job = row(run_id).slurm_job
    assert sacct(job)[0] in ("RUNNING", "COMPLETED"), "stopping the worker left the job alone"
    second = healer("worker", "--executor", "slurm", "--exit-when-idle", timeout=400)
    assert f"watching run {run_id}'s Slurm job {job}" in second.stdout, second.stdout
    with Store(paths.db_path()) as store:
        run = store.run(run_id)
        steps = [m.step for m in store.metrics(run_id, "loss")]
    assert run.status == Status.DONE and run.slurm_state == "COMPLETED"
    assert steps == list(range(1, 201)), "what the job wrote while no worker watched was ingested"
