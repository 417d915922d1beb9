"""The SQLite store: the only module with SQL, and the only channel between CLI, runs, worker and TUI."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sqlite3
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from healer.errors import HealerError
from healer.migrations import MIGRATIONS

BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction; $HEALER_DB_TIMEOUT overrides it


def busy_timeout() -> float:
    try:
        return float(os.environ.get("HEALER_DB_TIMEOUT", BUSY_TIMEOUT_S))
    except ValueError:
        raise HealerError("$HEALER_DB_TIMEOUT must be a number of seconds") from None


def describe_db_error(exc: sqlite3.Error, path: Path) -> str:
    """One line for a database failure a user can act on: a lock held too long, a full disk, a damaged file."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (f"the database {path} is locked by another process (waited {busy_timeout():g} s); nothing was written. "
                f"Try again, or see who holds it with `fuser {path}`")  # fmt: skip
    if "full" in text:
        return f"the disk holding {path} is full; nothing was written. Free some space and try again"
    if "not a database" in text or "malformed" in text:
        return f"{path} is not a healer database or is damaged ({text}); point --db or $HEALER_HOME elsewhere"
    return f"database {path}: {text}"


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)
JOB_KINDS = ("eval", "spectra")  # jobs a training run queues for each checkpoint it saves
CHECKPOINT_JOB = "(kind IN ('eval', 'spectra') AND parent_run IS NOT NULL)"  # SQL for Run.is_checkpoint_job
REWOUND_TABLES = ("metrics", "evals", "spectra")  # a run's rows by step that a resumed run writes again


def utcnow() -> str:
    """The current time as ISO 8601 in UTC, the format of every *_at column."""
    return datetime.now(UTC).isoformat(timespec="seconds")


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


