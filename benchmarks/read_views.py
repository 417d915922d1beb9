"""How fast do the read commands answer on a big store? Today's read path against the read model, in one run.

A store of 200 runs (40 SFT roots, 120 GRPO runs started from their checkpoints, 40 evaluation jobs; done, failed,
cancelled, running and queued, some waiting on `--from RUN@peak-ood`, `RUN@STEP` or `--after`), checkpoints every
10 steps, 1,000,000 metric rows (one run alone has 50,000), 5,000 evaluations and 100,000 spectra rows is built with
raw `executemany` in a schema that `healer.store.Store` creates by its migrations. On it, each view is timed two ways
in the same process, in alternating order after one warm-up of each, and the median of --repeat repetitions kept:

  old  today's read code (healer 3bf6cb0: store.py, report.py, lineage.py, queue.py, evals.py, refs.py, spectra.py,
       runner.reap_dead, cli/runs.py, cli/queue.py), copied below with the same SQL, the same per-run queries and the
       same row objects, so it goes on measuring today's behaviour after healer changes. Every old view returns the
       text the CLI prints (json.dumps(indent=2, default=str)); `runs ls` also reads every run's last metrics, as its
       table does, and the scan of `reap_dead` is done without its writes. It runs on the schema the installed
       healer's migrations make less the indexes the read model added (a copy of the store without them), so it
       measures today's schema too;
  new  the read model: `healer.store.Reader` (read-only) and `healer.store.views.to_json`. Each call is a small
       function at the top of this file, to adjust while that API settles. Without `Reader` only the old path runs.

The views: `runs ls --json`, `runs show RUN --json` (the 50,000-row run, and an SFT root with children),
`runs tree --json`, `queue ls --json`, `metrics RUN --json` of the 50,000-row run, and a TUI poll: 20 running runs
get 80 new metric rows each (10 steps of 8 names, written outside the timing); old: `store.metrics(run,
after_id=last seen)` for each, new: `changes(since=seq)` and `metrics(run, after_seq=seq)` for the runs it reports.
The `same` column says whether the new view's JSON equals the old (the poll: the same number of rows).

Then CLI start-up: the wall time of `python -m healer --help` (median of 5 subprocesses) against what every start
paid before for sqlite_utils (pandas, pyarrow), typer and rich: `python -c "import sqlite_utils, typer, rich"`.

Goals (for the new path): a poll under 5 ms, every listing (ls, show, tree, queue) under 100 ms, `healer --help`
under 0.5 s. `metrics RUN --json` of 50,000 rows is an export, not a listing: it has no goal.

    .venv/bin/python benchmarks/read_views.py [--small] [--repeat 5] [--db PATH] [--keep]

--small: 20 runs, 50,000 metric rows (5,000 in the big run), 500 evaluations, 5,000 spectra rows (a smoke run).
--db PATH: build the store there, or reuse it if it exists (the poll adds 80 rows per running run each time).
It always exits 0: the goal lines are a report, not a test.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from healer.store import Store

GOAL_POLL_MS = 5.0
GOAL_LISTING_MS = 100.0
GOAL_HELP_S = 0.5
POLL_RUNS = 20  # running runs the poll reads
POLL_STEPS = 10  # new steps per polled run (of 8 names: 80 rows)


# -- the new path: the read model's calls, one small function each, to adjust while its API settles ---------------


def new_available() -> str | None:
    """None when the read model can be imported, else why not."""
    try:
        from healer.store import Reader  # noqa: F401
    except ImportError:
        return "healer.store.Reader missing"
    try:
        from healer.store.views import to_json  # noqa: F401
    except ImportError:
        return "healer.store.views.to_json missing"
    return None


def new_open(path: Path) -> Any:
    from healer.store import Reader

    return Reader(path)


def new_json(view: Any) -> str:
    from healer.store.views import to_json

    return to_json(view)


def new_runs_ls(r: Any) -> str:
    return new_json(r.runs())


def new_runs_show(r: Any, ref: str) -> str:
    return new_json(r.run_detail(ref))


def new_tree(r: Any) -> str:
    return new_json(r.tree())


def new_queue_ls(r: Any) -> str:
    return new_json(r.queue())


def new_metrics(r: Any, run_id: int) -> str:
    return new_json(r.metrics(run_id))


def new_seq(r: Any) -> int:
    """The change feed's high-water mark now."""
    return r.changes(since=0).seq


def changed_metric_runs(changes: Any) -> list[int]:
    """The runs a Changes reports new metric rows for; adjust to its final shape."""
    for name in ("metric_runs", "metrics"):
        value = getattr(changes, name, None)
        if value is None:
            continue
        if isinstance(value, Mapping):
            return sorted(value)
        return sorted({v if isinstance(v, int) else v.run_id for v in value})
    raise AttributeError(f"{type(changes).__name__} has neither .metric_runs nor .metrics: adjust changed_metric_runs")


def new_poll(r: Any, seq: int) -> int:
    """The TUI's poll: what changed since `seq`, then the new metric rows of each run that has some."""
    changes = r.changes(since=seq)
    return sum(len(r.metrics(run_id, after_seq=seq)) for run_id in changed_metric_runs(changes))


def writer_conn(store: Store) -> sqlite3.Connection:
    """The builder's raw connection to the store."""
    return store.conn


# -- the old path: today's read code (healer 3bf6cb0), the same SQL and the same Python work ------------------------

HOST = socket.gethostname()
STALE_HEARTBEAT_S = 300.0
JOB_KINDS = ("eval", "spectra")
CHECKPOINT_JOB = "(kind IN ('eval', 'spectra') AND parent_run IS NOT NULL)"
FINISHED = ("done", "failed", "cancelled")
PEAK_RULES = {
    "peak-ood": "highest OOD accuracy (earliest on ties)",
    "best-id": "highest ID accuracy (earliest on ties)",
    "last": "the last evaluated checkpoint",
    "loss-pick": "lowest ID loss on the reference answers: what a loss-based rule would pick",
}
NAMED = tuple(dict.fromkeys(("last", *PEAK_RULES)))
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")


class OldError(Exception):
    """healer.errors.HealerError of the old path."""


@dataclass(frozen=True)
class Run:
    id: int
    kind: str
    method: str
    name: str
    status: str
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

    @property
    def spec_dict(self) -> dict[str, Any]:
        return json.loads(self.spec)

    @property
    def is_checkpoint_job(self) -> bool:
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
class Spectrum:
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


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


def _row(cls: type, row: sqlite3.Row) -> Any:
    names = _field_names(cls)
    return cls(**{k: row[k] for k in row.keys() if k in names})  # noqa: SIM118 - iterating a Row yields values


def _checkpoint(row: sqlite3.Row) -> Checkpoint:
    return Checkpoint(
        id=row["id"],
        run_id=row["run_id"],
        step=row["step"],
        path=row["path"],
        protected=bool(row["protected"]),
        created_at=row["created_at"],
        pruned_at=row["pruned_at"],
    )


