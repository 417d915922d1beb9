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
from typing import TYPE_CHECKING

from healer import queue
from healer.errors import HealerError
from healer.gpus import query as query_gpus
from healer.runner import launch, num_processes, reap, reap_dead
from healer.store import Run, Status, Store

if TYPE_CHECKING:
    from healer.slurm import SlurmExecutor

POLL_S = 1.0
STAMP_S = 10.0  # how often a worker stamps its liveness row
WORKER_PREFIX = "worker:"  # settings key of each live worker, its value the time it last polled
EVAL_POLICIES = ("auto", "share", "wait", "cpu")
BUSY_FRACTION = 0.1  # a GPU none of our runs uses, with more than this share of its memory taken, is someone else's
EVAL_HEADROOM_MIB = 1024  # activations and KV cache of an evaluation, beyond its weights
EVAL_BATCH = 16  # evaluation jobs one process executes in turn, importing torch and transformers once


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


def gpu_memory() -> dict[str, tuple[int, int]]:
    """(used, total) MiB per GPU index from nvidia-smi; empty when it is missing or fails."""
    return {gpu.index: (gpu.memory_used, gpu.memory_total) for gpu in query_gpus()}


def checkpoint_mib(path: str | None) -> int:
    """Size of a checkpoint's weight files in MiB (0 for a hub id or a missing directory)."""
    if not path or not os.path.isdir(path):
        return 0
    total = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
                if f.endswith((".safetensors", ".bin", ".pt")))  # fmt: skip
    return total // 2**20


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
    """One subprocess of the worker: a run, or a batch of evaluation jobs (`run_ids`, executed in turn)."""

    run_ids: list[int]
    process: subprocess.Popen[bytes]
    gpus: list[str]
    side: bool = False  # evaluation jobs started beside the runs (share or cpu policy): they take no slot


