"""A run's journal: what a run on a cluster node records, as an append-only JSONL file beside its checkpoints.

SQLite over NFS is unsafe for concurrent writers, so a run that a Slurm job executes never opens the database. Its
process reads a snapshot of the store taken when the job was submitted (copied into memory), and every write it
makes lands in that copy and, as one JSON line flushed at once, in the journal. The worker that submitted the job
ingests the journal into the store while the job runs and once more when it ends:

- idempotently: every record is an upsert by its natural key (run, name, step; run, step; an evaluation's key), a
  rewind is replayed in order, so ingesting a file twice, or from the start after a crash, changes nothing;
- only complete lines: a torn last line (the job is writing it, or died mid-write) waits until it is complete; the
  ingested byte offset is kept in the run's row, so each poll reads only what is new;
- the run's status stays the worker's: a job that Slurm requeues or preempts ends one attempt and begins another,
  so `finished` records are the attempts' own words, and the run's verdict is given when Slurm says the job ended.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from healer.store.records import Checkpoint, Eval, Run
from healer.store.schema import Status, atomic, utcnow
from healer.store.writes import Store

SNAPSHOT_TABLES = ("runs", "checkpoints", "settings")  # whole; a run's own metrics, evals, spectra are added
RUN_TABLES = ("metrics", "evals", "spectra")


def take_snapshot(store: Store, run_id: int, path: Path) -> Path:
    """A small copy of the store for a run that executes elsewhere: every run, checkpoint and setting (lineage,
    starting points, references), and this run's own metrics, evaluations and spectra (a resumed run checks what
    it measured), without the other runs' rows or any evaluation samples. Written aside and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    Store(partial).close()  # the schema, migrated
    conn = store.conn
    conn.execute("ATTACH DATABASE ? AS snap", [str(partial)])
    try:
        with atomic(conn):
            for table in SNAPSHOT_TABLES:
                conn.execute(f"INSERT INTO snap.{table} SELECT * FROM main.{table}")
            for table in RUN_TABLES:
                conn.execute(f"INSERT INTO snap.{table} SELECT * FROM main.{table} WHERE run_id = ?", [run_id])
    finally:
        conn.execute("DETACH DATABASE snap")
    os.replace(partial, path)
    return path