class OldStore:
    """The read methods of today's Store that the read commands call, on a given connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def run(self, run_id: int) -> Run:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise OldError(f"no run with id {run_id}; `healer runs ls` lists the runs")
        return _row(Run, row)

    def find_run(self, ref: str) -> Run:
        ref = ref.strip()
        if ref.isdigit():
            return self.run(int(ref))
        row = self.conn.execute("SELECT * FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1", [ref]).fetchone()
        if row is None:
            raise OldError(f"no run with id or name {ref!r}; `healer runs ls` lists the runs")
        return _row(Run, row)

    def runs(self, status: Iterable[str] | None = None) -> list[Run]:
        if status is None:
            rows = self.conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
        else:
            wanted = list(status)
            marks = ", ".join("?" * len(wanted))
            rows = self.conn.execute(f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY id", wanted).fetchall()
        return [_row(Run, r) for r in rows]

    def children(self, run_id: int) -> list[Run]:
        rows = self.conn.execute(
            f"SELECT * FROM runs WHERE parent_run = ? AND NOT {CHECKPOINT_JOB} ORDER BY id", [run_id]
        ).fetchall()
        return [_row(Run, r) for r in rows]

    def pending_eval_jobs(self, run_id: int) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM runs WHERE parent_run = ? AND kind = 'eval' AND status IN ('queued', 'running')",
            [run_id],
        ).fetchone()
        return row[0]

    def queue_runs(self) -> list[Run]:
        rows = self.conn.execute("SELECT * FROM runs WHERE queued = 1 ORDER BY id").fetchall()
        return [_row(Run, r) for r in rows]

    def checkpoint_at(self, path: str) -> Checkpoint | None:
        row = self.conn.execute("SELECT * FROM checkpoints WHERE path = ? ORDER BY id DESC LIMIT 1", [path]).fetchone()
        return None if row is None else _checkpoint(row)

    def checkpoints(self, run_id: int, *, pruned: bool = False) -> list[Checkpoint]:
        sql = "SELECT * FROM checkpoints WHERE run_id = ?" + ("" if pruned else " AND pruned_at IS NULL")
        rows = self.conn.execute(sql + " ORDER BY step", [run_id]).fetchall()
        return [_checkpoint(r) for r in rows]

    def metrics(self, run_id: int, name: str | None = None, after_id: int = 0) -> list[Metric]:
        sql = "SELECT * FROM metrics WHERE run_id = ? AND id > ?"
        params: list[Any] = [run_id, after_id]
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        rows = self.conn.execute(sql + " ORDER BY step, name", params).fetchall()
        return [_row(Metric, r) for r in rows]

    def last_metrics(self, run_id: int) -> dict[str, Metric]:
        rows = self.conn.execute(
            "SELECT m.* FROM metrics m JOIN (SELECT name, MAX(step) AS step FROM metrics WHERE run_id = ? "
            "GROUP BY name) last ON m.name = last.name AND m.step = last.step WHERE m.run_id = ? ORDER BY m.name",
            [run_id, run_id],
        ).fetchall()
        return {r["name"]: _row(Metric, r) for r in rows}

    def evals(self, run_id: int) -> list[Eval]:
        rows = self.conn.execute("SELECT * FROM evals WHERE run_id = ? ORDER BY step, split, protocol, id", [run_id])
        return [_row(Eval, r) for r in rows.fetchall()]

    def spectra(self, run_id: int, step: int | None = None, ref: str | None = None) -> list[Spectrum]:
        sql, params = "SELECT * FROM spectra WHERE run_id = ?", [run_id]
        for column, value in (("step", step), ("ref", ref)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        rows = self.conn.execute(sql + " ORDER BY step, layer, module, side", params).fetchall()
        return [_row(Spectrum, r) for r in rows]

    def last_step(self, run_id: int) -> int | None:
        row = self.conn.execute("SELECT MAX(step) FROM metrics WHERE run_id = ?", [run_id]).fetchone()
        return row[0]


def print_json(data: Any) -> str:
    """What cli.common.print_json writes to stdout."""
    return json.dumps(data, indent=2, default=str) + "\n"


# runner.reap_dead, without its writes (finish_run of a dead run)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    return True


def _worker_alive(worker: str | None) -> bool:
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and pid_alive(int(pid))


def _is_run_process(pid: int, run_id: int) -> bool:
    if not pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"healer.train" in args and str(run_id).encode() in args


def reap_dead_scan(store: OldStore) -> list[int]:
    host, now, dead_runs = socket.gethostname(), time.time(), []
    for run in store.runs(status=["running"]):
        if run.host == host and run.pid is None and _worker_alive(run.worker):
            continue
        if run.host == host:
            dead = run.pid is None or not _is_run_process(run.pid, run.id)
        else:
            dead = run.heartbeat is not None and now - run.heartbeat > STALE_HEARTBEAT_S
        if dead:
            dead_runs.append(run.id)  # today: store.finish_run(...), a write the benchmark leaves out
    return dead_runs


# evals.py


def eval_row(e: Eval) -> dict[str, Any]:
    return {
        "id": e.id, "step": e.step, "split": e.split, "protocol": e.protocol, "n": e.n, "correct": e.correct,
        "accuracy": e.accuracy, "ci_low": e.ci_low, "ci_high": e.ci_high,
        "format_error_rate": e.format_error_rate, "mean_reward": e.mean_reward, "loss": e.loss,
        "task": e.task, "max_attempts": e.max_attempts, "outcomes": json.loads(e.outcomes),
        "seconds": e.seconds, "checkpoint_path": e.checkpoint_path,
    }  # fmt: skip


def evals_by_step(evals: list[Eval], protocol: str) -> dict[int, dict[str, Eval]]:
    table: dict[int, dict[str, Eval]] = {}
    for e in sorted(evals, key=lambda e: (e.step, e.n, e.id)):
        if e.protocol == protocol:
            table.setdefault(e.step, {})[e.split] = e
    return table


def default_protocol(evals: list[Eval]) -> str:
    protocols = {e.protocol for e in evals}
    return "single" if "single" in protocols or not protocols else sorted(protocols)[0]


@dataclass(frozen=True)
class Peak:
    rule: str
    step: int


def find_peaks(evals: list[Eval], protocol: str | None = None) -> dict[str, Peak]:
    protocol = protocol or default_protocol(evals)
    table = {step: splits for step, splits in evals_by_step(evals, protocol).items() if step > 0}
    peaks: dict[str, Peak] = {}
    ood = [(splits["ood"].accuracy, -step) for step, splits in table.items() if "ood" in splits]
    if ood:
        peaks["peak-ood"] = Peak("peak-ood", -max(ood)[1])
    ind = [(splits["id"].accuracy, -step) for step, splits in table.items() if "id" in splits]
    if ind:
        peaks["best-id"] = Peak("best-id", -max(ind)[1])
    if table:
        peaks["last"] = Peak("last", max(table))
    losses = [(splits["id"].loss, step) for step, splits in table.items() if "id" in splits and splits["id"].loss]
    if losses:
        peaks["loss-pick"] = Peak("loss-pick", min(losses)[1])
    return peaks


def peaks_report(evals: list[Eval], protocol: str | None = None) -> dict[str, Any]:
    protocol = protocol or default_protocol(evals)
    table = evals_by_step(evals, protocol)
    report: dict[str, Any] = {"protocol": protocol}
    if 0 in table:
        report["start"] = _at(0, table[0], "the model the run started from")
    for name, peak in find_peaks(evals, protocol).items():
        report[name] = _at(peak.step, table[peak.step], PEAK_RULES[name])
    return report


def _at(step: int, splits: dict[str, Eval], rule: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"step": step, "rule": rule}
    for split, e in splits.items():
        entry[split] = {"accuracy": e.accuracy, "ci_low": e.ci_low, "ci_high": e.ci_high, "loss": e.loss}
    return entry


# refs.py: what queue.wait_for resolves


@dataclass(frozen=True)
class CheckpointRef:
    run: Run | None
    step: int
    path: str

    @property
    def label(self) -> str:
        return f"run {self.run.id}@{self.step}" if self.run else self.path


def resolve_checkpoint(store: OldStore, text: str) -> CheckpointRef:
    if "@" in text:
        run_text, selector = text.rsplit("@", 1)
        return _select(store, store.find_run(run_text), selector)
    directory = Path(text).expanduser()
    if directory.is_dir():
        return _directory(store, directory.resolve())
    if text.startswith((".", "/", "~")) or "/" in text:
        raise OldError(f"no checkpoint directory at {directory}; give a directory or RUN@STEP")
    return _select(store, store.find_run(text), "last")


def _directory(store: OldStore, directory: Path) -> CheckpointRef:
    checkpoint = store.checkpoint_at(str(directory))
    if checkpoint is not None:
        return CheckpointRef(store.run(checkpoint.run_id), checkpoint.step, checkpoint.path)
    if not (directory / "config.json").exists() and not (directory / "adapter_config.json").exists():
        raise OldError(f"{directory} is not a model directory (no config.json or adapter_config.json)")
    return CheckpointRef(None, 0, str(directory))


def _select(store: OldStore, run: Run, selector: str) -> CheckpointRef:
    checkpoints = {c.step: c for c in store.checkpoints(run.id)}
    if selector.isdigit():
        step = int(selector)
        if step == 0:
            return CheckpointRef(run, 0, run.model_path or "")
        if step not in checkpoints:
            _refuse_pruned(store, run, step)
            have = ", ".join(map(str, sorted(checkpoints))) or "none yet"
            raise OldError(f"run {run.id} has no checkpoint at step {step}; its checkpoints: {have}")
        return _on_disk(CheckpointRef(run, step, checkpoints[step].path))
    if selector not in NAMED:
        raise OldError(f"{run.id}@{selector}: use a step number or one of {', '.join(NAMED)}")
    if selector == "last":
        if not checkpoints:
            raise OldError(f"run {run.id} has no checkpoints yet")
        step = max(checkpoints)
    else:
        pending = store.pending_eval_jobs(run.id)
        if pending:
            raise OldError(
                f"run {run.id}@{selector}: {pending} evaluation jobs of run {run.id} are not done yet "
                f"(`healer queue ls`); the {selector} is picked over all its checkpoints once they are"
            )
        peak = find_peaks(store.evals(run.id)).get(selector)
        if peak is None:
            raise OldError(f"run {run.id}@{selector}: no evaluations to pick from yet; run `healer eval {run.id}`")
        step = peak.step
    if step not in checkpoints:
        _refuse_pruned(store, run, step)
        raise OldError(f"run {run.id}@{selector} is step {step}, whose checkpoint is not registered any more")
    return _on_disk(CheckpointRef(run, step, checkpoints[step].path))


def _refuse_pruned(store: OldStore, run: Run, step: int) -> None:
    for c in store.checkpoints(run.id, pruned=True):
        if c.step == step and c.pruned_at:
            raise OldError(f"run {run.id}@{step} was pruned at {c.pruned_at} (train.keep); "
                           f"`healer runs keep {run.id}@STEP` protects checkpoints you will need")  # fmt: skip


def check_startable(ref: CheckpointRef) -> None:
    directory = Path(ref.path)
    if not directory.is_dir():
        return
    adapter = directory / "adapter_config.json"
    if not (directory / "config.json").exists() and not adapter.exists():
        raise OldError(f"{ref.label}: {directory} holds no model (no config.json or adapter_config.json)")
    if any((directory / name).exists() for name in TOKENIZER_FILES):
        return
    if adapter.exists():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path") or ""
        if base and (not Path(base).is_dir() or any((Path(base) / n).exists() for n in TOKENIZER_FILES)):
            return
    raise OldError(
        f"{ref.label}: the checkpoint at {directory} has no tokenizer (no tokenizer_config.json); "
        "copy the tokenizer files of the model it was trained from into it"
    )


def _on_disk(ref: CheckpointRef) -> CheckpointRef:
    if not Path(ref.path).is_dir():
        raise OldError(f"{ref.label}: the checkpoint directory {ref.path} is gone (pruned or moved)")
    return ref


# queue.py


@dataclass(frozen=True)
class Wait:
    reason: str
    fatal: bool = False


def wait_for(store: OldStore, run: Run) -> Wait | None:
    if run.after_run is not None:
        dep = store.run(run.after_run)
        if dep.status in ("failed", "cancelled"):
            return Wait(f"run {dep.id}, which it runs after, {dep.status}", fatal=True)
        if dep.status != "done":
            return Wait(f"run {dep.id} to finish (--after)")
    if run.start_ref:
        return wait_for_start(store, run.start_ref)
    return None


def wait_for_start(store: OldStore, start_ref: str) -> Wait | None:
    if "@" not in start_ref:
        return None if Path(start_ref).is_dir() else Wait(f"{start_ref} is gone", fatal=True)
    run_text, selector = start_ref.rsplit("@", 1)
    run = store.run(int(run_text))
    if selector.isdigit():
        step = int(selector)
        if step == 0 or step in {c.step for c in store.checkpoints(run.id)}:
            return _startable(store, start_ref)
        if run.status in FINISHED:
            return Wait(f"run {run.id} {run.status} without a checkpoint at step {step}", fatal=True)
        return Wait(f"run {run.id} to save step {step}")
    if run.status in ("failed", "cancelled"):
        return Wait(f"run {run.id}, whose {selector} it starts from, {run.status}", fatal=True)
    if run.status != "done":
        return Wait(f"run {run.id} to finish (its {selector} is picked then)")
    pending = store.pending_eval_jobs(run.id) if selector != "last" else 0
    if pending:
        return Wait(f"the evaluations of run {run.id} ({pending} left; its {selector} is picked then)")
    return _startable(store, start_ref)


def _startable(store: OldStore, start_ref: str) -> Wait | None:
    try:
        check_startable(resolve_checkpoint(store, start_ref))
    except OldError as exc:
        return Wait(str(exc), fatal=True)
    return None


def eta_seconds(store: OldStore, run: Run) -> float | None:
    if run.status != "running" or not run.total_steps:
        return None
    points = sorted({m.step: m.wall_time for m in store.metrics(run.id, "learning_rate")}.items())
    if len(points) < 2:
        return None
    (s0, t0), (s1, t1) = points[0], points[-1]
    if s1 <= s0 or t1 <= t0:
        return None
    return (run.total_steps - s1) * (t1 - t0) / (s1 - s0)


def elapsed_seconds(run: Run) -> float | None:
    if not run.started_at:
        return None
    start = datetime.fromisoformat(run.started_at).timestamp()
    end = datetime.fromisoformat(run.finished_at).timestamp() if run.finished_at else time.time()
    return max(0.0, end - start)


def queue_row(store: OldStore, run: Run) -> dict[str, Any]:
    waiting = wait_for(store, run) if run.status == "queued" else None
    return {
        "id": run.id, "name": run.name, "kind": run.kind, "method": run.method, "status": run.status,
        "priority": run.priority, "gpus": run.gpus, "assigned_gpus": run.assigned_gpus,
        "step": store.last_step(run.id), "total_steps": run.total_steps, "elapsed_s": elapsed_seconds(run),
        "eta_s": eta_seconds(store, run), "parent_run": run.parent_run, "parent_step": run.parent_step,
        "after_run": run.after_run, "start_ref": run.start_ref, "waiting_for": waiting.reason if waiting else None,
        "attempts": run.attempts, "worker": run.worker, "exit_code": run.exit_code, "reason": run.reason,
        "created_at": run.created_at, "started_at": run.started_at, "finished_at": run.finished_at,
        "log_path": run.log_path,
    }  # fmt: skip


# report.py and spectra.by_step


def run_row(store: OldStore, run: Run) -> dict[str, Any]:
    return {
        "id": run.id, "name": run.name, "kind": run.kind, "method": run.method, "status": run.status,
        "parent_run": run.parent_run, "parent_step": run.parent_step, "start_ref": run.start_ref,
        "created_at": run.created_at, "started_at": run.started_at, "finished_at": run.finished_at,
        "exit_code": run.exit_code, "step": store.last_step(run.id), "total_steps": run.total_steps,
    }  # fmt: skip


def spectra_by_step(spectra: list[Spectrum], side: str = "u") -> dict[int, dict[str, float]]:
    if not spectra:
        return {}
    ref = spectra[0].ref
    table: dict[int, dict[str, float]] = {}
    for step in sorted({s.step for s in spectra if s.ref == ref}):
        rows = [s for s in spectra if s.step == step and s.ref == ref and s.side == side]
        table[step] = {"mean_angle_deg": sum(r.mean_angle_deg for r in rows) / len(rows),
                       "max_angle_deg": max(r.max_angle_deg for r in rows), "matrices": len(rows),
                       "sigma_rel_drift": sum(r.sigma_rel_drift for r in rows) / len(rows)}  # fmt: skip
    return table


def spectra_summary(store: OldStore, run: Run) -> list[dict[str, Any]]:
    rows = store.spectra(run.id)
    return [{"step": step, "ref": rows[0].ref, **values} for step, values in spectra_by_step(rows).items()]


def lineage(store: OldStore, run: Run) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    current, seen = run, {run.id}
    while current.parent_run is not None and current.parent_run not in seen:
        parent = store.run(current.parent_run)
        chain.insert(0, {"id": parent.id, "name": parent.name, "kind": parent.kind, "step": current.parent_step})
        seen.add(parent.id)
        current = parent
    return chain


def child_row(store: OldStore, child: Run) -> dict[str, Any]:
    waiting = wait_for(store, child) if child.status == "queued" else None
    return {"id": child.id, "name": child.name, "status": child.status, "parent_step": child.parent_step,
            "start_ref": child.start_ref, "waiting_for": waiting.reason if waiting else None}  # fmt: skip


def run_detail(store: OldStore, run: Run) -> dict[str, Any]:
    evals = store.evals(run.id)
    return {
        **run_row(store, run),
        "model_path": run.model_path,
        "spec": run.spec_dict,
        "checkpoints": [
            {
                "step": c.step,
                "path": c.path,
                "protected": c.protected,
                "created_at": c.created_at,
                "pruned_at": c.pruned_at,
            }
            for c in store.checkpoints(run.id, pruned=True)
        ],
        "evals": [eval_row(e) for e in evals],
        "peaks": peaks_report(evals),
        "spectra": spectra_summary(store, run),
        "params": json.loads(run.params) if run.params else None,
        "last_metrics": {name: {"step": m.step, "value": m.value} for name, m in store.last_metrics(run.id).items()},
        "lineage": lineage(store, run),
        "children": [child_row(store, c) for c in store.children(run.id)],
        "reason": run.reason,
        "out_dir": run.out_dir,
        "log_path": run.log_path,
        "preset_path": run.preset_path,
        "host": run.host,
        "pid": run.pid,
        "healer_version": run.healer_version,
        "git_commit": run.git_commit,
    }


def metric_row(m: Metric) -> dict[str, Any]:
    return {"step": m.step, "name": m.name, "value": m.value, "wall_time": m.wall_time}


# lineage.py


def tree(store: OldStore) -> list[dict[str, Any]]:
    runs = [r for r in store.runs() if r.kind not in ("eval", "spectra")]
    children: dict[int | None, list[Run]] = {}
    for r in runs:
        children.setdefault(r.parent_run if r.parent_run in {x.id for x in runs} else None, []).append(r)

    def node(r: Run, depth: int) -> dict[str, Any]:
        kids = children.get(r.id, []) if depth < 64 else []
        return {**tree_entry(store, r), "children": [node(c, depth + 1) for c in kids]}

    return [node(r, 0) for r in children.get(None, [])]


def tree_entry(store: OldStore, run: Run) -> dict[str, Any]:
    run_evals = store.evals(run.id)
    protocol = default_protocol(run_evals)
    table = evals_by_step(run_evals, protocol)
    entry: dict[str, Any] = {
        "id": run.id, "name": run.name, "kind": run.kind, "method": run.method, "status": run.status,
        "parent_run": run.parent_run, "parent_step": run.parent_step, "start_ref": run.start_ref,
        "step": store.last_step(run.id), "total_steps": run.total_steps, "last_eval": None, "peak_ood": None,
    }  # fmt: skip
    if table:
        step = max(table)
        entry["last_eval"] = {"step": step, **{s: e.accuracy for s, e in table[step].items()}}
    peak = find_peaks(run_evals, protocol).get("peak-ood")
    if peak is not None:
        entry["peak_ood"] = {"step": peak.step, "ood": table[peak.step]["ood"].accuracy}
    return entry


# the commands


def old_runs_ls(conn: sqlite3.Connection) -> str:
    """`healer runs ls --json`, plus every run's last metrics, which the table (the default output) reads."""
    store = OldStore(conn)
    reap_dead_scan(store)
    runs = [r for r in store.runs() if not r.is_checkpoint_job]
    rows = [run_row(store, r) for r in runs]
    _last = {r.id: store.last_metrics(r.id) for r in runs}  # the table's loss and reward columns
    return print_json(rows)