def _row(cls: type, row: sqlite3.Row) -> Any:
    names = _field_names(cls)
    return cls(**{k: row[k] for k in row.keys() if k in names})  # noqa: SIM118 - iterating a Row yields values


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=busy_timeout())
        conn.execute("PRAGMA journal_mode=WAL")
    except (OSError, sqlite3.OperationalError) as exc:
        raise HealerError(
            f"cannot open the database {path}: {exc}; point --db or $HEALER_HOME at a writable directory"
        ) from None
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of the process
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Store:
    """One connection to healer.db; open one Store per process or thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.conn = _connect(self.path)
        self.db = Database(self.conn, execute_plugins=False)
        try:
            _migrate(self.db)
        except sqlite3.OperationalError as exc:
            raise HealerError(f"cannot prepare the database {self.path}: {exc}") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """Several store calls as one transaction (nested calls become savepoints): all of them land, or none."""
        return self.db.atomic()

    # -- runs -------------------------------------------------------------------------------------

    def create_run(self, *, kind: str, method: str, name: str, spec: Mapping[str, Any], **extra: Any) -> Run:
        """Insert a queued run; `extra` holds optional columns (preset_text, model_path, parent_run, ...)."""
        unknown = set(extra) - {f.name for f in fields(Run)}
        if unknown:
            raise ValueError(f"unknown run columns: {sorted(unknown)}")
        row = dict(
            kind=kind,
            method=method,
            name=name,
            status=Status.QUEUED.value,
            spec=json.dumps(spec, sort_keys=True),
            created_at=utcnow(),
            **extra,
        )
        with self.db.atomic():
            cursor = self.conn.execute(
                f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
            )
        return self.run(cursor.lastrowid)

    def update_run(self, run_id: int, **columns: Any) -> None:
        """Set columns of one run in one short transaction."""
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with self.db.atomic():
            self.conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", [*columns.values(), run_id])

    def run(self, run_id: int) -> Run:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise HealerError(f"no run with id {run_id}; `healer runs ls` lists the runs")
        return _row(Run, row)

    def find_run(self, ref: str) -> Run:
        """A run by id (`12`) or by name (the newest run with that name)."""
        ref = ref.strip()
        if ref.isdigit():
            return self.run(int(ref))
        row = self.conn.execute("SELECT * FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1", [ref]).fetchone()
        if row is None:
            raise HealerError(f"no run with id or name {ref!r}; `healer runs ls` lists the runs")
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
        """Runs started from this run's checkpoints (its evaluation jobs are not among them)."""
        rows = self.conn.execute(
            f"SELECT * FROM runs WHERE parent_run = ? AND NOT {CHECKPOINT_JOB} ORDER BY id", [run_id]
        ).fetchall()
        return [_row(Run, r) for r in rows]

    def checkpoint_jobs(self, run_id: int) -> list[Run]:
        """The jobs on a run's checkpoints, evaluations and spectra (parent_step = the step they read)."""
        rows = self.conn.execute(
            f"SELECT * FROM runs WHERE parent_run = ? AND {CHECKPOINT_JOB} ORDER BY id", [run_id]
        ).fetchall()
        return [_row(Run, r) for r in rows]

    def waiting_on(self, run_id: int) -> list[Run]:
        """Queued runs that wait for this run: `--after` it, or `--from` one of its checkpoints."""
        rows = self.conn.execute(
            "SELECT * FROM runs WHERE status = 'queued' AND queued = 1 AND (after_run = ? OR start_ref LIKE ?) "
            "ORDER BY id",
            [run_id, f"{run_id}@%"],
        ).fetchall()
        return [_row(Run, r) for r in rows]

    def pending_eval_jobs(self, run_id: int) -> int:
        """How many evaluation jobs of this run's checkpoints are queued or running."""
        row = self.conn.execute(
            "SELECT COUNT(*) FROM runs WHERE parent_run = ? AND kind = 'eval' AND status IN ('queued', 'running')",
            [run_id],
        ).fetchone()
        return row[0]

    def mark_running(self, run_id: int, *, pid: int, host: str) -> bool:
        """The run's process has begun it; False when the run was cancelled (or ended) before it could."""
        with self.db.atomic():
            cursor = self.conn.execute(
                "UPDATE runs SET status = 'running', pid = ?, host = ?, started_at = ?, heartbeat = ?, "
                "finished_at = NULL, exit_code = NULL, reason = NULL WHERE id = ? AND status IN ('queued', 'running')",
                [pid, host, utcnow(), time.time(), run_id],
            )
        return cursor.rowcount == 1

    def heartbeat(self, run_id: int) -> None:
        self.update_run(run_id, heartbeat=time.time())

    def finish_run(self, run_id: int, status: Status, *, exit_code: int | None, reason: str | None = None) -> None:
        """Record the end of a run; a run that already finished keeps its first verdict."""
        with self.db.atomic():
            self.conn.execute(
                "UPDATE runs SET status = ?, exit_code = ?, reason = ?, finished_at = ? "
                "WHERE id = ? AND status NOT IN ('done', 'failed', 'cancelled')",
                [status.value, exit_code, reason, utcnow(), run_id],
            )

    # -- the queue ------------------------------------------------------------------------------

    def queued_runs(self) -> list[Run]:
        """Runs waiting for a worker, in the order workers take them (see iter_queued)."""
        return list(self.iter_queued())

    def iter_queued(self, page: int = 32) -> Iterator[Run]:
        """Queued runs in the order workers take them: evaluation jobs first (they are short, and runs that start
        from a run's OOD peak wait for them), then priority, then age. Read a page at a time (keyset pagination, no
        statement left open), so a worker that takes the first ready run never reads a deep queue."""
        after: list[int] = []
        while True:
            job = CHECKPOINT_JOB
            where = f" AND ({job} < ? OR ({job} = ? AND (priority < ? OR (priority = ? AND id > ?))))"
            rows = self.conn.execute(
                f"SELECT *, {CHECKPOINT_JOB} AS checkpoint_job FROM runs INDEXED BY runs_claim_order "
                "WHERE queued = 1 AND status = 'queued'"
                + (where if after else "")
                + f" ORDER BY {CHECKPOINT_JOB} DESC, priority DESC, id LIMIT ?",
                [*after, page],
            ).fetchall()
            yield from (_row(Run, r) for r in rows)
            if len(rows) < page:
                return
            last = rows[-1]
            after = [last["checkpoint_job"], last["checkpoint_job"], last["priority"], last["priority"], last["id"]]

    def queued_checkpoint_jobs(self, limit: int) -> list[Run]:
        """The checkpoint jobs waiting for a worker, in the order it takes them."""
        rows = self.conn.execute(
            "SELECT * FROM runs INDEXED BY runs_claim_order WHERE queued = 1 AND status = 'queued' "
            f"AND {CHECKPOINT_JOB} "
            f"ORDER BY {CHECKPOINT_JOB} DESC, priority DESC, id LIMIT ?",
            [limit],
        ).fetchall()
        return [_row(Run, r) for r in rows]

    def has_queued(self) -> bool:
        return (
            self.conn.execute("SELECT 1 FROM runs WHERE queued = 1 AND status = 'queued' LIMIT 1").fetchone()
            is not None
        )

    def queue_runs(self) -> list[Run]:
        """Every run that went through the queue (waiting, running or finished), oldest first."""
        rows = self.conn.execute("SELECT * FROM runs WHERE queued = 1 ORDER BY id").fetchall()
        return [_row(Run, r) for r in rows]

    def claim(self, run_id: int, *, worker: str, host: str, **columns: Any) -> bool:
        """Take a queued run for a worker: one conditional UPDATE, so two workers never both get it."""
        assignments = "".join(f", {name} = ?" for name in columns)
        with self.db.atomic():
            cursor = self.conn.execute(
                "UPDATE runs SET status = 'running', worker = ?, host = ?, pid = NULL, heartbeat = ?, "
                f"started_at = NULL, attempts = attempts + 1{assignments} "
                "WHERE id = ? AND queued = 1 AND status = 'queued'",
                [worker, host, time.time(), *columns.values(), run_id],
            )
        return cursor.rowcount == 1

    def requeue(self, run_id: int) -> None:
        """Put a finished run back in the queue (retry), keeping its id, checkpoints and metrics."""
        self.update_run(run_id, status=Status.QUEUED.value, queued=1, finished_at=None, exit_code=None,
                        reason=None, pid=None, worker=None, assigned_gpus=None)  # fmt: skip

    def delete_run(self, run_id: int) -> None:
        """Remove a run that never started (it has no checkpoints, metrics or children)."""
        with self.db.atomic():
            self.conn.execute(  # finished runs that were to run after it keep their record, not the link
                "UPDATE runs SET after_run = NULL WHERE after_run = ? AND status IN ('done', 'failed', 'cancelled')",
                [run_id],
            )
            self.conn.execute("DELETE FROM runs WHERE id = ? AND status = 'queued'", [run_id])

    def setting(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return default if row is None else row[0]

    def settings(self, prefix: str = "") -> dict[str, str]:
        rows = self.conn.execute("SELECT key, value FROM settings WHERE key LIKE ? ORDER BY key", [prefix + "%"])
        return {k: v for k, v in rows.fetchall()}

    def delete_setting(self, key: str) -> None:
        with self.db.atomic():
            self.conn.execute("DELETE FROM settings WHERE key = ?", [key])

    def set_setting(self, key: str, value: str) -> None:
        with self.db.atomic():
            self.conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )

    # -- checkpoints ------------------------------------------------------------------------------

    def add_checkpoint(self, run_id: int, step: int, path: str, *, protected: bool = False) -> Checkpoint:
        with self.db.atomic():
            self.conn.execute(
                "INSERT INTO checkpoints (run_id, step, path, protected, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id, step) DO UPDATE SET path = excluded.path, pruned_at = NULL",
                [run_id, step, str(path), int(protected), utcnow()],
            )
        row = self.conn.execute("SELECT * FROM checkpoints WHERE run_id = ? AND step = ?", [run_id, step]).fetchone()
        return _checkpoint(row)

    def checkpoint_at(self, path: str) -> Checkpoint | None:
        """The registered checkpoint with this (resolved) path, if any; the newest when a path was reused."""
        row = self.conn.execute("SELECT * FROM checkpoints WHERE path = ? ORDER BY id DESC LIMIT 1", [path]).fetchone()
        return None if row is None else _checkpoint(row)

    def checkpoints(self, run_id: int, *, pruned: bool = False) -> list[Checkpoint]:
        """A run's checkpoints on disk, in step order; `pruned=True` adds those train.keep deleted."""
        sql = "SELECT * FROM checkpoints WHERE run_id = ?" + ("" if pruned else " AND pruned_at IS NULL")
        rows = self.conn.execute(sql + " ORDER BY step", [run_id]).fetchall()
        return [_checkpoint(r) for r in rows]

    def mark_pruned(self, run_id: int, step: int) -> None:
        with self.db.atomic():
            self.conn.execute(
                "UPDATE checkpoints SET pruned_at = ? WHERE run_id = ? AND step = ?", [utcnow(), run_id, step]
            )

    def protect_checkpoint(self, run_id: int, step: int, protected: bool = True) -> bool:
        """Mark a checkpoint as never to be pruned (or release it); False when the run has no such checkpoint."""
        with self.db.atomic():
            cursor = self.conn.execute(
                "UPDATE checkpoints SET protected = ? WHERE run_id = ? AND step = ?", [int(protected), run_id, step]
            )
        return cursor.rowcount == 1

    # -- metrics ----------------------------------------------------------------------------------

    def log_metrics(self, run_id: int, step: int, metrics: Mapping[str, float], wall_time: float | None = None) -> int:
        """Upsert one step's metrics in one transaction; returns the number of rows written."""
        now = time.time() if wall_time is None else wall_time
        rows = [(run_id, step, name, _finite(value), now) for name, value in metrics.items()]
        with self.db.atomic():
            self.conn.executemany(
                "INSERT INTO metrics (run_id, step, name, value, wall_time) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id, name, step) DO UPDATE SET value = excluded.value, wall_time = excluded.wall_time",
                rows,
            )
        return len(rows)

    def metrics(self, run_id: int, name: str | None = None, after_id: int = 0) -> list[Metric]:
        """Metric rows of a run in step order, optionally one name, optionally only rows newer than after_id."""
        sql = "SELECT * FROM metrics WHERE run_id = ? AND id > ?"
        params: list[Any] = [run_id, after_id]
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        rows = self.conn.execute(sql + " ORDER BY step, name", params).fetchall()
        return [_row(Metric, r) for r in rows]

    def last_metrics(self, run_id: int) -> dict[str, Metric]:
        """The latest value of every metric name of a run."""
        rows = self.conn.execute(
            "SELECT m.* FROM metrics m JOIN (SELECT name, MAX(step) AS step FROM metrics WHERE run_id = ? "
            "GROUP BY name) last ON m.name = last.name AND m.step = last.step WHERE m.run_id = ? ORDER BY m.name",
            [run_id, run_id],
        ).fetchall()
        return {r["name"]: _row(Metric, r) for r in rows}

    # -- evaluations ------------------------------------------------------------------------------

    def record_eval(self, summary: Mapping[str, Any], samples: Iterable[Mapping[str, Any]]) -> Eval:
        """Store one evaluation and its samples in one transaction, replacing one with the same key and settings."""
        row = {**summary, "created_at": utcnow()}
        key_columns = ("run_id", "step", "task", "split", "protocol", "n", "settings")
        with self.db.atomic():
            self.conn.execute(
                f"DELETE FROM evals WHERE {' AND '.join(f'{c} = ?' for c in key_columns)}",
                [row[c] for c in key_columns],
            )
            cursor = self.conn.execute(
                f"INSERT INTO evals ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
            )
            eval_id = cursor.lastrowid
            columns = ("idx", "prompt", "completion", "transcript", "outcome", "reward", "correct", "attempts", "meta")
            self.conn.executemany(
                f"INSERT INTO eval_samples (eval_id, {', '.join(columns)}) VALUES (?, {', '.join('?' * len(columns))})",
                [[eval_id, *(s[c] for c in columns)] for s in samples],
            )
        return _row(Eval, self.conn.execute("SELECT * FROM evals WHERE id = ?", [eval_id]).fetchone())

    def evals(self, run_id: int) -> list[Eval]:
        rows = self.conn.execute("SELECT * FROM evals WHERE run_id = ? ORDER BY step, split, protocol, id", [run_id])
        return [_row(Eval, r) for r in rows.fetchall()]

    def eval_samples(self, eval_id: int, *, wrong_only: bool = False) -> list[EvalSample]:
        sql = "SELECT * FROM eval_samples WHERE eval_id = ?" + (" AND correct = 0" if wrong_only else "")
        rows = self.conn.execute(sql + " ORDER BY idx", [eval_id]).fetchall()
        return [
            EvalSample(**{**{k: r[k] for k in r.keys()}, "correct": bool(r["correct"])})  # noqa: SIM118
            for r in rows
        ]

    # -- spectra ----------------------------------------------------------------------------------

    def record_spectra(self, run_id: int, step: int, ref: str, ref_run: int | None, ref_step: int | None,
                       settings: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> int:  # fmt: skip
        """Store one checkpoint's spectra against one reference in one transaction, replacing an earlier reading."""
        now, settings_json = utcnow(), json.dumps(settings, sort_keys=True)
        records = [
            [run_id, step, ref, ref_run, ref_step, *(r[c] for c in SPECTRA_COLUMNS),
             array("f", r["angles_deg"]).tobytes(), array("f", r["sigma_drift"]).tobytes(), settings_json, now]
            for r in rows
        ]  # fmt: skip
        columns = ("run_id", "step", "ref", "ref_run", "ref_step", *SPECTRA_COLUMNS, "angles", "sigma_drift",
                   "settings", "created_at")  # fmt: skip
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[3:])
        with self.db.atomic():
            self.conn.executemany(
                f"INSERT INTO spectra ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                f"ON CONFLICT (run_id, step, ref, layer, module, side) DO UPDATE SET {updates}",
                records,
            )
        return len(records)

    def spectra(self, run_id: int, step: int | None = None, ref: str | None = None) -> list[Spectrum]:
        """A run's spectra rows by step, layer, module and side; optionally one step, one reference."""
        sql, params = "SELECT * FROM spectra WHERE run_id = ?", [run_id]
        for column, value in (("step", step), ("ref", ref)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        rows = self.conn.execute(sql + " ORDER BY step, layer, module, side", params).fetchall()
        return [_row(Spectrum, r) for r in rows]

    def spectra_reference_steps(self, run_id: int) -> set[int]:
        """Steps of this run's checkpoints that some spectra were measured against."""
        rows = self.conn.execute("SELECT DISTINCT ref_step FROM spectra WHERE ref_run = ?", [run_id]).fetchall()
        return {r[0] for r in rows if r[0] is not None}

    def last_step(self, run_id: int) -> int | None:
        row = self.conn.execute("SELECT MAX(step) FROM metrics WHERE run_id = ?", [run_id]).fetchone()
        return row[0]

    def rewind(self, run_id: int, after_step: int) -> dict[str, int]:
        """Delete what a run recorded after a step (metrics, evaluations with their samples, spectra), in one
        transaction, as W&B's rewind does: a run resumed from that step trains those steps again, and its table must
        not mix two attempts. Rows at or before the step stay as they are. Returns the rows deleted, by table."""
        with self.db.atomic():
            return {
                table: self.conn.execute(
                    f"DELETE FROM {table} WHERE run_id = ? AND step > ?", [run_id, after_step]
                ).rowcount
                for table in REWOUND_TABLES
            }


def _migrate(db: Database) -> None:
    """Apply pending migrations under the write lock, so processes opening a new database at once never race."""
    if not MIGRATIONS.pending(db):
        return
    db.conn.execute("BEGIN IMMEDIATE")  # a second opener waits here (busy timeout), then finds nothing pending
    try:
        MIGRATIONS.apply(db)  # each migration runs in a savepoint of this transaction
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


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


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# -- read-only SQL for `healer sql` -------------------------------------------------------------------

_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}


def _read_only(action: int, *args: object) -> int:
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def query_read_only(path: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one SELECT on a read-only connection whose authorizer denies every write, ATTACH and PRAGMA."""
    if not path.exists():
        raise HealerError(f"no database at {path}; run something first or pass --db")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=busy_timeout())
    try:
        conn.set_authorizer(_read_only)
        cursor = conn.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        return columns, cursor.fetchall()
    except sqlite3.DatabaseError as exc:
        message = str(exc)
        if "not authorized" in message:
            message = "only read-only SELECT statements are allowed"
        raise HealerError(f"sql: {message}") from None
    except sqlite3.Warning as exc:  # e.g. "You can only execute one statement at a time."
        raise HealerError(f"sql: {exc}") from None
    finally:
        conn.close()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie (a killed child its parent has not reaped)."""
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
