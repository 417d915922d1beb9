"""Real runs through the real path: `healer run` starts a subprocess that trains the tiny model with TRL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from safetensors.torch import load_file

from healer import paths
from healer.runner import CANCEL_GRACE_S
from healer.store import FINISHED, Run, Store
from tests.conftest import REPO, healer, live_processes, process_gone, wait_until

pytestmark = pytest.mark.slow
EndlessRun = Callable[..., tuple[subprocess.Popen[str], int, int]]
GRACE_WAIT_S = CANCEL_GRACE_S + 150  # the run's grace period, and slack for a loaded 2-core machine

SHORT = [
    "--set",
    "train.max_steps=30",
    "--set",
    "train.save_steps=10",
    "--set",
    "train.logging_steps=2",
    "--set",
    "task.n_train=600",
    "--set",
    "train.batch_size=16",
    "--set",
    "task.eval_n=40",
]
ENDLESS = [
    "--set",
    "train.max_steps=100000",
    "--set",
    "train.save_steps=100000",
    "--set",
    "train.logging_steps=1",
    "--set",
    "task.n_train=600",
    "--set",
    "eval.every_checkpoint=false",
]


def test_sft_run_trains_streams_metrics_and_registers_checkpoints(healer_home: Path) -> None:
    result = healer("run", "presets/tiny-sft.toml", *SHORT, "--json", check=True)
    detail = json.loads(result.stdout)
    assert (detail["status"], detail["exit_code"], detail["kind"]) == ("done", 0, "sft")
    assert detail["model_path"] == str(healer_home / "models" / "tiny")

    steps = [c["step"] for c in detail["checkpoints"]]
    assert steps == [10, 20, 30]
    for checkpoint in detail["checkpoints"]:
        assert (Path(checkpoint["path"]) / "model.safetensors").exists()

    losses = json.loads(healer("metrics", str(detail["id"]), "--name", "loss", "--json", check=True).stdout)
    assert [r["step"] for r in losses][:2] == [1, 2] and losses[-1]["step"] == 30
    assert losses[-1]["value"] < 0.7 * losses[0]["value"], "the loss should fall clearly in 30 steps"
    names = {r["name"] for r in json.loads(healer("metrics", str(detail["id"]), "--json").stdout)}
    assert {"loss", "learning_rate", "grad_norm", "train_runtime"} <= names

    base = load_file(healer_home / "models" / "tiny" / "model.safetensors")
    trained = load_file(Path(detail["checkpoints"][-1]["path"]) / "model.safetensors")
    moved = [name for name in base if not (base[name] == trained[name]).all()]
    assert len(moved) == len(base), f"parameters that did not move: {set(base) - set(moved)}"

    log = Path(detail["log_path"]).read_text()
    assert "'loss'" in log and "train_runtime" in log and f"run {detail['id']} done" in log
    assert detail["spec"]["train"]["max_steps"] == 30 and detail["healer_version"]

    listed = json.loads(healer("runs", "ls", "--json", check=True).stdout)
    assert [(r["id"], r["status"]) for r in listed] == [(detail["id"], "done")]

    # every checkpoint, and the start, was evaluated on ID and OOD during training
    evals = {(e["step"], e["split"]): e for e in detail["evals"]}
    assert set(evals) == {(step, split) for step in (0, 10, 20, 30) for split in ("id", "ood")}
    for e in evals.values():
        assert e["n"] == 40 and 0.0 <= e["ci_low"] <= e["accuracy"] <= e["ci_high"] <= 1.0
        assert e["loss"] is not None and e["protocol"] == "single"
    assert evals[(30, "id")]["loss"] < evals[(0, "id")]["loss"]
    assert {"start", "peak-ood", "best-id", "last", "loss-pick"} <= set(detail["peaks"])
    assert detail["peaks"]["last"]["step"] == 30
    samples = json.loads(healer("eval", "samples", f"{detail['id']}@30", "--split", "ood", "--json").stdout)
    assert len(samples) == 20 and all(s["meta"]["rule"] == "ood" for s in samples)

    # a second run starts from a checkpoint of the first: lineage recorded, weights read from that checkpoint
    child_args = ["--set", "train.max_steps=4", "--set", "train.save_steps=4", "--set", "eval.every_checkpoint=false"]
    child = json.loads(healer("run", "tiny-sft", "--from", f"{detail['id']}@20", *child_args, "--json").stdout)
    assert (child["status"], child["parent_run"], child["parent_step"]) == ("done", detail["id"], 20)
    assert child["model_path"] == detail["checkpoints"][1]["path"]
    assert child["lineage"] == [{"id": detail["id"], "name": "tiny-sft", "kind": "sft", "step": 20}]
    missing = healer("run", "tiny-sft", "--from", f"{detail['id']}@25")
    assert missing.returncode == 2 and "no checkpoint at step 25" in missing.stderr


@pytest.fixture
def endless_run() -> Iterator[EndlessRun]:
    """Starts `healer run` (or `command` before it, such as `timeout`) in the background, waits until its run logs a
    loss; at teardown, whatever happened, no process of it is left running."""
    started: list[subprocess.Popen[str]] = []

    def start(*command: str, wait: bool = True) -> tuple[subprocess.Popen[str], int, int]:
        parent = subprocess.Popen(
            [*command, sys.executable, "-m", "healer", "run", "tiny-sft", *ENDLESS, "--quiet"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        started.append(parent)
        return (parent, *_wait_until_logging(parent)) if wait else (parent, 0, 0)

    yield start
    for parent in started:
        parent.kill()
        parent.communicate()
    for pid in _run_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_until_logging(parent: subprocess.Popen[str]) -> tuple[int, int]:
    """The run id and the training process's pid, once the run has logged a loss."""

    def logging() -> tuple[int, int] | None:
        assert parent.poll() is None, parent.communicate()
        if not paths.db_path().exists():
            return None
        with Store(paths.db_path()) as store:
            runs = store.runs()
            if runs and runs[0].pid and store.metrics(runs[0].id, "loss"):
                return runs[0].id, runs[0].pid
        return None

    return wait_until(logging, "the run to log its first loss", timeout=240, poll=0.5)


