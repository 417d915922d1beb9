"""The store: one SQLite file, the only channel between the CLI, the worker, the runs, the TUI and the exports.

The only package with SQL, in three parts:
- `schema`: connections (read-write, or read-only that never migrates or writes), the vocabulary (Status, Kind),
  migrations applied on a write open (`migrations`);
- `writes`: `Store`, the named lifecycle transitions of runs and the rows runs record;
- `views`: `Reader`, frozen views built by a fixed few set-based queries each, and the change feed a poller reads.
"""

from healer.store.records import (
    SPECTRA_COLUMNS,
    STALE_HEARTBEAT_S,
    Checkpoint,
    Eval,
    EvalSample,
    Metric,
    Run,
    Spectrum,
    process_gone,
)
from healer.store.schema import (
    CHECKPOINT_JOB,
    FINISHED,
    JOB_KINDS,
    Kind,
    Status,
    busy_timeout,
    describe_db_error,
    is_run_process,
    pid_alive,
    utcnow,
)
from healer.store.writes import Store, query_read_only

__all__ = [
    "CHECKPOINT_JOB",
    "FINISHED",
    "JOB_KINDS",
    "SPECTRA_COLUMNS",
    "STALE_HEARTBEAT_S",
    "Checkpoint",
    "Eval",
    "EvalSample",
    "Kind",
    "Metric",
    "Run",
    "Spectrum",
    "Status",
    "Store",
    "busy_timeout",
    "describe_db_error",
    "is_run_process",
    "pid_alive",
    "process_gone",
    "query_read_only",
    "utcnow",
]


def __getattr__(name: str) -> object:  # `from healer.store import Reader` without a cycle (views import the core)
    if name == "Reader":
        from healer.store.views import Reader

        return Reader
    raise AttributeError(f"module 'healer.store' has no attribute {name!r}")
