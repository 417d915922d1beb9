"""The write side of the store: named lifecycle transitions of runs, and the rows runs record (metrics,
checkpoints, evaluations, spectra). Each write is one short transaction; reads for the CLI and the TUI go through
`healer.store.views.Reader` instead."""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from healer.errors import HealerError
from healer.store.records import SPECTRA_COLUMNS, Checkpoint, Eval, EvalSample, Metric, Run, Spectrum, record, records
from healer.store.schema import CHAIN_SQL, CHECKPOINT_JOB, REWOUND_TABLES, Status, atomic, busy_timeout, connect, utcnow


class Store:
    """One connection to healer.db; open one Store per process or thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)

    @property
    def db(self) -> Any:
        """The connection as a sqlite-utils Database (migrations use it; it imports pandas, so only on demand)."""
        from sqlite_utils import Database

        return Database(self.conn, execute_plugins=False)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """Several store calls as one transaction (nested calls become savepoints): all of them land, or none."""
        return atomic(self.conn)

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
        with atomic(self.conn):
            cursor = self.conn.execute(
                f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
            )
        return self.run(cursor.lastrowid)

    def _set(self, run_id: int, **columns: Any) -> None:
        """Set columns of one run in one short transaction (the named transitions below use it)."""
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with atomic(self.conn):
            self.conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", [*columns.values(), run_id])

    def set_location(self, run_id: int, *, out_dir: str, log_path: str) -> None:
        """Where a new run writes its checkpoints and its log."""
        self._set(run_id, out_dir=out_dir, log_path=log_path)

    def mark_spawned(self, run_id: int, pid: int) -> None:
        """A worker started the run's process (the process itself then calls mark_running)."""
        self._set(run_id, pid=pid)

    def watched_by(self, run_id: int, worker: str) -> None:
        """A worker takes over watching a running run's Slurm job (its own worker stopped stamping)."""
        self._set(run_id, worker=worker)

    def slurm_prepared(self, run_id: int, journal: str) -> None:
        """A run about to be submitted to Slurm: it writes to `journal` (from its start), not to the store."""
        self._set(run_id, executor="slurm", journal=journal, journal_offset=0)

    def slurm_submitted(self, run_id: int, job_id: str, log_path: str) -> None:
        """Slurm accepted the run's job; it is pending until sacct says otherwise."""
        self._set(run_id, slurm_job=job_id, slurm_state="PENDING", log_path=log_path)

    def slurm_observed(self, run_id: int, state: str, node: str | None, alive: bool) -> None:
        """What sacct said of the run's job: its state, the node it runs on, and a heartbeat while it lives."""
        columns: dict[str, Any] = {"slurm_state": state}
        if node:
            columns["node"] = node
        if alive:
            columns["heartbeat"] = time.time()
        self._set(run_id, **columns)

    def set_priority(self, run_id: int, priority: int) -> bool:
        """A waiting run's priority (higher runs first); False when the run is no longer waiting."""
        with atomic(self.conn):
            cursor = self.conn.execute(
                "UPDATE runs SET priority = ? WHERE id = ? AND status = 'queued'", [priority, run_id]
            )
        return cursor.rowcount == 1

    def leave_queue(self, run_id: int) -> None:
        """A finished run leaves the queue's list; its record and data stay."""
        self._set(run_id, queued=0)

    def run(self, run_id: int) -> Run:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise HealerError(f"no run with id {run_id}; `healer runs ls` lists the runs")
        return record(Run, row)

    def chain(self, run_id: int) -> list[Run]:
        """The run and its ancestors, oldest first (one recursive query)."""
        return records(Run, self.conn.execute(CHAIN_SQL, [run_id]).fetchall())

    def find_run(self, ref: str) -> Run:
        """A run by id (`12`) or by name (the newest run with that name)."""
        ref = ref.strip()
        if ref.isdigit():
            return self.run(int(ref))
        row = self.conn.execute("SELECT * FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1", [ref]).fetchone()
        if row is None:
            raise HealerError(f"no run with id or name {ref!r}; `healer runs ls` lists the runs")
        return record(Run, row)

    def runs(self, status: Iterable[str] | None = None) -> list[Run]:
        if status is None:
            rows = self.conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
        else:
            wanted = list(status)
            marks = ", ".join("?" * len(wanted))
            rows = self.conn.execute(f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY id", wanted).fetchall()
        return records(Run, rows)

    def children(self, run_id: int) -> list[Run]:
        """Runs started from this run's checkpoints (its evaluation jobs are not among them)."""
        rows = self.conn.execute(
            f"SELECT * FROM runs WHERE parent_run = ? AND NOT {CHECKPOINT_JOB} ORDER BY id", [run_id]
        ).fetchall()
        return records(Run, rows)

    def checkpoint_jobs(self, run_id: int) -> list[Run]:
        """The jobs on a run's checkpoints, evaluations and spectra (parent_step = the step they read)."""
        rows = self.conn.execute(
            f"SELECT * FROM runs WHERE parent_run = ? AND {CHECKPOINT_JOB} ORDER BY id", [run_id]
        ).fetchall()
        return records(Run, rows)

    def waiting_on(self, run_id: int) -> list[Run]:
        """Queued runs that wait for this run: `--after` it, or `--from` one of its checkpoints."""
        rows = self.conn.execute(
            "SELECT * FROM runs WHERE status = 'queued' AND queued = 1 AND (after_run = ? OR start_ref LIKE ?) "
            "ORDER BY id",
            [run_id, f"{run_id}@%"],
        ).fetchall()
        return records(Run, rows)

    def pending_eval_jobs(self, run_id: int) -> int:
        """How many evaluation jobs of this run's checkpoints are queued or running."""
        row = self.conn.execute(
            "SELECT COUNT(*) FROM runs WHERE parent_run = ? AND kind = 'eval' AND status IN ('queued', 'running')",
            [run_id],
        ).fetchone()
        return row[0]

    def mark_running(self, run_id: int, *, pid: int, host: str) -> bool:
        """The run's process has begun it; False when the run was cancelled (or ended) before it could."""
        with atomic(self.conn):
            cursor = self.conn.execute(
                "UPDATE runs SET status = 'running', pid = ?, host = ?, started_at = ?, heartbeat = ?, "
                "finished_at = NULL, exit_code = NULL, reason = NULL WHERE id = ? AND status IN ('queued', 'running')",
                [pid, host, utcnow(), time.time(), run_id],
            )
        return cursor.rowcount == 1

    def heartbeat(self, run_id: int) -> None:
        self._set(run_id, heartbeat=time.time())

    def finish_run(self, run_id: int, status: Status, *, exit_code: int | None, reason: str | None = None) -> None:
        """Record the end of a run; a run that already finished keeps its first verdict. Queued runs blocked on it
        become claimable again (a worker then checks what they wait for)."""
        with atomic(self.conn):
            self.conn.execute(
                "UPDATE runs SET status = ?, exit_code = ?, reason = ?, finished_at = ? "
                "WHERE id = ? AND status NOT IN ('done', 'failed', 'cancelled')",
                [status.value, exit_code, reason, utcnow(), run_id],
            )
            self.conn.execute("UPDATE runs SET blocked_on = NULL WHERE blocked_on = ?", [run_id])

    def cancel(self, run_id: int, reason: str) -> None:
        """Cancel a run (before it started, or after its process was stopped); a finished run keeps its verdict."""
        self.finish_run(run_id, Status.CANCELLED, exit_code=None, reason=reason)

    # -- the queue ------------------------------------------------------------------------------

    def queued_runs(self) -> list[Run]:
        """Runs waiting for a worker, in the order workers take them (see iter_queued)."""
        return list(self.iter_queued())

    def iter_queued(self, page: int = 32, unblocked: bool = False) -> Iterator[Run]:
        """Queued runs in the order workers take them: evaluation jobs first (they are short, and runs that start
        from a run's OOD peak wait for them), then priority, then age. Read a page at a time (keyset pagination, no
        statement left open), so a worker that takes the first ready run never reads a deep queue; `unblocked`:
        only those not blocked on a run that has yet to finish or save (a worker's claim reads these)."""
        after: list[int] = []
        index, blocked = ("runs_claim_ready", " AND blocked_on IS NULL") if unblocked else ("runs_claim_order", "")
        while True:
            job = CHECKPOINT_JOB
            where = f" AND ({job} < ? OR ({job} = ? AND (priority < ? OR (priority = ? AND id > ?))))"
            rows = self.conn.execute(
                f"SELECT *, {CHECKPOINT_JOB} AS checkpoint_job FROM runs INDEXED BY {index} "
                f"WHERE queued = 1 AND status = 'queued'{blocked}"
                + (where if after else "")
                + f" ORDER BY {CHECKPOINT_JOB} DESC, priority DESC, id LIMIT ?",
                [*after, page],
            ).fetchall()
            yield from (record(Run, r) for r in rows)
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
        return records(Run, rows)

    def has_queued(self) -> bool:
        return (
            self.conn.execute("SELECT 1 FROM runs WHERE queued = 1 AND status = 'queued' LIMIT 1").fetchone()
            is not None
        )

    def queue_runs(self) -> list[Run]:
        """Every run that went through the queue (waiting, running or finished), oldest first."""
        rows = self.conn.execute("SELECT * FROM runs WHERE queued = 1 ORDER BY id").fetchall()
        return records(Run, rows)

    def claim(self, run_id: int, *, worker: str, host: str, **columns: Any) -> bool:
        """Take a queued run for a worker: one conditional UPDATE, so two workers never both get it."""
        assignments = "".join(f", {name} = ?" for name in columns)
        with atomic(self.conn):
            cursor = self.conn.execute(
                "UPDATE runs SET status = 'running', worker = ?, host = ?, pid = NULL, heartbeat = ?, "
                f"started_at = NULL, attempts = attempts + 1{assignments} "
                "WHERE id = ? AND queued = 1 AND status = 'queued'",
                [worker, host, time.time(), *columns.values(), run_id],
            )
        return cursor.rowcount == 1

    def block(self, run_id: int, on: int, step: int | None = None) -> bool:
        """Take a queued run out of the claims until run `on` finishes (or saves a checkpoint), if `on` has yet to
        finish (and to save `step`): checked in the same statement, so a finish that lands first is never missed."""
        saved = " AND NOT EXISTS (SELECT 1 FROM checkpoints WHERE run_id = ? AND step = ?)" if step is not None else ""
        with atomic(self.conn):
            cursor = self.conn.execute(
                "UPDATE runs SET blocked_on = ? WHERE id = ? AND status = 'queued' AND EXISTS (SELECT 1 FROM runs d "
                f"WHERE d.id = ? AND d.status NOT IN ('done', 'failed', 'cancelled')){saved}",
                [on, run_id, on, *([on, step] if step is not None else [])],
            )
        return cursor.rowcount == 1

    def requeue(self, run_id: int) -> None:
        """Put a finished run back in the queue (retry), keeping its id, checkpoints and metrics."""
        self._set(run_id, status=Status.QUEUED.value, queued=1, finished_at=None, exit_code=None, reason=None,
                  pid=None, worker=None, assigned_gpus=None, executor=None, slurm_job=None, slurm_state=None,
                  node=None, blocked_on=None)  # fmt: skip

    def delete_run(self, run_id: int) -> None:
        """Remove a run that never started (it has no checkpoints, metrics or children)."""
        with atomic(self.conn):
            self.conn.execute(  # finished runs that were to run after it keep their record, not the link
                "UPDATE runs SET after_run = NULL WHERE after_run = ? AND status IN ('done', 'failed', 'cancelled')",
                [run_id],
            )
            self.conn.execute("DELETE FROM runs WHERE id = ? AND status = 'queued'", [run_id])
            self.conn.execute("UPDATE runs SET blocked_on = NULL WHERE blocked_on = ?", [run_id])  # checked again

    def delete_finished_run(self, run_id: int) -> int:
        """Remove a finished run and everything recorded under it (metrics, checkpoints, evaluations with their
        samples, spectra, its checkpoint jobs) in one transaction; returns the rows removed. The caller checks that
        no run started from it or waits for it."""
        removed = 0
        with atomic(self.conn):
            self.conn.execute(
                "UPDATE runs SET after_run = NULL WHERE after_run = ? AND status IN ('done', 'failed', 'cancelled')",
                [run_id],
            )
            statements = (
                "DELETE FROM eval_samples WHERE eval_id IN (SELECT id FROM evals WHERE run_id = ?)",
                "DELETE FROM evals WHERE run_id = ?",
                "DELETE FROM metrics WHERE run_id = ?",
                "DELETE FROM spectra WHERE run_id = ?",
                "DELETE FROM checkpoints WHERE run_id = ?",
                f"DELETE FROM runs WHERE parent_run = ? AND {CHECKPOINT_JOB} AND status IN ('done', 'failed', "
                "'cancelled')",
                "DELETE FROM runs WHERE id = ? AND status IN ('done', 'failed', 'cancelled')",
            )
            for sql in statements:
                removed += self.conn.execute(sql, [run_id]).rowcount
            self.conn.execute("UPDATE runs SET blocked_on = NULL WHERE blocked_on = ?", [run_id])
        return removed

    def setting(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return default if row is None else row[0]

    def settings(self, prefix: str = "") -> dict[str, str]:
        rows = self.conn.execute("SELECT key, value FROM settings WHERE key LIKE ? ORDER BY key", [prefix + "%"])
        return {k: v for k, v in rows.fetchall()}

    def delete_setting(self, key: str) -> None:
        with atomic(self.conn):
            self.conn.execute("DELETE FROM settings WHERE key = ?", [key])

    def set_setting(self, key: str, value: str) -> None:
        with atomic(self.conn):
            self.conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )

    # -- checkpoints ------------------------------------------------------------------------------

    def add_checkpoint(self, run_id: int, step: int, path: str, *, protected: bool = False) -> Checkpoint:
        with atomic(self.conn):
            self.conn.execute(
                "INSERT INTO checkpoints (run_id, step, path, protected, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id, step) DO UPDATE SET path = excluded.path, pruned_at = NULL",
                [run_id, step, str(path), int(protected), utcnow()],
            )
            self.conn.execute("UPDATE runs SET blocked_on = NULL WHERE blocked_on = ?", [run_id])  # RUN@STEP waits
        row = self.conn.execute("SELECT * FROM checkpoints WHERE run_id = ? AND step = ?", [run_id, step]).fetchone()
        return record(Checkpoint, row)

    def checkpoint_at(self, path: str) -> Checkpoint | None:
        """The registered checkpoint with this (resolved) path, if any; the newest when a path was reused."""
        row = self.conn.execute("SELECT * FROM checkpoints WHERE path = ? ORDER BY id DESC LIMIT 1", [path]).fetchone()
        return None if row is None else record(Checkpoint, row)

    def checkpoints(self, run_id: int, *, pruned: bool = False) -> list[Checkpoint]:
        """A run's checkpoints on disk, in step order; `pruned=True` adds those train.keep deleted."""
        sql = "SELECT * FROM checkpoints WHERE run_id = ?" + ("" if pruned else " AND pruned_at IS NULL")
        rows = self.conn.execute(sql + " ORDER BY step", [run_id]).fetchall()
        return records(Checkpoint, rows)

    def mark_pruned(self, run_id: int, step: int) -> None:
        with atomic(self.conn):
            self.conn.execute(
                "UPDATE checkpoints SET pruned_at = ? WHERE run_id = ? AND step = ?", [utcnow(), run_id, step]
            )

    def protect_checkpoint(self, run_id: int, step: int, protected: bool = True) -> bool:
        """Mark a checkpoint as never to be pruned (or release it); False when the run has no such checkpoint."""
        with atomic(self.conn):
            cursor = self.conn.execute(
                "UPDATE checkpoints SET protected = ? WHERE run_id = ? AND step = ?", [int(protected), run_id, step]
            )
        return cursor.rowcount == 1

    # -- metrics ----------------------------------------------------------------------------------

    def log_metrics(self, run_id: int, step: int, metrics: Mapping[str, float], wall_time: float | None = None) -> int:
        """Upsert one step's metrics in one transaction; returns the number of rows written."""
        now = time.time() if wall_time is None else wall_time
        rows = [(run_id, step, name, _finite(value), now) for name, value in metrics.items()]
        with atomic(self.conn):
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
        return records(Metric, rows)

    def last_metrics(self, run_id: int) -> dict[str, Metric]:
        """The latest value of every metric name of a run."""
        rows = self.conn.execute(
            "SELECT m.* FROM metrics m JOIN (SELECT name, MAX(step) AS step FROM metrics WHERE run_id = ? "
            "GROUP BY name) last ON m.name = last.name AND m.step = last.step WHERE m.run_id = ? ORDER BY m.name",
            [run_id, run_id],
        ).fetchall()
        return {r["name"]: record(Metric, r) for r in rows}

    # -- evaluations ------------------------------------------------------------------------------

    def record_eval(self, summary: Mapping[str, Any], samples: Iterable[Mapping[str, Any]]) -> Eval:
        """Store one evaluation and its samples in one transaction, replacing one with the same key and settings."""
        row = {**summary, "created_at": utcnow()}
        key_columns = ("run_id", "step", "task", "split", "protocol", "n", "settings")
        with atomic(self.conn):
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
        return record(Eval, self.conn.execute("SELECT * FROM evals WHERE id = ?", [eval_id]).fetchone())

    def evals(self, run_id: int) -> list[Eval]:
        rows = self.conn.execute("SELECT * FROM evals WHERE run_id = ? ORDER BY step, split, protocol, id", [run_id])
        return records(Eval, rows.fetchall())

    def eval_samples(self, eval_id: int, *, wrong_only: bool = False) -> list[EvalSample]:
        sql = "SELECT * FROM eval_samples WHERE eval_id = ?" + (" AND correct = 0" if wrong_only else "")
        rows = self.conn.execute(sql + " ORDER BY idx", [eval_id]).fetchall()
        return records(EvalSample, rows)

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
        with atomic(self.conn):
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
        return records(Spectrum, rows)

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
        with atomic(self.conn):
            deleted = {
                table: self.conn.execute(
                    f"DELETE FROM {table} WHERE run_id = ? AND step > ?", [run_id, after_step]
                ).rowcount
                for table in REWOUND_TABLES
            }
            self.conn.execute("UPDATE runs SET rewound_to = ? WHERE id = ?", [after_step, run_id])  # feeds the TUI
        return deleted


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
