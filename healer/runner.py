"""Create a run from a preset, execute it in its own subprocess with its own log, and reap what it leaves."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from healer import __version__
from healer.errors import HealerError
from healer.presets import Preset, RunSpec, starting_from
from healer.store import FINISHED, Run, Status, Store, pid_alive, process_gone

CANCEL_GRACE_S = 30.0
SAME_SIGNAL_S = 1.0  # a cancelling signal this soon after the first is the same request, not a second one
KIND_OF_METHOD = {"sft": "sft", "grpo": "rl", "rloo": "rl"}


def create_run(store: Store, preset: Preset, *, parent_run: int | None = None, parent_step: int | None = None,
               **queue_columns: Any) -> Run:  # fmt: skip
    """Insert a run for a resolved preset, with its own folder and log path beside the database.

    `queue_columns` (queued=1, priority, after_run, ...) put it in the queue in the same transaction that gives it
    its folder, so no worker ever sees it half made."""
    commit = git_commit()  # before the transaction: no subprocess while holding the write lock
    with store.transaction():  # a run appears whole or not at all (a lock or a full disk mid-way leaves nothing)
        return _create_run(store, preset, parent_run, parent_step, commit, queue_columns)


def _create_run(store: Store, preset: Preset, parent_run: int | None, parent_step: int | None, commit: str | None,
                queue_columns: dict[str, Any]) -> Run:  # fmt: skip
    spec = preset.spec
    run = store.create_run(
        kind=KIND_OF_METHOD[spec.method],
        method=spec.method,
        name=spec.name,
        spec=spec.to_dict(),
        preset_path=str(preset.path) if preset.path else None,
        preset_text=preset.text,
        model_path=spec.model.path,
        parent_run=parent_run,
        parent_step=parent_step,
        total_steps=spec.train.max_steps,
        healer_version=__version__,
        git_commit=commit,
        **queue_columns,
    )
    out_dir = store.path.parent / "runs" / f"{run.id:05d}-{_slug(spec.name)}"
    store.set_location(run.id, out_dir=str(out_dir), log_path=str(out_dir / "run.log"))
    return store.run(run.id)


def holder_run(store: Store, path: str, spec: RunSpec) -> Run:
    """The run that holds the evaluations and spectra of a directory no healer run produced (one per directory)."""
    for run in store.runs():
        if run.kind == "eval" and run.parent_run is None and run.model_path == path:
            return run
    spec = dataclasses.replace(starting_from(spec, path), name=Path(path).name)
    run = store.create_run(kind="eval", method="eval", name=spec.name, spec=spec.to_dict(), model_path=path)
    store.finish_run(run.id, Status.DONE, exit_code=0)
    return store.run(run.id)


def launch(
    store: Store, run: Run, env: dict[str, str] | None = None, then: Sequence[int] = ()
) -> subprocess.Popen[bytes]:
    """Start `python -m healer.train RUN_ID` in a new session, stdout and stderr into the run's log file; `then`:
    further runs (evaluation jobs) the same process executes after it, logging into the same file."""
    assert run.out_dir and run.log_path
    Path(run.out_dir).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {}), "HEALER_DB": str(store.path), "PYTHONUNBUFFERED": "1"}
    command = train_command(run, then, gpus=visible_gpus(env))
    with open(run.log_path, "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def num_processes(run: Run) -> int:
    """How many training processes a run takes: train.num_processes, or the GPUs asked for at `queue add --gpus`
    when the preset leaves it at 1; checkpoint jobs take one."""
    if run.is_checkpoint_job or run.kind not in ("sft", "rl"):
        return 1
    declared = int(run.spec_dict.get("train", {}).get("num_processes", 1))
    return declared if declared > 1 else max(1, run.gpus or 1)


def visible_gpus(env: dict[str, str]) -> int | None:
    """The GPUs CUDA_VISIBLE_DEVICES gives a run ('' = none), None when it is not set."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    return len([g for g in visible.split(",") if g.strip() and g.strip() != "-1"])


def train_command(run: Run, then: Sequence[int] = (), gpus: int | None = None) -> list[str]:
    """`python -m healer.train RUN_ID [...]`, or, for a run of several processes, the same module under
    `accelerate launch` (one process per GPU; gloo processes on a machine without GPUs) with the strategy of its
    [distributed] table. The main process (rank 0) is the one that writes to the store."""
    module = ["-m", "healer.train", str(run.id), *map(str, then)]
    processes = num_processes(run)
    if processes == 1:
        return [sys.executable, *module]
    strategy = run.spec_dict.get("distributed", {}).get("strategy", "ddp")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
              "--num_machines", "1", "--main_process_port", str(free_port()), "--dynamo_backend", "no",
              "--mixed_precision", "no"]  # fmt: skip
    if strategy == "ddp" or gpus == 0:  # on CPU (gloo) only data parallelism exists
        launch.append("--multi_gpu")  # with no GPU this is gloo, MULTI_CPU (accelerate's --cpu runs one process)
    elif strategy == "fsdp":
        launch += ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_state_dict_type", "FULL_STATE_DICT",
                   "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_use_orig_params", "true"]  # fmt: skip
    else:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise HealerError(f"run {run.id}: distributed.strategy = {strategy!r} needs DeepSpeed: `pip install "
                              "deepspeed`, or use ddp or fsdp")  # fmt: skip
        launch += ["--use_deepspeed", "--zero_stage", strategy[-1], "--zero3_init_flag", "false"]
        if strategy == "zero3":
            launch += ["--zero3_save_16bit_model", "true"]  # consolidated weights, which spectra and evaluation read
    return [*launch, *module]


