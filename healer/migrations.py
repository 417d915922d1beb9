"""The store's schema, only as numbered migrations; a released migration is never edited, only followed."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATIONS = Migrations("healer")


@MIGRATIONS(name="0001_runs_checkpoints_metrics")
def _0001(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,            -- sft, rl, eval, spectra, edit
            method TEXT NOT NULL,          -- sft, grpo, rloo, ...
            name TEXT NOT NULL,
            status TEXT NOT NULL,          -- queued, running, done, failed, cancelled
            preset_path TEXT,
            preset_text TEXT,
            spec TEXT NOT NULL,            -- the resolved RunSpec as JSON
            model_path TEXT,               -- resolved local path or hub id the run starts from
            parent_run INTEGER REFERENCES runs(id),
            parent_step INTEGER,
            created_at TEXT NOT NULL,      -- ISO 8601, UTC
            started_at TEXT,
            finished_at TEXT,
            exit_code INTEGER,
            reason TEXT,                   -- why it failed or was cancelled
            out_dir TEXT,
            log_path TEXT,
            host TEXT,
            pid INTEGER,
            heartbeat REAL,                -- unix time of the last sign of life
            total_steps INTEGER,
            healer_version TEXT,
            git_commit TEXT
        )
        """
    )
    db.execute("CREATE INDEX runs_status ON runs(status)")
    db.execute("CREATE INDEX runs_parent ON runs(parent_run)")
    db.execute(
        """
        CREATE TABLE checkpoints (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            step INTEGER NOT NULL,
            path TEXT NOT NULL,
            protected INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            UNIQUE (run_id, step)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE metrics (
            id INTEGER PRIMARY KEY,        -- readers poll WHERE id > last_seen
            run_id INTEGER NOT NULL REFERENCES runs(id),
            step INTEGER NOT NULL,
            name TEXT NOT NULL,
            value REAL,                    -- NULL for NaN / inf
            wall_time REAL NOT NULL,       -- unix time, as TensorBoard writes it
            UNIQUE (run_id, name, step)    -- a resumed run overwrites, never duplicates
        )
        """
    )
