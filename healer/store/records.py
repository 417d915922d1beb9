"""The rows of the store's tables as frozen dataclasses: what the write side returns and the views are built from."""

from __future__ import annotations

import functools
import json
import socket
import sqlite3
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from healer.store.schema import JOB_KINDS, Kind, Status, is_run_process, pid_alive


@dataclass(frozen=True)
class Run:
    id: int
    kind: Kind
    method: str
    name: str
    status: Status
    spec: str
    created_at: str
    preset_path: str | None = None
    preset_text: str | None = None
    model_path: str | None = None
    parent_run: int | None = None
    parent_step: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    out_dir: str | None = None
    log_path: str | None = None
    host: str | None = None
    pid: int | None = None
    heartbeat: float | None = None
    total_steps: int | None = None
    healer_version: str | None = None
    git_commit: str | None = None
    queued: int = 0
    priority: int = 0
    gpus: int | None = None
    after_run: int | None = None
    start_ref: str | None = None
    worker: str | None = None
    assigned_gpus: str | None = None
    attempts: int = 0
    params: str | None = None
    executor: str | None = None
    slurm_job: str | None = None
    node: str | None = None
    slurm_state: str | None = None
    journal: str | None = None
    journal_offset: int = 0
    blocked_on: int | None = None

    @property
    def spec_dict(self) -> dict[str, Any]:
        return json.loads(self.spec)

    @property
    def is_checkpoint_job(self) -> bool:
        """A job on another run's checkpoint (parent_run@parent_step), queued as that run saved it: its evaluation
        (kind eval) or its spectra (kind spectra)."""
        return self.kind in JOB_KINDS and self.parent_run is not None


@dataclass(frozen=True)
class Checkpoint:
    id: int
    run_id: int
    step: int
    path: str
    protected: bool
    created_at: str
    pruned_at: str | None = None


@dataclass(frozen=True)
class Metric:
    id: int
    run_id: int
    step: int
    name: str
    value: float | None
    wall_time: float


@dataclass(frozen=True)
class Eval:
    id: int
    run_id: int
    step: int
    checkpoint_path: str | None
    task: str
    split: str
    protocol: str
    max_attempts: int
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    format_error_rate: float
    mean_reward: float | None
    loss: float | None
    outcomes: str
    settings: str
    seconds: float
    created_at: str


@dataclass(frozen=True)
class EvalSample:
    id: int
    eval_id: int
    idx: int
    prompt: str
    completion: str
    transcript: str | None
    outcome: str
    reward: float | None
    correct: bool
    attempts: int
    meta: str


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


@dataclass(frozen=True)
class Spectrum:
    """One side (u or v) of one matrix of one checkpoint, against one reference (the spectra table)."""

    id: int
    run_id: int
    step: int
    ref: str
    ref_run: int | None
    ref_step: int | None
    param: str
    layer: int
    module: str
    side: str
    k: int
    n: int
    forced_zero: int
    mean_angle_deg: float
    median_angle_deg: float
    max_angle_deg: float
    chordal: float
    chordal_norm: float
    sigma_rel_drift: float
    energy_diag: float | None
    energy_rotation: float | None
    energy_outside: float | None
    gap_rel: float | None
    method: str
    error_deg: float | None
    angles: bytes
    sigma_drift: bytes
    seconds: float
    settings: str
    created_at: str

    @property
    def angles_deg(self) -> list[float]:
        return array("f", self.angles).tolist()


SPECTRA_COLUMNS = (
    "param", "layer", "module", "side", "k", "n", "forced_zero", "mean_angle_deg", "median_angle_deg",
    "max_angle_deg", "chordal", "chordal_norm", "sigma_rel_drift", "energy_diag", "energy_rotation", "energy_outside",
    "gap_rel", "method", "error_deg", "seconds",
)  # fmt: skip


def record(cls: type, row: sqlite3.Row) -> Any:
    """A row of a table as its dataclass (columns the dataclass lacks, such as `seq`, are left out)."""
    return records(cls, [row])[0]


def records(cls: type, rows: list[sqlite3.Row]) -> list[Any]:
    """Rows of one query as dataclasses: which column goes to which field is worked out once, not per row."""
    if not rows:
        return []
    names = _field_names(cls)
    keys = [k for k in rows[0].keys() if k in names]  # noqa: SIM118 - iterating a Row yields values
    columns = [i for i, k in enumerate(rows[0].keys()) if k in names]
    converters = _CONVERTERS.get(cls, {})
    convert = [(n, converters[k]) for n, k in enumerate(keys) if k in converters]
    made = []
    for row in rows:
        values = [row[i] for i in columns]
        for n, to in convert:
            values[n] = to(values[n])
        made.append(cls(**dict(zip(keys, values, strict=True))))
    return made


_CONVERTERS: dict[type, dict[str, Callable[[Any], Any]]] = {
    Run: {"kind": Kind, "status": Status},
    Checkpoint: {"protected": bool},
    EvalSample: {"correct": bool},
}

STALE_HEARTBEAT_S = 300.0  # a run on another host with no heartbeat for this long is presumed dead


def process_gone(run: Run, host: str | None = None, now: float | None = None) -> str | None:
    """Why a running run's process is gone (killed, crashed, its host silent), or None while it lives. Reads only:
    the worker's loop and commands that change state record the verdict (`runner.reap_dead`); views show it."""
    if run.status != Status.RUNNING or run.executor == "slurm":
        return None  # a Slurm job's life is Slurm's to tell: the worker that submitted it (or a new one) asks sacct
    host = socket.gethostname() if host is None else host
    if run.host == host:
        if run.pid is None:  # claimed a moment ago: alive while the worker that is starting it is
            return None if _worker_alive(run.worker, host) else "its worker died before starting it"
        return None if is_run_process(run.pid, run.id) else f"process {run.pid} is gone (killed or crashed)"
    now = time.time() if now is None else now
    if run.heartbeat is not None and now - run.heartbeat > STALE_HEARTBEAT_S:
        return f"no heartbeat from {run.host} for {now - run.heartbeat:.0f} s"
    return None


def _worker_alive(worker: str | None, host: str) -> bool:
    """Whether the worker `host:pid` that claimed a run is alive on this host."""
    if not worker or ":" not in worker:
        return False
    worker_host, _, pid = worker.rpartition(":")
    return worker_host == host and pid.isdigit() and pid_alive(int(pid))