def _run_processes() -> list[int]:
    """Pids of training processes (`python -m healer.train`) that use this test's database."""
    return live_processes(b"healer.train", f"HEALER_DB={paths.db_path()}")


def _finished(run_id: int) -> Run | None:
    with Store(paths.db_path()) as store:
        run = store.run(run_id)
    return run if run.status in FINISHED else None


def test_kill_9_of_the_training_process_is_reaped_as_failed(endless_run: EndlessRun) -> None:
    parent, run_id, pid = endless_run()
    os.kill(pid, signal.SIGKILL)
    parent.communicate(timeout=GRACE_WAIT_S)
    assert parent.returncode == 1
    with Store(paths.db_path()) as store:
        run = store.run(run_id)
        assert run.status == "failed" and run.exit_code == -9
        assert "killed by signal 9 (SIGKILL)" in (run.reason or "")
        assert store.metrics(run_id, "loss")  # what was logged before the kill is kept


def test_kill_9_of_everything_reads_as_dead_and_is_failed_by_the_next_write(endless_run: EndlessRun) -> None:
    parent, run_id, pid = endless_run()
    os.kill(pid, signal.SIGSTOP)  # frozen, so it cannot see its parent go and cancel itself: both die unheard
    parent.kill()  # the foreground `healer run` dies first, so nobody is left to reap the run
    parent.wait()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: process_gone(pid), f"the killed training process {pid} to be gone")
    check = sqlite3.connect(paths.db_path()).execute("PRAGMA integrity_check").fetchone()[0]
    assert check == "ok"
    before = paths.db_path().read_bytes()
    listed = {r["id"]: r for r in json.loads(healer("runs", "ls", "--json", check=True).stdout)}
    assert (listed[run_id]["status"], listed[run_id]["alive"]) == ("running", False)  # a read says so, writes nothing
    assert "running (dead)" in healer("runs", "ls", check=True).stdout
    assert paths.db_path().read_bytes() == before
    cancelled = healer("queue", "cancel", str(run_id), check=True)  # a command that changes state records it
    assert f"run {run_id} had already ended: failed" in cancelled.stdout
    shown = json.loads(healer("runs", "show", str(run_id), "--json", check=True).stdout)
    assert shown["status"] == "failed" and f"process {pid} is gone" in shown["reason"]