class JournalStore(Store):
    """The store as a run on a cluster node sees it: the snapshot in memory, with the journal written so far
    replayed on top (a requeued job resumes from what its first attempt recorded), every write also appended to the
    journal. Reads answer from memory; nothing touches the database file."""

    def __init__(self, snapshot: Path | str, journal: Path | str) -> None:
        super().__init__(":memory:")
        source = sqlite3.connect(f"{Path(snapshot).resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            source.backup(self.conn)
        finally:
            source.close()
        self.path = Path(snapshot)
        self.journal_path = Path(journal)
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        for record in read_records(self.journal_path)[0]:
            apply(self, record, on_node=True)
        self._file: IO[str] = open(self.journal_path, "a", encoding="utf-8")  # noqa: SIM115 (held for the run)
        if self.journal_path.stat().st_size and not _ends_with_newline(self.journal_path):
            self._file.write("\n")  # an attempt that died mid-line: that torn line stays alone, and is skipped

    def close(self) -> None:
        self._file.close()
        super().close()

    def _append(self, op: str, **fields: Any) -> None:
        self._file.write(json.dumps({"op": op, **fields}, separators=(",", ":"), default=_plain) + "\n")
        self._file.flush()

    # -- the writes a run makes, each to memory and to the journal ---------------------------------------------

    def mark_running(self, run_id: int, *, pid: int, host: str) -> bool:
        attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        self._append("running", run=run_id, pid=pid, host=host, at=utcnow(), attempt=attempt)
        apply(self, {"op": "running", "run": run_id, "pid": pid, "host": host, "at": utcnow()}, on_node=True)
        return True

    def heartbeat(self, run_id: int) -> None:
        """The worker stamps a run it watches through Slurm; the node has nothing to stamp."""

    def finish_run(self, run_id: int, status: Status, *, exit_code: int | None, reason: str | None = None) -> None:
        self._append("finished", run=run_id, status=str(status), exit_code=exit_code, reason=reason, at=utcnow())
        super().finish_run(run_id, status, exit_code=exit_code, reason=reason)

    def log_metrics(self, run_id: int, step: int, metrics: Mapping[str, float], wall_time: float | None = None) -> int:
        written = super().log_metrics(run_id, step, metrics, wall_time)
        self._append("metrics", run=run_id, step=step, values=dict(metrics), wall_time=wall_time)
        return written

    def add_checkpoint(self, run_id: int, step: int, path: str, *, protected: bool = False) -> Checkpoint:
        checkpoint = super().add_checkpoint(run_id, step, path, protected=protected)
        self._append("checkpoint", run=run_id, step=step, path=str(path), protected=protected)
        return checkpoint

    def mark_pruned(self, run_id: int, step: int) -> None:
        super().mark_pruned(run_id, step)
        self._append("pruned", run=run_id, step=step)

    def record_eval(self, summary: Mapping[str, Any], samples: Iterable[Mapping[str, Any]]) -> Eval:
        samples = [dict(s) for s in samples]
        stored = super().record_eval(summary, samples)
        self._append("eval", run=summary["run_id"], summary=dict(summary), samples=samples)
        return stored

    def record_spectra(self, run_id: int, step: int, ref: str, ref_run: int | None, ref_step: int | None,
                       settings: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> int:  # fmt: skip
        rows = [dict(r) for r in rows]
        written = super().record_spectra(run_id, step, ref, ref_run, ref_step, settings, rows)
        self._append("spectra", run=run_id, step=step, ref=ref, ref_run=ref_run, ref_step=ref_step,
                     settings=dict(settings), rows=rows)  # fmt: skip
        return written

    def rewind(self, run_id: int, after_step: int) -> dict[str, int]:
        rewound = super().rewind(run_id, after_step)
        self._append("rewind", run=run_id, after_step=after_step)
        return rewound

    def create_run(self, *, kind: str, method: str, name: str, spec: Mapping[str, Any], **extra: Any) -> Run:
        """A checkpoint job the run queues (eval.jobs = "queue"): recorded for the worker, which queues it."""
        run = super().create_run(kind=kind, method=method, name=name, spec=spec, **extra)
        if run.is_checkpoint_job:
            self._append("job", run=run.parent_run, kind=kind, step=run.parent_step, path=run.model_path,
                         spec=dict(spec))  # fmt: skip
        return run


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (spectra rows, evaluation figures) as JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_records(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int, int]:
    """The complete records after byte `offset`: (records, the offset after the last complete line, lines that
    were complete but unreadable). A last line without its newline is not complete yet and is left for later."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset, 0
    end = data.rfind(b"\n") + 1  # 0 when no line is complete
    records, bad = [], 0
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1  # a line torn by an attempt that died, then closed by the next attempt's newline
            continue
        if isinstance(record, dict) and "op" in record:
            records.append(record)
        else:
            bad += 1
    return records, offset + end, bad


def apply(store: Store, record: Mapping[str, Any], *, on_node: bool = False) -> None:
    """One journal record into a store: the node's memory copy (`on_node`), or the database (ingestion). Each is
    an upsert or a replace by key, so applying a record again leaves the same rows."""
    op, run_id = record["op"], int(record["run"])
    if op == "metrics":
        Store.log_metrics(store, run_id, record["step"], record["values"], record.get("wall_time"))
    elif op == "checkpoint":
        Store.add_checkpoint(store, run_id, record["step"], record["path"], protected=bool(record.get("protected")))
    elif op == "pruned":
        Store.mark_pruned(store, run_id, record["step"])
    elif op == "eval":
        Store.record_eval(store, record["summary"], record["samples"])
    elif op == "spectra":
        Store.record_spectra(store, run_id, record["step"], record["ref"], record["ref_run"], record["ref_step"],
                             record["settings"], record["rows"])  # fmt: skip
    elif op == "rewind":
        Store.rewind(store, run_id, record["after_step"])
    elif op == "running":
        # an attempt began: on the node the run is running again (a requeued job); in the database the worker has
        # it running already, and learns where and since when
        status = ", status = 'running', finished_at = NULL, exit_code = NULL, reason = NULL" if on_node else ""
        with atomic(store.conn):
            store.conn.execute(
                f"UPDATE runs SET pid = ?, host = ?, node = ?, started_at = ?{status} WHERE id = ?",
                [record["pid"], record["host"], record["host"], record["at"], run_id],
            )
    elif op == "finished":
        if on_node:
            Store.finish_run(store, run_id, Status(record["status"]), exit_code=record["exit_code"],
                             reason=record["reason"])  # fmt: skip
        # in the database the worker gives the verdict when Slurm says the job ended (see `outcome`)
    elif op == "job" and not on_node:  # on the node the job stays in memory; the worker queues it for real
        from healer.queue import enqueue_job

        enqueue_job(store, store.run(run_id), record["step"], record["path"], record["kind"], spec=record["spec"])


@dataclass(frozen=True)
class Ingested:
    records: int  # applied this time
    offset: int  # bytes of the file ingested, after this time
    unreadable: int  # complete lines that were not records (torn by an attempt that died), skipped


def ingest(store: Store, run: Run, path: Path | str | None = None, *, from_start: bool = False) -> Ingested:
    """Apply what a run's journal holds beyond what was ingested before (all of it with `from_start`), in one
    transaction with the new offset, so a crash in between ingests nothing twice and loses nothing. Records about
    other runs than this one and its checkpoint jobs are refused."""
    path = Path(path or run.journal or "")
    offset = 0 if from_start else run.journal_offset
    records, end, bad = read_records(path, offset)
    allowed = {run.id, run.parent_run} if run.is_checkpoint_job else {run.id}  # a job writes under its run
    with store.transaction():
        for record in records:
            if int(record.get("run", -1)) not in allowed:
                raise ValueError(f"{path}: a record about run {record.get('run')} in the journal of run {run.id}")
            apply(store, record)
        store.conn.execute("UPDATE runs SET journal_offset = ? WHERE id = ?", [max(end, run.journal_offset), run.id])
    return Ingested(len(records), end, bad)


@dataclass(frozen=True)
class Outcome:
    """How the last attempt in a journal ended, in its own words (None fields: it did not get to say)."""

    status: Status | None = None
    exit_code: int | None = None
    reason: str | None = None
    attempts: int = 0


def outcome(path: Path | str | None) -> Outcome:
    """The last attempt's `finished` record, if that attempt wrote one (one killed outright did not)."""
    if not path:
        return Outcome()
    records, _, _ = read_records(Path(path))
    last: Outcome = Outcome()
    attempts = 0
    for record in records:
        if record["op"] == "running":
            attempts += 1
            last = Outcome(attempts=attempts)
        elif record["op"] == "finished":
            last = Outcome(Status(record["status"]), record.get("exit_code"), record.get("reason"), attempts)
    return last