def old_runs_show(conn: sqlite3.Connection, ref: str) -> str:
    store = OldStore(conn)
    reap_dead_scan(store)
    return print_json(run_detail(store, store.find_run(ref)))


def old_tree(conn: sqlite3.Connection) -> str:
    store = OldStore(conn)
    reap_dead_scan(store)
    return print_json(tree(store))


def old_queue_ls(conn: sqlite3.Connection) -> str:
    store = OldStore(conn)
    reap_dead_scan(store)
    return print_json([queue_row(store, r) for r in store.queue_runs()])


def old_metrics(conn: sqlite3.Connection, ref: str) -> str:
    store = OldStore(conn)
    run = store.find_run(ref)
    return print_json([metric_row(m) for m in store.metrics(run.id, None)])


def old_poll(conn: sqlite3.Connection, last_seen: dict[int, int]) -> int:
    """What a TUI does today every poll: the rows of each running run newer than the last id it saw."""
    store = OldStore(conn)
    return sum(len(store.metrics(run_id, after_id=after)) for run_id, after in last_seen.items())


# -- the store ------------------------------------------------------------------------------------------------------

SPEC = '{"model": {"path": "x", "build": ""}, "train": {"keep": null}}'
SFT_NAMES = ("loss", "learning_rate", "grad_norm", "entropy", "num_tokens", "mean_token_accuracy", "epoch",
             "train_runtime")  # fmt: skip