@pytest.mark.parametrize(
    ("signum", "reason"),
    [(signal.SIGINT, "received SIGINT (Ctrl-C)"), (signal.SIGTERM, "received SIGTERM"),
     (signal.SIGHUP, "received SIGHUP (its terminal closed)")],
)  # fmt: skip
def test_a_signal_to_healer_run_cancels_its_run(endless_run: EndlessRun, signum: int, reason: str) -> None:
    """Ctrl-C, `timeout`/a scheduler's SIGTERM and a closing terminal's SIGHUP reach the training process."""
    parent, run_id, pid = endless_run()
    parent.send_signal(signum)
    _, stderr = parent.communicate(timeout=GRACE_WAIT_S)
    assert parent.returncode == 130, stderr
    with Store(paths.db_path()) as store:
        run = store.run(run_id)
    assert (run.status, run.exit_code, run.reason) == ("cancelled", 130, reason)
    wait_until(lambda: process_gone(pid), f"the training process {pid} to exit after {reason}")
    assert _run_processes() == []


def test_timeout_term_leaves_no_process_of_the_run(endless_run: EndlessRun) -> None:
    """`timeout -s TERM 20 healer run ...`, as a user wrote it: whenever the signal lands (during start-up, or while
    training on a fast machine), the run ends cancelled and nothing of it trains on."""
    parent, _, _ = endless_run("timeout", "-s", "TERM", "20", wait=False)
    _, stderr = parent.communicate(timeout=20 + GRACE_WAIT_S)
    assert parent.returncode == 124, stderr  # timeout's code: it had to stop the command
    with Store(paths.db_path()) as store:
        runs = store.runs()
    assert [(r.status, r.kind) for r in runs] == [("cancelled", "sft")], stderr
    assert "SIGTERM" in (runs[0].reason or ""), runs[0].reason
    assert _run_processes() == []


def test_the_same_signal_twice_at_once_is_one_request(endless_run: EndlessRun) -> None:
    """GNU timeout sends SIGTERM to the command and then to its process group: the copy that lands while the run is
    stopping must not count as "a second signal, kill now". One that comes later does: SIGKILL at once."""
    parent, run_id, pid = endless_run()
    os.kill(pid, signal.SIGSTOP)  # held, so that it cannot end before both signals have reached its parent
    parent.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    parent.send_signal(signal.SIGTERM)
    time.sleep(2)
    assert not process_gone(pid), "the copy of the first SIGTERM killed the run"
    os.kill(pid, signal.SIGCONT)
    parent.communicate(timeout=GRACE_WAIT_S)
    with Store(paths.db_path()) as store:
        run = store.run(run_id)
    assert (parent.returncode, run.status, run.reason) == (130, "cancelled", "received SIGTERM")


def test_a_second_signal_later_kills_the_run_at_once(endless_run: EndlessRun) -> None:
    parent, run_id, pid = endless_run()
    os.kill(pid, signal.SIGSTOP)
    parent.send_signal(signal.SIGTERM)
    time.sleep(2)
    parent.send_signal(signal.SIGTERM)
    parent.communicate(timeout=60)
    wait_until(lambda: process_gone(pid), f"the training process {pid} to be killed by the second SIGTERM", timeout=10)
    with Store(paths.db_path()) as store:
        run = store.run(run_id)
    assert run.status == "cancelled", run
    assert (run.reason or "").startswith("received SIGTERM, then killed by signal 9 (SIGKILL)"), run.reason


