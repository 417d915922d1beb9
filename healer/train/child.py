"""The body of a run's subprocess: mark it running, heartbeat, train, record how it ended."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import traceback
from types import FrameType

from healer import paths
from healer.errors import HealerError
from healer.presets import RunSpec, build_spec
from healer.runner import FOREGROUND_PARENT
from healer.store import Run, Status, Store, pid_alive

HEARTBEAT_S = 10.0
JOURNAL_ENV, SNAPSHOT_ENV = "HEALER_JOURNAL", "HEALER_SNAPSHOT"  # set for a run a Slurm job executes on a node


class RunCancelled(BaseException):
    """Raised in the main thread by SIGTERM or SIGINT; a BaseException so library code cannot swallow it."""


def main(run_ids: list[int]) -> int:
    """Execute runs in turn; a batch of evaluation jobs goes on past one that fails, and a cancel (SIGTERM) ends
    the one in progress and puts the rest back in the queue."""
    store = open_store()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        role = "writes to the store" if is_main_process() else "reads the store, writes nothing"
        print(f"healer: rank {os.environ.get('RANK')} of {world} on {socket.gethostname()}: {role}", flush=True)
    _install_signal_handlers()
    _watch_foreground_parent()
    code = 0
    for index, run_id in enumerate(run_ids):
        try:
            code = max(code, execute_one(store, run_id))
        except RunCancelled:
            for rest in run_ids[index + 1 :]:
                if store.run(rest).started_at is None:
                    store.requeue(rest)
            return 130
    return code


def open_store() -> Store:
    """The database; on a cluster node (a Slurm job), the snapshot and the journal instead (healer.store.journal);
    on ranks other than the main one of a multi-process run, a store whose writes go nowhere."""
    if os.environ.get(JOURNAL_ENV):
        from healer.store.journal import JournalStore

        store: Store = JournalStore(os.environ[SNAPSHOT_ENV], os.environ[JOURNAL_ENV])
    else:
        store = Store(paths.db_path())
    if not is_main_process():
        from healer.store.follower import FollowerStore

        return FollowerStore(store)
    return store


def is_main_process() -> bool:
    """Rank 0 of a run launched by accelerate (torch.distributed's RANK), or a single-process run: the one
    process that writes metrics, registers checkpoints, evaluates and records how the run ended."""
    return os.environ.get("RANK", "0") == "0"


def execute_one(store: Store, run_id: int) -> int:
    """Mark the run running, heartbeat, execute it, record how it ended; its exit code."""
    run = store.run(run_id)
    # a run of several processes is stopped through its launcher's process group (accelerate launch leads it)
    pid = os.getpgrp() if "LOCAL_RANK" in os.environ else os.getpid()
    if not store.mark_running(run_id, pid=pid, host=socket.gethostname()):
        print(f"healer: run {run_id} was {run.status} before it began; skipped", flush=True)
        return 0
    stop_heartbeat = _start_heartbeat(store, run_id)
    try:
        execute(store.run(run_id), build_spec(run.spec_dict, source=f"run {run_id}"), store)
    except BaseException as exc:
        if isinstance(exc, RunCancelled) or _received:  # a library may wrap our cancel (an import failing under it)
            reason = str(exc) if isinstance(exc, RunCancelled) else _received[0]
            if not isinstance(exc, RunCancelled):
                traceback.print_exc()
            store.finish_run(run_id, Status.CANCELLED, exit_code=130, reason=reason)
            print(f"healer: run {run_id} cancelled ({reason})", flush=True)
            raise RunCancelled(reason) from None
        if isinstance(exc, HealerError):  # a user-facing fault (a checkpoint gone or unreadable, ...): one line
            print(f"healer: error: {exc}", flush=True)
            store.finish_run(run_id, Status.FAILED, exit_code=1, reason=str(exc)[:2000])
            return 1
        traceback.print_exc()
        store.finish_run(run_id, Status.FAILED, exit_code=1, reason=f"{type(exc).__name__}: {exc}"[:2000])
        return 1
    finally:
        stop_heartbeat.set()
    store.finish_run(run_id, Status.DONE, exit_code=0)
    if is_main_process():
        print(f"healer: run {run_id} done", flush=True)
    return 0


def execute(run: Run, spec: RunSpec, store: Store) -> None:
    """Dispatch on the method; each method's module has one `run(run, spec, store)`."""
    if run.kind == "eval" and run.is_checkpoint_job:
        from healer.train.checkpoints import run_eval_job

        run_eval_job(run, store)
    elif run.kind == "spectra":
        from healer.spectra import run_spectra_job

        run_spectra_job(run, store)
    elif spec.method == "sft":
        from healer.train import sft

        sft.run(run, spec, store)
    elif spec.method in ("grpo", "rloo"):
        from healer.train import rl

        rl.run(run, spec, store)
    else:
        raise ValueError(f"method {spec.method!r} is not implemented")


SIGNAL_MEANING = {"SIGINT": " (Ctrl-C)", "SIGHUP": " (its terminal closed)"}
_cancel_reason: list[str] = []  # set by the parent watchdog before it signals the main thread
_received: list[str] = []  # the cancels received, whatever exception they surface as


def _install_signal_handlers() -> None:
    def cancel(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        reason = _cancel_reason[0] if _cancel_reason else f"received {name}{SIGNAL_MEANING.get(name, '')}"
        _received.append(reason)
        raise RunCancelled(reason)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, cancel)
    if "SLURM_JOB_ID" in os.environ:  # submitit's warning before the time limit: its process requeues the job (then
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # Slurm's SIGTERM ends this attempt), this one trains on


def _watch_foreground_parent(poll_s: float = 1.0) -> None:
    """A run of `healer run` (not --detach, not a worker's) ends with its command: if that process is gone (SIGKILL,
    a crash), cancel the run instead of training on as an orphan."""
    parent = os.environ.get(FOREGROUND_PARENT, "")
    if not parent.isdigit():
        return

    launched = "LOCAL_RANK" in os.environ  # a rank of a multi-process run: its parent is the launcher

    def watch() -> None:
        while os.getppid() == int(parent) or (launched and pid_alive(int(parent))):
            time.sleep(poll_s)
        _cancel_reason.append(f"the `healer run` that ran it in the foreground (pid {parent}) is gone")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _start_heartbeat(store: Store, run_id: int) -> threading.Event:
    """A daemon thread with its own connection that stamps the run every HEARTBEAT_S seconds (not for a run on a
    cluster node, which the worker watching its Slurm job stamps, nor on a rank other than the main one)."""
    stop = threading.Event()
    if type(store) is not Store:
        return stop
    db_path = store.path

    def beat() -> None:
        with Store(db_path) as own:
            while not stop.wait(HEARTBEAT_S):
                own.heartbeat(run_id)

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()
    return stop
