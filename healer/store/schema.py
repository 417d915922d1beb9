"""Connections, the schema's version, the vocabulary every side shares (statuses, kinds) and process liveness.

Two ways in: `connect` (read-write: WAL, busy timeout, foreign keys; migrates a new or old file) and
`connect_read_only` (`mode=ro`: never migrates, never creates the file, never writes a byte). sqlite-utils (and the
pandas it imports) loads only when a migration is due, so a read pays for neither.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from healer.errors import HealerError

BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction; $HEALER_DB_TIMEOUT overrides it
MIGRATION_SET = "healer"
LATEST_MIGRATION = "0008_claim_ready"  # tests check it is the last of store/migrations.py


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Kind(StrEnum):
    SFT = "sft"
    RL = "rl"
    EVAL = "eval"  # an evaluation job on a checkpoint, or the holder of a bare directory's evaluations
    SPECTRA = "spectra"  # a spectra job on a checkpoint
    EDIT = "edit"  # a checkpoint rebuilt by `healer spectra edit`


FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)
JOB_KINDS = (Kind.EVAL.value, Kind.SPECTRA.value)  # jobs a training run queues for each checkpoint it saves
CHECKPOINT_JOB = "(kind IN ('eval', 'spectra') AND parent_run IS NOT NULL)"  # SQL for Run.is_checkpoint_job
REWOUND_TABLES = ("metrics", "evals", "spectra")  # a run's rows by step that a resumed run writes again
MAX_DEPTH = 64  # lineage chains longer than this are cut (a guard; real chains are a few runs)

CHAIN_SQL = f"""
WITH RECURSIVE chain(id, parent_run, depth) AS (
  SELECT id, parent_run, 0 FROM runs WHERE id = ?
  UNION ALL
  SELECT r.id, r.parent_run, c.depth + 1 FROM runs r JOIN chain c ON r.id = c.parent_run WHERE c.depth < {MAX_DEPTH}
)
SELECT r.* FROM chain c JOIN runs r ON r.id = c.id ORDER BY c.depth DESC
"""  # a run and its ancestors, oldest first


def utcnow() -> str:
    """The current time as ISO 8601 in UTC, the format of every *_at column."""
    return datetime.now(UTC).isoformat(timespec="seconds")


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


def connect(path: Path) -> sqlite3.Connection:
    """A read-write connection, the schema brought up to date (a new file is created, with its folder)."""
    try:
        if str(path) != ":memory:":
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
    try:
        migrate(conn)
    except sqlite3.OperationalError as exc:
        raise HealerError(f"cannot prepare the database {path}: {exc}") from None
    return conn


def connect_read_only(path: Path, immutable: bool = False) -> sqlite3.Connection:
    """A connection that cannot write. A store with no `-wal` file has no writer and every change in its main file:
    it is opened `immutable`, so not even the `-wal`/`-shm` files a WAL reader makes appear (Reader reopens it
    normally once a writer shows up); `immutable=True` always opens it so (a copy, a read-only mount: changes in a
    `-wal` file are not seen). A file that does not exist is an empty store in memory, created nowhere."""
    if not path.exists():
        conn = connect(Path(":memory:"))
        return conn
    wal = Path(f"{path}-wal").exists()
    uri = f"{path.resolve().as_uri()}?mode=ro" + ("" if wal and not immutable else "&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout())
        conn.row_factory = sqlite3.Row
        applied = schema_version(conn)
    except sqlite3.DatabaseError as exc:
        raise HealerError(describe_db_error(exc, path)) from None
    if applied != LATEST_MIGRATION:
        conn.close()
        if applied is None:
            raise HealerError(f"{path} is not a healer database (it has no healer schema); point --db elsewhere")
        if applied > LATEST_MIGRATION:
            raise HealerError(f"{path} was written by a newer healer (schema {applied}; this one reads "
                              f"{LATEST_MIGRATION}); upgrade healer to read it")  # fmt: skip
        raise HealerError(f"{path} was written by another healer version (schema {applied}, this healer reads "
                          f"{LATEST_MIGRATION}); any command that writes, e.g. `healer db migrate`, "
                          "upgrades it")  # fmt: skip
    return conn


def schema_version(conn: sqlite3.Connection) -> str | None:
    """The newest migration applied to this database, None for a blank one."""
    try:
        row = conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY name DESC LIMIT 1", [MIGRATION_SET]
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return None if row is None else row[0]


def migrate(conn: sqlite3.Connection) -> None:
    """Apply pending migrations under the write lock, so processes opening a new database at once never race."""
    if schema_version(conn) == LATEST_MIGRATION:
        return
    from sqlite_utils import Database  # only here: it imports pandas and pyarrow

    from healer.store.migrations import MIGRATIONS

    db = Database(conn, execute_plugins=False)
    conn.execute("BEGIN IMMEDIATE")  # a second opener waits here (busy timeout), then finds nothing pending
    try:
        MIGRATIONS.apply(db)  # each migration runs in a savepoint of this transaction
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextlib.contextmanager
def atomic(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction: everything inside lands or nothing does; nested blocks become savepoints."""
    if conn.in_transaction:
        name = f"healer_{secrets.token_hex(8)}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                conn.execute(f"RELEASE SAVEPOINT {name}")
            raise
        conn.execute(f"RELEASE SAVEPOINT {name}")
        return
    conn.execute("BEGIN")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# -- processes ------------------------------------------------------------------------------------------


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


def is_run_process(pid: int, run_id: int) -> bool:
    """Whether `pid` is alive and is the process of this run (`python -m healer.train RUN`), not a reused pid."""
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
