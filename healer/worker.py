"""`healer worker`: take queued runs whose dependencies are met, one subprocess each, on free GPUs.

The database is the only channel: `healer queue ...` writes rows, the worker claims them with one conditional
UPDATE (two workers never take the same run), starts `python -m healer.train RUN_ID` with its own log and
CUDA_VISIBLE_DEVICES, and reaps exit codes. A run records its own end; the worker only fills in for runs that could
not (killed, crashed). Runs keep going if the worker stops, and a restarted worker never starts a claimed run again.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from healer import queue
from healer.errors import HealerError
from healer.runner import launch, reap, reap_dead
from healer.store import Run, Status, Store

POLL_S = 1.0
WORKER_PREFIX = "worker:"  # settings key of each live worker, its value the time it last polled


def detect_gpus() -> list[str]:
    """GPU indices this machine has, from nvidia-smi (no CUDA initialisation in the worker); none on a CPU box."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=20)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip().isdigit()]


def parse_gpus(text: str) -> list[str]:
    """`auto` (every GPU found), `none`, or a list such as `0,1`."""
    if text == "auto":
        return detect_gpus()
    if text in ("none", ""):
        return []
    items = [g.strip() for g in text.split(",")]
    if not all(g.isdigit() for g in items):
        raise HealerError(f"--gpus {text!r}: give auto, none or GPU indices such as 0,1")
    return items


@dataclass
class Child:
    run_id: int
    process: subprocess.Popen[bytes]
    gpus: list[str]


@dataclass
class Worker:
    store: Store
    gpus: list[str]
    max_parallel: int
    exit_when_idle: bool = False
    say: Callable[[str], None] = print
    children: dict[int, Child] = field(default_factory=dict)
    stopping: bool = False

    @property
    def name(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def run(self) -> int:
        """Claim, start and reap until stopped (SIGTERM, Ctrl-C) or, with exit_when_idle, until nothing is left."""
        self._install_signal_handlers()
        where = f"GPUs {','.join(self.gpus)}" if self.gpus else "CPU only"
        self.say(f"worker {self.name}: {where}, at most {self.max_parallel} at once; database {self.store.path}")
        while not self.stopping:
            self.store.set_setting(f"{WORKER_PREFIX}{self.name}", str(time.time()))  # `queue add` looks for one
            self.reap_children()
            started = self.start_ready()
            if self.exit_when_idle and not self.children and not started and not self.store.queued_runs():
                self.say("worker: the queue is empty; exiting")
                return 0
            time.sleep(POLL_S)
        self.store.delete_setting(f"{WORKER_PREFIX}{self.name}")
        if self.children:
            self.say(f"worker: stopping; {len(self.children)} runs keep running and record their own end")
        return 0

    def reap_children(self) -> None:
        for run_id, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            run = reap(self.store, run_id, code)
            self.say(f"worker: run {run_id} {run.status} (exit {code})")
            del self.children[run_id]
        reap_dead(self.store)

    def start_ready(self) -> int:
        """Start as many ready runs as slots and GPUs allow; runs that can never start are failed."""
        if queue.paused(self.store):
            return 0
        started = 0
        for run in self.store.queued_runs():
            if len(self.children) >= self.max_parallel:
                break
            waiting = queue.wait_for(self.store, run)
            if waiting is not None:
                if waiting.fatal:
                    self._fail(run, f"cannot start: {waiting.reason}")
                continue
            wanted = run.gpus if run.gpus is not None else (1 if self.gpus else 0)
            if wanted > len(self.gpus):
                self._fail(run, f"asks for {wanted} GPUs; this worker has {len(self.gpus)} ({','.join(self.gpus)})")
                continue
            free = [g for g in self.gpus if g not in {x for c in self.children.values() for x in c.gpus}]
            if wanted > len(free):
                continue  # a later run may need fewer
            if self._start(run, free[:wanted]):
                started += 1
        return started

    def _start(self, run: Run, gpus: list[str]) -> bool:
        try:
            columns = queue.resolved_start(self.store, run)
        except HealerError as exc:
            self._fail(run, f"cannot start: {exc}")
            return False
        visible = ",".join(gpus)
        if not self.store.claim(run.id, worker=self.name, host=socket.gethostname(), assigned_gpus=visible,
                                **columns):  # fmt: skip
            return False  # another worker took it first
        claimed = self.store.run(run.id)
        env = {"CUDA_VISIBLE_DEVICES": visible}
        process = launch(self.store, claimed, env=env)
        self.store.update_run(run.id, pid=process.pid)
        self.children[run.id] = Child(run.id, process, gpus)
        where = f"GPU {visible}" if gpus else "CPU"
        self.say(f"worker: started run {run.id} ({run.name}) on {where}, pid {process.pid}; log {claimed.log_path}")
        return True

    def _fail(self, run: Run, reason: str) -> None:
        self.store.finish_run(run.id, Status.FAILED, exit_code=None, reason=reason)
        self.say(f"worker: run {run.id} failed: {reason}")

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