def test_kill_9_of_healer_run_cancels_its_run_instead_of_orphaning_it(endless_run: EndlessRun) -> None:
    parent, run_id, pid = endless_run()
    parent.kill()
    parent.wait()
    run = wait_until(lambda: _finished(run_id), f"run {run_id} to notice its `healer run` is gone", timeout=120)
    assert run.status == "cancelled" and f"(pid {parent.pid}) is gone" in (run.reason or ""), run.reason
    wait_until(lambda: process_gone(pid), f"the orphaned training process {pid} to exit")


def test_detach_hands_the_run_to_the_background_and_queue_cancel_stops_it(healer_home: Path) -> None:
    started = healer("run", "tiny-sft", *ENDLESS, "--detach", "--json", check=True)
    run_id = json.loads(started.stdout)["id"]
    assert f"healer queue cancel {run_id}" in started.stderr and "background" in started.stderr
    with Store(paths.db_path()) as store:
        running = wait_until(lambda: store.run(run_id).pid, f"detached run {run_id} to start", timeout=240)
    assert not process_gone(running), "the run must outlive `healer run --detach`"
    cancelled = healer("queue", "cancel", str(run_id), "--grace", str(GRACE_WAIT_S), check=True)
    assert f"run {run_id} cancelled" in cancelled.stdout
    wait_until(lambda: process_gone(running), f"detached run {run_id} to exit after `queue cancel`")
    assert _run_processes() == []


def test_a_run_that_crashes_is_failed_with_its_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    result = healer("run", "tiny-sft", "--set", f"model.path={broken}", "--set", "model.build=''", "--quiet")
    assert result.returncode == 1
    assert "failed" in result.stdout
    with Store(paths.db_path()) as store:
        run = store.runs()[0]
    assert run.status == "failed" and run.exit_code == 1 and run.reason
    assert "Traceback" in Path(run.log_path or "").read_text()


def test_lora_sft_run_trains_adapters_only(healer_home: Path) -> None:
    args = [
        "--set",
        "task.eval_n=16",
        "--set",
        "lora.enabled=true",
        "--set",
        "lora.r=4",
        "--set",
        "train.max_steps=12",
        "--set",
        "train.save_steps=12",
        "--set",
        "task.n_train=300",
    ]
    detail = json.loads(healer("run", "tiny-sft", *args, "--quiet", "--json", check=True).stdout)
    checkpoint = Path(detail["checkpoints"][-1]["path"])
    assert not (checkpoint / "model.safetensors").exists()
    adapters = load_file(checkpoint / "adapter_model.safetensors")
    lora_b = [name for name in adapters if "lora_B" in name]
    assert lora_b and all(adapters[name].abs().sum() > 0 for name in lora_b), "LoRA B starts at zero and must move"
    assert json.loads((checkpoint / "adapter_config.json").read_text())["r"] == 4
    assert {(e["step"], e["split"]) for e in detail["evals"]} >= {(12, "id"), (12, "ood")}  # the adapter generates


def test_a_cancel_that_a_library_wraps_is_still_a_cancel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM during a lazy import surfaced as RuntimeError (trl's import machinery wraps it): still cancelled."""
    from healer.train import child

    with Store(tmp_path / "healer.db") as store:
        run = store.create_run(kind="sft", method="sft", name="x", spec={})

        def wrapped(*args: object) -> None:
            monkeypatch.setattr(child, "_received", ["received SIGTERM"])  # what the signal handler records
            raise RuntimeError("Failed to import trl.trainer.sft_trainer")

        monkeypatch.setattr(child, "execute", wrapped)
        monkeypatch.setattr(child, "build_spec", lambda *a, **k: None)
        with pytest.raises(child.RunCancelled):
            child.execute_one(store, run.id)
        cancelled = store.run(run.id)
        assert (cancelled.status, cancelled.exit_code, cancelled.reason) == ("cancelled", 130, "received SIGTERM")

        other = store.create_run(kind="sft", method="sft", name="y", spec={})
        monkeypatch.setattr(child, "_received", [])
        monkeypatch.setattr(child, "execute", lambda *a: (_ for _ in ()).throw(RuntimeError("a real bug")))
        assert child.execute_one(store, other.id) == 1  # without a signal, the same exception is a failure
        assert store.run(other.id).status == "failed"