RL_NAMES = ("loss", "learning_rate", "grad_norm", "reward", "reward_std", "kl", "completion_length", "entropy")
MODULES = ("q", "k", "v", "o", "gate", "up", "down")
LAYERS = 4  # spectra rows per reading: 4 layers x 7 modules x 2 sides = 56
SPECTRA_K = 16
BASE_TIME = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
REMOTE_HOST = "bench-gpu-1"  # not this host: reap_dead reads heartbeats, not /proc
Z95 = 1.959963984540054

RUN_COLUMNS = ("id", "kind", "method", "name", "status", "spec", "model_path", "parent_run", "parent_step",
               "created_at", "started_at", "finished_at", "exit_code", "reason", "out_dir", "log_path", "host", "pid",
               "heartbeat", "total_steps", "healer_version", "git_commit", "queued", "priority", "gpus", "after_run",
               "start_ref", "worker", "assigned_gpus", "attempts", "preset_path")  # fmt: skip
CHECKPOINT_COLUMNS = ("run_id", "step", "path", "protected", "created_at", "pruned_at")
METRIC_COLUMNS = ("run_id", "step", "name", "value", "wall_time")
EVAL_COLUMNS = ("run_id", "step", "checkpoint_path", "task", "split", "protocol", "max_attempts", "n", "correct",
                "accuracy", "ci_low", "ci_high", "format_error_rate", "mean_reward", "loss", "outcomes", "settings",
                "seconds", "created_at")  # fmt: skip