def free_port() -> int:
    """A TCP port free on localhost now, for a multi-process run's rendezvous (two runs at once must differ)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


FOREGROUND_PARENT = "HEALER_FOREGROUND_PARENT"  # the pid of the `healer run` whose run this is; the run ends with it
CANCEL_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A cancelling signal (Ctrl-C, SIGTERM, SIGHUP) reached the foreground `healer run`; a KeyboardInterrupt, so
    that the CLI exits 130 quietly wherever it lands and no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_foreground(store: Store, run: Run, echo: TextIO | None = sys.stderr) -> Run:
    """Run to completion, echoing the log. Ctrl-C, SIGTERM and SIGHUP (a closed terminal, `timeout`, a scheduler's
    kill) cancel the run: the same signal goes on to the run's process, which records it as the reason and stops;
    SIGKILL follows after the grace period or a second signal. If this process dies without a word (SIGKILL), the run
    notices its parent is gone and cancels itself: a foreground run never outlives its command."""
    cancelled, received = False, None
    with _signals_raise():  # from before the launch: no moment where a signal could leave the run behind
        process = launch(store, run, env={FOREGROUND_PARENT: str(os.getpid())})
        with open(run.log_path or os.devnull, errors="replace") as log:
            try:
                while process.poll() is None:
                    _echo(log, echo)
                    time.sleep(0.2)
            except Interrupted as interrupt:
                cancelled = True
                _say(echo, f"\ncancelling run {run.id} ({interrupt}) ...\n")
                stop(process, signum=interrupt.signum)
                received = f"received {interrupt}"
            _echo(log, echo)
    return reap(store, run.id, process.returncode, cancelled=cancelled, received=received)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """While inside, the cancelling signals raise Interrupted in the main thread; the old handlers come back after."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in CANCEL_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def stop_process_group(pid: int, grace_s: float = CANCEL_GRACE_S, signum: int = signal.SIGTERM,
                       on_kill: Callable[[], None] | None = None) -> None:  # fmt: skip
    """Stop a run's process group (a run is its own session, so its pid names the group): `signum` (SIGTERM by
    default), then SIGKILL to the group if the run has not ended within the grace period (`on_kill` is called
    first) or another cancelling signal arrives while waiting."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return
    start = time.monotonic()
    while time.monotonic() < start + grace_s:
        try:
            if not pid_alive(pid):
                return
            time.sleep(0.2)
        except KeyboardInterrupt:
            if time.monotonic() - start >= SAME_SIGNAL_S:
                break  # a second request: kill now
            # the same request again: GNU timeout signals the command, then its whole process group
    else:
        if on_kill is not None:
            on_kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop(process: subprocess.Popen[bytes], grace_s: float = CANCEL_GRACE_S, signum: int = signal.SIGTERM) -> None:
    """stop_process_group for a run this process launched, then reap it (its returncode is set after)."""
    if process.poll() is None:  # not reaped yet, so its pid is still its own
        stop_process_group(process.pid, grace_s, signum)
    process.wait()


def reap(store: Store, run_id: int, returncode: int | None, *, cancelled: bool = False,
         received: str | None = None) -> Run:  # fmt: skip
    """Give a run whose process has ended a final status, if the process could not record one itself (`received`:
    the signal that cancelled it, when the process was killed before it could say so)."""
    run = store.run(run_id)
    if run.status not in FINISHED:
        status = Status.CANCELLED if cancelled else Status.FAILED
        reason = f"{describe_exit(returncode)}; {tail_reason(run.log_path)}"
        if received:
            reason = f"{received}, then {reason}"
        store.finish_run(run_id, status, exit_code=returncode, reason=reason)
    return store.run(run_id)


def reap_dead(store: Store) -> list[int]:
    """Mark runs whose process is gone as failed, so that no run shows as running forever. A write: the worker's
    loop and commands that change state call it; read commands only show `alive = false`."""
    host, now, reaped = socket.gethostname(), time.time(), []
    for run in store.runs(status=[Status.RUNNING]):
        why = process_gone(run, host, now)
        if why:
            store.finish_run(run.id, Status.FAILED, exit_code=None, reason=f"{why}; {tail_reason(run.log_path)}")
            reaped.append(run.id)
    return reaped


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "exit status unknown"
    if returncode < 0:
        try:
            return f"killed by signal {-returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def tail_reason(log_path: str | None, lines: int = 3) -> str:
    """The last non-empty lines of a log, joined on one line, for a failure reason."""
    tail = tail_lines(log_path, lines)
    return "last log lines: " + " | ".join(tail) if tail else "the log is empty"


def tail_lines(log_path: str | None, lines: int = 20) -> list[str]:
    if not log_path or not Path(log_path).exists():
        return []
    with open(log_path, errors="replace") as log:
        kept = deque((line.rstrip() for line in log if line.strip()), maxlen=lines)
    return list(kept)


def git_commit() -> str | None:
    """The commit of the healer checkout this code runs from, when it is one."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _say(echo: TextIO | None, text: str) -> None:
    if echo:
        with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) cannot be written to
            echo.write(text)


def _echo(log: TextIO, echo: TextIO | None) -> None:
    chunk = log.read()
    if chunk and echo:
        with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) cannot be written to; the log has it all
            echo.write(chunk)
            echo.flush()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:60] or "run"