@dataclass
class Worker:
    store: Store
    gpus: list[str]
    max_parallel: int
    exit_when_idle: bool = False
    say: Callable[[str], None] = print
    eval_policy: str = "auto"
    max_evals: int = 1
    children: list[Child] = field(default_factory=list)
    stopping: bool = False
    memory: Callable[[], dict[str, tuple[int, int]]] = gpu_memory
    _stamped: float = 0.0
    _memory: dict[str, tuple[int, int]] | None = None  # nvidia-smi's answer, asked at most once per poll
    scope: set[int] | None = None  # only these runs and their evaluation jobs (`healer demo`); None: the whole queue
    tick: Callable[[], None] | None = None  # called on every poll (`healer demo`'s progress lines)
    executor: SlurmExecutor | None = None  # --executor slurm: each run a Slurm job instead of a subprocess
    jobs: list[int] = field(default_factory=list)  # runs whose Slurm jobs this worker watches

    def __post_init__(self) -> None:
        if self.eval_policy not in EVAL_POLICIES:
            raise HealerError(f"--eval-policy {self.eval_policy!r}: use one of {', '.join(EVAL_POLICIES)}")
        if self.max_evals < 1:
            raise HealerError("--max-evals must be at least 1")
        if self.executor is not None:  # Slurm places every job, evaluations included: each is a job in a slot
            self.eval_policy = "wait"
        elif self.eval_policy == "auto":  # a GPU box shares; a CPU box evaluates between runs, not beside them
            self.eval_policy = "share" if self.gpus else "wait"

    @property
    def name(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def run(self) -> int:
        """Claim, start and reap until stopped (SIGTERM, Ctrl-C) or, with exit_when_idle, until nothing is left."""
        self._install_signal_handlers()
        where = f"GPUs {','.join(self.gpus)}" if self.gpus else "CPU only"
        if self.executor is not None:
            where = "Slurm" + "".join(f" {k} {v}" for k, v in (("partition", self.executor.partition),
                                                               ("account", self.executor.account)) if v)  # fmt: skip
            self.attach()
        self.say(f"worker {self.name}: {where}, at most {self.max_parallel} at once, evaluations: "
                 f"{self.eval_policy}; database {self.store.path}")  # fmt: skip
        while not self.stopping:
            if time.time() - self._stamped > STAMP_S:
                self._stamped = time.time()
                self.store.set_setting(f"{WORKER_PREFIX}{self.name}", str(self._stamped))  # `queue add` looks
            self.reap_children()
            started = self.start_ready()
            if self.tick is not None:
                self.tick()
            if self.exit_when_idle and not self.children and not self.jobs and not started and self._nothing_left():
                self.say("worker: the queue is empty; exiting")
                break
            time.sleep(POLL_S)
        self.store.delete_setting(f"{WORKER_PREFIX}{self.name}")
        if self.children:
            self.say(f"worker: stopping; {len(self.children)} processes keep running and record their own end")
        if self.jobs:
            self.say(f"worker: stopping; {len(self.jobs)} Slurm jobs keep running; a worker started again (here or "
                     "on another login node) watches them and ingests what they wrote")  # fmt: skip
        return 0

    def _nothing_left(self) -> bool:
        if self.scope is None:
            return not self.store.has_queued()
        return not any(self.in_scope(r) for r in self.store.queued_runs())

    def in_scope(self, run: Run) -> bool:
        return self.scope is None or run.id in self.scope or (run.is_checkpoint_job and run.parent_run in self.scope)

    def reap_children(self) -> None:
        for child in list(self.children):
            code = child.process.poll()
            if code is None:
                continue
            for index, run_id in enumerate(child.run_ids):
                run = self.store.run(run_id)
                if index and run.status == Status.RUNNING and run.started_at is None:
                    self.store.requeue(run_id)  # a batched evaluation job its process never began
                    continue
                run = reap(self.store, run_id, code)
                self.say(f"worker: run {run_id} {run.status} (exit {code})")
            self.children.remove(child)
        if self.executor is not None:
            self.watch_jobs()
        reap_dead(self.store)

    def attach(self) -> None:
        """Watch the Slurm jobs of running runs no live worker watches (this worker was restarted, or theirs died)."""
        now = time.time()
        stamps = self.store.settings(WORKER_PREFIX)
        for run in self.store.runs(status=[Status.RUNNING]):
            if run.executor != "slurm" or run.id in self.jobs:
                continue
            stamp = stamps.get(f"{WORKER_PREFIX}{run.worker}")
            if run.worker != self.name and stamp is not None and now - float(stamp) < 3 * STAMP_S:
                continue  # another live worker watches it
            self.store.watched_by(run.id, self.name)
            self.jobs.append(run.id)
            self.say(f"worker: watching run {run.id}'s Slurm job {run.slurm_job} ({run.slurm_state})")

    def watch_jobs(self) -> None:
        """Ingest what each watched job's run wrote, follow the job's state, give ended runs their verdict."""
        assert self.executor is not None
        runs = [self.store.run(run_id) for run_id in self.jobs]
        states = self.executor.states([r.slurm_job for r in runs if r.slurm_job])
        for run in runs:
            run, ended = self.executor.watch(run, states.get(run.slurm_job or ""))
            if ended:
                self.jobs.remove(run.id)
                self.say(f"worker: run {run.id} {run.status} (slurm job {run.slurm_job} {run.slurm_state}, exit "
                         f"{run.exit_code})")  # fmt: skip

    def start_ready(self) -> int:
        """Start as many ready runs as slots and GPUs allow; runs that can never start are failed."""
        if queue.paused(self.store):
            return 0
        started = 0
        self._memory = None
        taken: set[int] = set()  # evaluation jobs batched into a process this poll
        for run in queue.ready_runs(self.store, self._fail):
            if self._full():
                break
            if run.id in taken or not self.in_scope(run):
                continue
            if run.is_checkpoint_job:
                side = self.eval_policy in ("share", "cpu")
                gpus = self._eval_gpus(run) if side else self._slot_gpus(run)
                if gpus is None:
                    continue
                others = self.store.queued_checkpoint_jobs(EVAL_BATCH + len(taken))
                others = [j for j in others if j.id != run.id and j.id not in taken and self.in_scope(j)]
                batch = [run, *others][:EVAL_BATCH]
                taken.update(j.id for j in batch)
                started += self._start(batch, gpus, side=side)
                continue
            gpus = self._slot_gpus(run)
            if gpus is not None:
                started += self._start([run], gpus)
        return started

    def _in_slots(self) -> int:
        return sum(not c.side for c in self.children) + len(self.jobs)

    def _full(self) -> bool:
        """No slot for a run and no room for evaluations beside them: nothing further down the queue can start."""
        slots_full = self._in_slots() >= self.max_parallel
        side_full = self.eval_policy == "wait" or sum(c.side for c in self.children) >= self.max_evals
        return slots_full and side_full

    def _memory_now(self) -> dict[str, tuple[int, int]]:
        if self._memory is None:
            self._memory = self.memory() if self.gpus else {}
        return self._memory

    def _slot_gpus(self, run: Run) -> list[str] | None:
        """The GPUs for a run that takes one of the max_parallel slots, [] for CPU, None if it must wait."""
        if self._in_slots() >= self.max_parallel:
            return None  # an evaluation further down may still start beside the runs
        if self.executor is not None:
            return []  # Slurm allocates the job's GPUs (its [slurm] table)
        wanted = run.gpus if run.gpus is not None else (num_processes(run) if self.gpus else 0)  # all of its GPUs
        if run.is_checkpoint_job:
            wanted = min(wanted, 1)
        if wanted > len(self.gpus):
            self._fail(run, f"asks for {wanted} GPUs; this worker has {len(self.gpus)} ({','.join(self.gpus)})")
            return None
        if not wanted:
            return []
        free = self._free_gpus(self._memory_now())
        return free[:wanted] if wanted <= len(free) else None  # a later run may need fewer

    def _used_by_us(self, side: bool | None = None) -> set[str]:
        return {g for c in self.children if side is None or c.side == side for g in c.gpus}

    def _free_gpus(self, memory: dict[str, tuple[int, int]]) -> list[str]:
        """GPUs none of our runs holds and no other process fills (nvidia-smi's memory.used, when it answers)."""
        ours = self._used_by_us()
        return [g for g in self.gpus if g not in ours and not _busy(memory.get(g))]

    def _eval_gpus(self, run: Run) -> list[str] | None:
        """Where evaluation jobs go beside the runs: a free GPU, else (share) the GPU of the run they evaluate when
        nvidia-smi says the checkpoint fits beside it; [] = CPU; None = wait for a gap."""
        if sum(c.side for c in self.children) >= self.max_evals:
            return None
        if self.eval_policy == "cpu" or not self.gpus:
            return []
        memory = self._memory_now()
        free = self._free_gpus(memory)
        if free:
            return free[:1]
        parent = next((c for c in self.children if run.parent_run in c.run_ids and not c.side), None)
        held = [*(parent.gpus[:1] if parent else []), *sorted(self._used_by_us(side=False))]
        for gpu in dict.fromkeys(held):  # the evaluated run's own GPU first
            if gpu not in memory:
                return [gpu]  # nvidia-smi did not answer: share, as the policy says
            used, total = memory[gpu]
            if total - used >= checkpoint_mib(run.model_path) * 5 // 4 + EVAL_HEADROOM_MIB:
                return [gpu]
        return None  # nothing fits now; a gap comes when a run ends

    def _start(self, batch: list[Run], gpus: list[str], side: bool = False) -> bool:
        """Claim the runs and start one process for them (several only for evaluation jobs)."""
        lead = batch[0]
        try:
            columns = queue.resolved_start(self.store, lead)
        except HealerError as exc:
            self._fail(lead, f"cannot start: {exc}")
            return False
        visible = ",".join(gpus)
        host = socket.gethostname()
        if self.executor is not None:
            return self._submit(lead, host, columns)
        if not self.store.claim(lead.id, worker=self.name, host=host, assigned_gpus=visible, **columns):
            return False  # another worker took it first
        claimed = self.store.run(lead.id)
        then = [r.id for r in batch[1:] if self.store.claim(r.id, worker=self.name, host=host, assigned_gpus=visible,
                                                           log_path=claimed.log_path)]  # fmt: skip
        process = launch(self.store, claimed, env={"CUDA_VISIBLE_DEVICES": visible}, then=then)
        for run_id in (lead.id, *then):
            self.store.mark_spawned(run_id, process.pid)
        self.children.append(Child([lead.id, *then], process, gpus, side))
        where = (f"GPU {visible}" if gpus else "CPU") + (" beside the runs" if side else "")
        more = f" and {len(then)} more checkpoint jobs ({', '.join(map(str, then))})" if then else ""
        self.say(f"worker: started run {lead.id} ({lead.name}){more} on {where}, pid {process.pid}; "
                 f"log {claimed.log_path}")  # fmt: skip
        return True

    def _submit(self, run: Run, host: str, columns: dict[str, object]) -> bool:
        """Claim one run and submit it as a Slurm job (checkpoint jobs are not batched: Slurm places each)."""
        assert self.executor is not None
        if not self.store.claim(run.id, worker=self.name, host=host, **columns):
            return False
        try:
            submitted = self.executor.submit(self.store.run(run.id))
        except Exception as exc:  # sbatch refused it (a partition, an account, a limit): the run says why
            from healer.slurm import describe_submit_error

            self._fail(run, f"Slurm refused the job: {describe_submit_error(exc)}")
            return False
        self.jobs.append(run.id)
        gpus = self.executor.parameters(submitted).get("gpus_per_node", 0)
        hint = "" if gpus else " ([slurm] gpus or `queue add --gpus N` asks for GPUs)"
        self.say(f"worker: submitted run {run.id} ({run.name}) as Slurm job {submitted.slurm_job} with {gpus} GPUs"
                 f"{hint}; log {submitted.log_path}")  # fmt: skip
        return True

    def _fail(self, run: Run, reason: str) -> None:
        self.store.finish_run(run.id, Status.FAILED, exit_code=None, reason=reason)
        self.say(f"worker: run {run.id} failed: {reason}")

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)


def _busy(memory: tuple[int, int] | None) -> bool:
    return memory is not None and memory[1] > 0 and memory[0] > BUSY_FRACTION * memory[1]


SERVICE = """[Unit]
Description=healer worker: runs queued SFT and RL runs ({db})
After=network.target

[Service]
Type=simple
Environment="HEALER_DB={db}"
ExecStart={command}
Restart=on-failure
RestartSec=10
KillMode=process

[Install]
WantedBy=default.target
"""


def install_service(db: str, arguments: list[str]) -> str:
    """Write a systemd --user unit that runs this worker; returns its path. KillMode=process: stopping the service
    stops the worker, not the runs it started (they record their own end), as Ctrl-C does."""
    import shlex
    import sys
    from pathlib import Path

    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    directory = config / "systemd" / "user"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "healer-worker.service"
    command = shlex.join([sys.executable, "-m", "healer", "worker", *arguments])
    path.write_text(SERVICE.format(db=db, command=command))
    return str(path)