SPECTRA_COLUMNS = ("run_id", "step", "ref", "ref_run", "ref_step", "param", "layer", "module", "side", "k", "n",
                   "forced_zero", "mean_angle_deg", "median_angle_deg", "max_angle_deg", "chordal", "chordal_norm",
                   "sigma_rel_drift", "energy_diag", "energy_rotation", "energy_outside", "gap_rel", "method",
                   "error_deg", "angles", "sigma_drift", "seconds", "settings", "created_at")  # fmt: skip


@dataclass(frozen=True)
class Size:
    runs: int
    metrics: int
    big_metrics: int  # of them, in the one big run
    evals: int
    spectra: int


FULL = Size(runs=200, metrics=1_000_000, big_metrics=50_000, evals=5_000, spectra=100_000)
SMALL = Size(runs=20, metrics=50_000, big_metrics=5_000, evals=500, spectra=5_000)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def wilson(correct: int, n: int) -> tuple[float, float]:
    p, z2 = correct / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (0.0 if correct == 0 else max(0.0, centre - half)), (1.0 if correct == n else min(1.0, centre + half))


def ckpt_path(run_id: int, step: int) -> str:
    return f"/data/healer/runs/{run_id:05d}/checkpoint-{step}"


def insert(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """One transaction: every row of one table, by executemany with the columns named."""
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
    conn.execute("COMMIT")


def plan_runs(size: Size) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The runs (every column), and the metric rows each training run that started gets."""
    n_sft = max(2, size.runs // 5)
    n_jobs = max(2, size.runs // 5)
    n_rl = size.runs - n_sft - n_jobs
    sft_ids = list(range(1, n_sft + 1))
    rl_ids = list(range(n_sft + 1, n_sft + n_rl + 1))
    job_ids = list(range(n_sft + n_rl + 1, size.runs + 1))
    big = rl_ids[0]

    runs: dict[int, dict[str, Any]] = {}
    for i, run_id in enumerate(sft_ids):
        runs[run_id] = {"kind": "sft", "method": "sft", "name": f"sft-{run_id}",
                        "status": "failed" if i % 10 == 4 else "done", "queued": int(i % 3 == 0)}  # fmt: skip
    rl_cycle = ("done", "queued-peak", "done", "failed", "done", "queued-after", "done", "cancelled", "done",
                "queued-step", "done", "done")  # fmt: skip
    for j, run_id in enumerate(rl_ids):
        role = "running" if j == 0 else rl_cycle[j % len(rl_cycle)]
        parent = sft_ids[j % n_sft]
        run = {"kind": "rl", "method": "grpo", "name": f"grpo-{run_id}", "status": role, "queued": int(j % 3 == 0),
               "parent_run": parent}  # fmt: skip
        if role.startswith("queued"):
            run.update(status="queued", queued=1, role=role)
            if role == "queued-peak":
                target = big if (j // len(rl_cycle)) % 2 == 0 else parent
                run.update(parent_run=target, start_ref=f"{target}@peak-ood")
            elif role == "queued-after":
                after = big if (j // len(rl_cycle)) % 2 == 0 else rl_ids[j - 1]
                run.update(parent_run=None, after_run=after)
        elif j % 24 == 6:
            run["parent_run"] = big  # a GRPO run continued from a checkpoint of the big one
        runs[run_id] = run

    # the running runs: the big one, a few SFT runs and GRPO runs spread over the rest
    training = [r for r in sft_ids + rl_ids if runs[r]["status"] != "queued"]
    polled = min(POLL_RUNS, max(2, (n_sft + n_rl) // 8))
    sft_running = polled * 3 // 20
    done_sft = [r for r in sft_ids if runs[r]["status"] == "done"]
    done_rl = [r for r in rl_ids[1:] if runs[r]["status"] == "done" and runs[r]["parent_run"] != big]
    for pool, count in ((done_sft, sft_running), (done_rl, polled - sft_running - 1)):
        for k in range(count):
            runs[pool[len(pool) - 1 - k * len(pool) // count]]["status"] = "running"

    # metric quotas: the big run, the rest spread evenly
    quota = {big: size.big_metrics}
    others = [r for r in training if r != big]
    share, extra = divmod(size.metrics - size.big_metrics, len(others))
    for k, run_id in enumerate(others):
        quota[run_id] = share + (k < extra)
    steps = {r: math.ceil(q / 8) for r, q in quota.items()}

    def checkpoint_step(run_id: int, fraction: float) -> int:
        last = steps[run_id] // 10 * 10
        hundred = int(last * fraction) // 100 * 100
        return hundred or max(10, int(last * fraction) // 10 * 10)

    for k, run_id in enumerate(job_ids):
        parent = training[(k * 7) % len(training)]
        step = checkpoint_step(parent, ((k * 13) % 10 + 1) / 10)
        status = ("done", "done", "done", "done", "done", "done", "queued", "done", "failed", "running")[k % 10]
        runs[run_id] = {"kind": "eval", "method": "eval", "name": f"eval {parent}@{step}", "status": status,
                        "queued": 1, "parent_run": parent, "parent_step": step, "model_path": ckpt_path(parent, step),
                        "out_dir": f"/data/healer/runs/{parent:05d}/jobs",
                        "log_path": f"/data/healer/runs/{parent:05d}/jobs/eval-{step}.log"}  # fmt: skip

    for run_id in rl_ids:
        run = runs[run_id]
        if run["status"] == "queued":
            if run.pop("role") == "queued-step":
                run["start_ref"] = f"{run['parent_run']}@{checkpoint_step(run['parent_run'], 0.5)}"
            continue
        fraction = 0.5 if run["parent_run"] == big else 0.2 + 0.2 * (run_id % 4)
        run["parent_step"] = checkpoint_step(run["parent_run"], fraction)
        run["model_path"] = ckpt_path(run["parent_run"], run["parent_step"])

    rows = []
    now = time.time()
    for run_id in sorted(runs):
        run = runs[run_id]
        status, created = run["status"], BASE_TIME + timedelta(minutes=10 * run_id)
        n_steps = steps.get(run_id, 0)
        started = created + timedelta(seconds=60) if status != "queued" else None
        finished = started + timedelta(seconds=1.5 * n_steps + 30) if status in FINISHED and started else None
        if run["kind"] == "eval":
            total = None
        else:
            total = {"done": n_steps, "running": 2 * n_steps, "queued": 1000}.get(status, n_steps + 100)
        on_worker = run["queued"] and status != "queued"
        row = {c: None for c in RUN_COLUMNS} | {
            "id": run_id, "spec": SPEC, "created_at": iso(created), "priority": 0, "attempts": int(bool(on_worker)),
            "model_path": "Qwen/Qwen2.5-0.5B-Instruct", "healer_version": "0.1.0", "git_commit": "3bf6cb0",
            "out_dir": f"/data/healer/runs/{run_id:05d}", "log_path": f"/data/healer/runs/{run_id:05d}/run.log",
            "preset_path": f"presets/{run['kind']}.toml", "started_at": iso(started) if started else None,
            "finished_at": iso(finished) if finished else None, "total_steps": total,
            "exit_code": {"done": 0, "failed": 1, "cancelled": 130}.get(status),
            "reason": {"failed": "CUDA out of memory", "cancelled": "cancelled by the user"}.get(status),
        }  # fmt: skip
        row.update({k: v for k, v in run.items() if k in RUN_COLUMNS})
        if status != "queued":
            row.update(host=REMOTE_HOST, pid=10_000 + run_id, heartbeat=now if status == "running" else None)
        if on_worker:
            row.update(worker=f"{REMOTE_HOST}:4242", assigned_gpus=str(run_id % 8))
        rows.append(row)
    return rows, quota


def metric_rows(runs: list[dict[str, Any]], quota: dict[int, int], rng: random.Random) -> list[tuple[Any, ...]]:
    """Every training run's rows, step by step, 8 names a step, wall time going up 1.5 s a step."""
    rows: list[tuple[Any, ...]] = []
    for run in runs:
        run_id = run["id"]
        if run_id not in quota:
            continue
        names = RL_NAMES if run["kind"] == "rl" else SFT_NAMES
        t0 = datetime.fromisoformat(run["started_at"]).timestamp()
        left, step = quota[run_id], 0
        while left > 0:
            step += 1
            decay = math.exp(-step / 2000)
            for name in names[: min(len(names), left)]:
                rows.append((run_id, step, name, 0.2 + 2.0 * decay + 0.05 * rng.random(), t0 + 1.5 * step))
            left -= len(names)
    return rows


def last_steps(metrics: list[tuple[Any, ...]]) -> dict[int, int]:
    last: dict[int, int] = {}
    for run_id, step, *_ in metrics:
        last[run_id] = step
    return last


def checkpoint_rows(runs: list[dict[str, Any]], last: dict[int, int]) -> list[tuple[Any, ...]]:
    """Every 10 steps; finished runs keep every 100th and their last three, the others marked pruned."""
    rows = []
    for run in runs:
        run_id = run["id"]
        if run_id not in last:
            continue
        started = datetime.fromisoformat(run["started_at"])
        steps = list(range(10, last[run_id] + 1, 10))
        for step in steps:
            pruned = run["status"] in FINISHED and step % 100 and step < steps[-1] - 20
            created = iso(started + timedelta(seconds=1.5 * step))
            rows.append((run_id, step, ckpt_path(run_id, step), 0, created, created if pruned else None))
    return rows


def spread(items: list[Any], count: int) -> list[Any]:
    """`count` items evenly spaced through `items` (all of them, repeated, if there are fewer)."""
    return [items[k * len(items) // count] for k in range(count)] if items else []


def eval_rows(checkpoints: list[tuple[Any, ...]], count: int, last: dict[int, int],
              rng: random.Random) -> list[tuple[Any, ...]]:  # fmt: skip
    """An ID and an OOD evaluation at checkpoints spread over every run's, `count` rows in all."""
    rows: list[tuple[Any, ...]] = []
    for run_id, step, path, _, created, _ in spread(checkpoints, math.ceil(count / 2)):
        progress = step / last[run_id]
        for split in ("id", "ood"):
            if len(rows) == count:
                break
            mean = 0.3 + 0.5 * progress if split == "id" else 0.25 + 0.3 * math.sin(math.pi * progress)
            n = 234
            correct = max(0, min(n, round(n * (mean + 0.05 * (rng.random() - 0.5)))))
            low, high = wilson(correct, n)
            rows.append((run_id, step, path, "general_points", split, "single", 1, n, correct, correct / n, low, high,
                         0.02 * rng.random(), None, 1.5 - progress + 0.1 * rng.random(), "{}", "{}",
                         30 + 10 * rng.random(), created))  # fmt: skip
    return rows


def spectra_rows(runs: list[dict[str, Any]], checkpoints: list[tuple[Any, ...]], count: int,
                 rng: random.Random) -> list[tuple[Any, ...]]:  # fmt: skip
    """Readings (4 layers x 7 modules x 2 sides) at checkpoints spread over every run's, `count` rows in all."""
    by_id = {r["id"]: r for r in runs}
    blobs = [array("f", sorted(rng.uniform(0, 20) for _ in range(SPECTRA_K))).tobytes() for _ in range(16)]
    drifts = [array("f", [rng.uniform(-0.01, 0.01) for _ in range(SPECTRA_K)]).tobytes() for _ in range(16)]
    settings = json.dumps({"k": SPECTRA_K, "method": "auto", "modules": list(MODULES), "reference_path": "x"})
    per_reading = LAYERS * len(MODULES) * 2
    rows: list[tuple[Any, ...]] = []
    for run_id, step, _, _, created, _ in spread(checkpoints, math.ceil(count / per_reading)):
        run = by_id[run_id]
        ref_run, ref_step = (run["parent_run"], run["parent_step"]) if run["parent_step"] else (run_id, 0)
        ref = f"{ref_run}@{ref_step}"
        for layer in range(LAYERS):
            for module in MODULES:
                block = "self_attn" if module in ("q", "k", "v", "o") else "mlp"
                for side in ("u", "v"):
                    if len(rows) == count:
                        return rows
                    mean = rng.uniform(1, 15)
                    rows.append((run_id, step, ref, ref_run, ref_step,
                                 f"model.layers.{layer}.{block}.{module}_proj.weight", layer, module, side,
                                 SPECTRA_K, 896, 0, mean, mean * 0.9, mean * 2.5, mean / 20, mean / 80,
                                 rng.uniform(0, 0.02), 0.3, 0.5, 0.2, 0.05, "fast", 0.1, blobs[len(rows) % 16],
                                 drifts[len(rows) % 16], 0.05, settings, created))  # fmt: skip
    return rows


def build(store: Store, size: Size) -> None:
    """Fill an empty store, one transaction per table; prints what it wrote and how long each table took."""
    conn = writer_conn(store)
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB for this connection: the indexes build in memory
    rng = random.Random(0)
    started = time.perf_counter()
    runs, quota = plan_runs(size)
    metrics = metric_rows(runs, quota, rng)
    last = last_steps(metrics)
    checkpoints = checkpoint_rows(runs, last)
    evals = eval_rows(checkpoints, size.evals, last, rng)
    spectra = spectra_rows(runs, checkpoints, size.spectra, rng)
    print(f"  generated the rows in {time.perf_counter() - started:.1f} s", flush=True)
    for table, columns, rows in (("runs", RUN_COLUMNS, [tuple(r[c] for c in RUN_COLUMNS) for r in runs]),
                                 ("checkpoints", CHECKPOINT_COLUMNS, checkpoints), ("metrics", METRIC_COLUMNS, metrics),
                                 ("evals", EVAL_COLUMNS, evals), ("spectra", SPECTRA_COLUMNS, spectra)):  # fmt: skip
        begin = time.perf_counter()
        insert(conn, table, columns, rows)
        print(f"  {table:12s} {len(rows):9,d} rows in {time.perf_counter() - begin:5.1f} s", flush=True)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@dataclass(frozen=True)
class Layout:
    """What the views are asked about, read from the store (so that a reused --db works too)."""

    big: int  # the run with the most metric rows
    root: int  # the SFT run with the most children
    polled: list[int]  # running training runs
    counts: dict[str, int]


def read_layout(conn: sqlite3.Connection) -> Layout:
    one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
    big = one("SELECT run_id FROM metrics GROUP BY run_id ORDER BY COUNT(*) DESC, run_id LIMIT 1")
    root = one("SELECT p.id FROM runs p JOIN runs c ON c.parent_run = p.id AND c.kind != 'eval' WHERE p.kind = 'sft' "
               "GROUP BY p.id ORDER BY COUNT(*) DESC, p.id LIMIT 1")  # fmt: skip
    running = "SELECT id FROM runs WHERE status = 'running' AND kind IN ('sft', 'rl') ORDER BY id LIMIT ?"
    polled = [r[0] for r in conn.execute(running, [POLL_RUNS])]
    counts = {t: one(f"SELECT COUNT(*) FROM {t}") for t in ("runs", "checkpoints", "metrics", "evals", "spectra")}
    return Layout(big, root, polled, counts)


def add_poll_rows(conn: sqlite3.Connection, runs: list[int]) -> dict[int, int]:
    """POLL_STEPS more steps of every name for each run, in one transaction; returns the last id seen before."""
    last_seen, rows = {}, []
    for run_id in runs:
        last_seen[run_id] = conn.execute("SELECT MAX(id) FROM metrics WHERE run_id = ?", [run_id]).fetchone()[0] or 0
        step, wall = conn.execute("SELECT MAX(step), MAX(wall_time) FROM metrics WHERE run_id = ?", [run_id]).fetchone()
        names = [r[0] for r in conn.execute("SELECT DISTINCT name FROM metrics WHERE run_id = ?", [run_id])]
        for k in range(1, POLL_STEPS + 1):
            rows += [(run_id, (step or 0) + k, name, 0.5, (wall or 0) + 1.5 * k) for name in names]
    insert(conn, "metrics", METRIC_COLUMNS, rows)
    return last_seen


# -- timing ---------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    view: str
    goal_ms: float | None
    old_s: list[float]
    new_s: list[float] | None = None
    same: str = ""
    error: str | None = None

    @property
    def old_ms(self) -> float:
        return statistics.median(self.old_s) * 1000

    @property
    def new_ms(self) -> float | None:
        return statistics.median(self.new_s) * 1000 if self.new_s else None


def clock(fn: Callable[[], Any]) -> tuple[float, Any]:
    begin = time.perf_counter()
    value = fn()
    return time.perf_counter() - begin, value


def compare(old: Any, new: Any) -> str:
    """Whether the new view prints the old JSON: `same JSON`, the same plus keys the new one adds, or where it first
    differs (the poll: the number of rows read)."""
    if isinstance(old, int):
        return "same rows" if old == new else f"{new} rows, old {old}"
    try:
        a, b = json.loads(old), json.loads(new)
    except (TypeError, ValueError) as exc:
        return f"not JSON ({exc})"
    if a == b:
        return "same JSON"
    added: dict[str, None] = {}
    trimmed = trim(a, b, added)
    if a == trimmed:
        return f"same JSON + keys {','.join(added)}"
    return f"differs: {difference(a, trimmed)}"


CLOCK_KEYS = ("elapsed_s",)  # a running run's: read at "now", which moves between the two readings


def trim(a: Any, b: Any, added: dict[str, None]) -> Any:
    """`b` without the dict keys `a` lacks (noted in `added`), recursively where the shapes match; a CLOCK_KEYS value
    within 5 s of the old one counts as the same."""
    if isinstance(a, dict) and isinstance(b, dict):
        added.update(dict.fromkeys(k for k in b if k not in a))
        same_clock = lambda k, v: k in CLOCK_KEYS and a[k] is not None and v is not None and abs(a[k] - v) < 5  # noqa: E731
        return {k: a[k] if same_clock(k, v) else trim(a[k], v, added) for k, v in b.items() if k in a}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [trim(x, y, added) for x, y in zip(a, b, strict=True)]
    return b


def difference(a: Any, b: Any, where: str = "$") -> str:
    """The first place where two JSON values differ, in a few words."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where} lacks {','.join(k for k in a if k not in b)}"
        return next(difference(a[k], b[k], f"{where}.{k}") for k in a if a[k] != b[k])
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(b)} items, old {len(a)}"
        return next(difference(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    a_text, b_text = str(a), str(b)
    at = next((i for i, (x, y) in enumerate(zip(a_text, b_text, strict=False)) if x != y), 0)
    cut = lambda text: ("..." if at > 10 else "") + text[max(0, at - 10) : at + 30]  # noqa: E731
    return f"{where}: {cut(b_text)!r} (old {cut(a_text)!r})"


def measure(view: str, goal_ms: float | None, old: Callable[[], Any], new: Callable[[], Any] | None,
            repeat: int) -> Result:  # fmt: skip
    """One warm-up of each, then `repeat` timed runs of each in alternating order."""
    result = Result(view, goal_ms, [])
    _, old_value = clock(old)
    if new is not None:
        try:
            _, new_value = clock(new)
            result.new_s, result.same = [], compare(old_value, new_value)
        except Exception as exc:  # the read model is being written: report, and time the old path anyway
            result.error, new = f"{type(exc).__name__}: {exc}", None
    for i in range(repeat):
        for which in ("old", "new") if i % 2 == 0 else ("new", "old"):
            if which == "old":
                result.old_s.append(clock(old)[0])
            elif new is not None and result.new_s is not None:
                result.new_s.append(clock(new)[0])
    print(f"  {view}: old {result.old_ms:.1f} ms" + (f", new {result.new_ms:.2f} ms" if result.new_ms else ""),
          flush=True)  # fmt: skip
    return result


def wall_median(command: list[str], repeat: int, cwd: Path) -> tuple[float, int]:
    """Median wall seconds of a subprocess after one warm-up, and its exit code."""
    env = {**os.environ, "HEALER_HOME": str(cwd)}
    run = lambda: subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: E731
    code = run().returncode
    times = []
    for _ in range(repeat):
        begin = time.perf_counter()
        code = run().returncode or code
        times.append(time.perf_counter() - begin)
    return statistics.median(times), code


def verdict(value: float, goal: float) -> str:
    return "PASS" if value < goal else "FAIL"


def report(results: list[Result], layout: Layout, new_missing: str | None) -> None:
    print(f"\n{'view':44s} {'old ms':>9s} {'new ms':>9s} {'old/new':>8s}  goal (new)        new vs old")
    for r in results:
        new_ms = r.new_ms
        goal = "-" if r.goal_ms is None else f"< {r.goal_ms:g} ms: "
        if r.goal_ms is not None:
            goal += verdict(new_ms, r.goal_ms) if new_ms is not None else f"n/a (old {verdict(r.old_ms, r.goal_ms)})"
        new_text = f"{new_ms:9.2f}" if new_ms is not None else f"{'error' if r.error else '-':>9s}"
        ratio = f"{r.old_ms / new_ms:8.1f}" if new_ms else f"{'-':>8s}"
        print(f"{r.view:44s} {r.old_ms:9.1f} {new_text} {ratio}  {goal:17s} {r.same}")
    for r in results:
        if r.error:
            print(f"  new {r.view}: {r.error}")
    if new_missing:
        print(f"new path: not available ({new_missing})")


READ_MODEL_INDEXES = ("metrics_run_id", "metrics_run_step", "metrics_run_seq", "metrics_seq", "runs_seq",
                      "checkpoints_seq", "evals_seq", "spectra_seq", "checkpoints_path", "runs_name",
                      "runs_after")  # fmt: skip


def today_schema_copy(conn: sqlite3.Connection, copy: Path) -> sqlite3.Connection:
    """The old path's store: the same rows, without the indexes the read model's migration added (today's schema:
    the read model's indexes would speed up the old SQL too, the poll most)."""
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    backup = sqlite3.connect(copy)
    conn.backup(backup)
    for index in READ_MODEL_INDEXES:
        backup.execute(f"DROP INDEX IF EXISTS {index}")
    backup.commit()
    backup.row_factory = sqlite3.Row
    return backup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a smoke run: 20 runs, 50k metrics, 500 evals, 5k spectra")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions per view and path (default 5)")
    parser.add_argument("--db", type=Path, help="build the store here, or reuse it if it exists")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store (its path is printed)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    size = SMALL if args.small else FULL
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="healer-read-views-"))
    path = args.db.expanduser().resolve() if args.db else work / "healer.db"
    reuse = path.exists()
    try:
        with Store(path) as store:
            if reuse:
                print(f"reusing {path}", flush=True)
            else:
                print(f"building {path} ({size.runs} runs, {size.metrics:,d} metric rows, {size.evals:,d} evals, "
                      f"{size.spectra:,d} spectra rows) ...", flush=True)  # fmt: skip
                begin = time.perf_counter()
                build(store, size)
                print(f"built in {time.perf_counter() - begin:.1f} s", flush=True)
            conn = writer_conn(store)
            layout = read_layout(conn)
            counts = ", ".join(f"{n:,d} {t}" for t, n in layout.counts.items())
            print(f"store: {counts}; big run {layout.big}, SFT root {layout.root}, {len(layout.polled)} running runs")

            new_missing = new_available()
            reader = None if new_missing else new_open(path)
            seq = None
            if reader is not None:
                try:
                    seq = new_seq(reader)
                except Exception as exc:
                    print(f"new path: changes() failed ({type(exc).__name__}: {exc}); no new poll")
            last_seen = add_poll_rows(conn, layout.polled)

            old_conn = today_schema_copy(conn, work / "old.db")
            big, root = str(layout.big), str(layout.root)
            big_rows = conn.execute("SELECT COUNT(*) FROM metrics WHERE run_id = ?", [layout.big]).fetchone()[0]
            has_new = reader is not None
            views: list[tuple[str, float | None, Callable[[], Any], Callable[[], Any] | None]] = [
                ("runs ls --json", GOAL_LISTING_MS, lambda: old_runs_ls(old_conn),
                 (lambda: new_runs_ls(reader)) if has_new else None),
                (f"runs show {big} --json (big run)", GOAL_LISTING_MS, lambda: old_runs_show(old_conn, big),
                 (lambda: new_runs_show(reader, big)) if has_new else None),
                (f"runs show {root} --json (SFT root)", GOAL_LISTING_MS, lambda: old_runs_show(old_conn, root),
                 (lambda: new_runs_show(reader, root)) if has_new else None),
                ("runs tree --json", GOAL_LISTING_MS, lambda: old_tree(old_conn),
                 (lambda: new_tree(reader)) if has_new else None),
                ("queue ls --json", GOAL_LISTING_MS, lambda: old_queue_ls(old_conn),
                 (lambda: new_queue_ls(reader)) if has_new else None),
                (f"metrics {big} --json ({big_rows:,d} rows, no goal)", None, lambda: old_metrics(old_conn, big),
                 (lambda: new_metrics(reader, layout.big)) if has_new else None),
                (f"poll: {len(layout.polled)} running runs, {POLL_STEPS * 8} new rows each", GOAL_POLL_MS,
                 lambda: old_poll(old_conn, last_seen), (lambda: new_poll(reader, seq)) if seq is not None else None),
            ]  # fmt: skip
            print(f"timing, median of {args.repeat} after one warm-up:", flush=True)
            results = [measure(view, goal, old, new, args.repeat) for view, goal, old, new in views]
            old_conn.close()
            if reader is not None:
                reader.close() if hasattr(reader, "close") else reader.__exit__(None, None, None)

        print("timing the CLI start-up ...", flush=True)
        floor, _ = wall_median([sys.executable, "-c", "pass"], args.repeat, work)
        before, _ = wall_median([sys.executable, "-c", "import sqlite_utils, typer, rich"], args.repeat, work)
        helped, code = wall_median([sys.executable, "-m", "healer", "--help"], args.repeat, work)
    finally:
        if args.keep or args.db:
            print(f"store kept: {path}")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    report(results, layout, new_missing)
    print(f"\nCLI start-up, wall, median of {args.repeat} (python alone: {floor * 1000:.0f} ms):")
    print(f"  python -c 'import sqlite_utils, typer, rich' (before): {before * 1000:6.0f} ms")
    print(f"  python -m healer --help:                               {helped * 1000:6.0f} ms"
          + ("" if code == 0 else f"  (exit code {code})"))  # fmt: skip
    print(f"  ratio before / --help: {before / helped:.2f}; goal --help < {GOAL_HELP_S:g} s: "
          f"{verdict(helped, GOAL_HELP_S)}")  # fmt: skip
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
