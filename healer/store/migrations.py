"""The store's schema, only as numbered migrations; a released migration is never edited, only followed."""

from __future__ import annotations

from sqlite_utils import Database  # imported only when a migration is due (it loads pandas)
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


@MIGRATIONS(name="0002_evals")
def _0002(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE evals (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            step INTEGER NOT NULL,            -- 0 = the model the run started from
            checkpoint_path TEXT,
            task TEXT NOT NULL,
            split TEXT NOT NULL,
            protocol TEXT NOT NULL,           -- single | feedback (up to max_attempts with the verifier's complaint)
            max_attempts INTEGER NOT NULL,
            n INTEGER NOT NULL,
            correct INTEGER NOT NULL,
            accuracy REAL NOT NULL,
            ci_low REAL NOT NULL,             -- Wilson 95 % interval
            ci_high REAL NOT NULL,
            format_error_rate REAL NOT NULL,
            mean_reward REAL,
            loss REAL,                        -- mean NLL of the reference answers (teacher-forced), per token
            outcomes TEXT NOT NULL,           -- JSON {outcome: count}
            settings TEXT NOT NULL,           -- JSON: decoding, eval seed, prompt version
            seconds REAL NOT NULL,            -- wall time of the evaluation
            created_at TEXT NOT NULL,
            UNIQUE (run_id, step, task, split, protocol, n, settings)  -- a rerun with other settings adds a row
        )
        """
    )
    db.execute(
        """
        CREATE TABLE eval_samples (
            id INTEGER PRIMARY KEY,
            eval_id INTEGER NOT NULL REFERENCES evals(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            prompt TEXT NOT NULL,
            completion TEXT NOT NULL,         -- the last attempt
            transcript TEXT,                  -- JSON list of every attempt and feedback, feedback protocol only
            outcome TEXT NOT NULL,
            reward REAL,
            correct INTEGER NOT NULL,
            attempts INTEGER NOT NULL,
            meta TEXT NOT NULL                -- JSON: what the task knows of the episode (cards, values, rule)
        )
        """
    )
    db.execute("CREATE INDEX eval_samples_eval ON eval_samples(eval_id, idx)")


@MIGRATIONS(name="0003_queue")
def _0003(db: Database) -> None:
    """The queue lives in the runs table: a run with queued = 1 waits for a worker, not for `healer run`."""
    for column in (
        "queued INTEGER NOT NULL DEFAULT 0",  # 1: for a worker to claim (healer queue add); 0: `healer run`
        "priority INTEGER NOT NULL DEFAULT 0",  # higher first, then oldest first
        "gpus INTEGER",  # GPUs asked for; NULL = the worker's default (1 on a GPU box, else 0)
        "after_run INTEGER REFERENCES runs(id)",  # start only once this run is done
        "start_ref TEXT",  # --from as given (RUN@peak-ood); resolved when a worker claims the run
        "worker TEXT",  # host:pid of the worker that claimed it
        "assigned_gpus TEXT",  # the CUDA_VISIBLE_DEVICES it was started with
        "attempts INTEGER NOT NULL DEFAULT 0",  # times a worker started it (retry starts it again)
    ):
        db.execute(f"ALTER TABLE runs ADD COLUMN {column}")
    db.execute("CREATE INDEX runs_queue ON runs(queued, status, priority)")
    db.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")  # queue.paused, ...


@MIGRATIONS(name="0004_eval_jobs_retention")
def _0004(db: Database) -> None:
    """Evaluation jobs (runs of kind eval with a parent checkpoint) and retention: train.keep = "last:N" deletes old
    checkpoints; their rows stay, marked, so lineage and evaluations still name them."""
    db.execute("ALTER TABLE checkpoints ADD COLUMN pruned_at TEXT")  # when its directory was deleted (train.keep)
    db.execute("CREATE INDEX runs_eval_jobs ON runs(parent_run, kind, status)")
    # the claim order of Store.iter_queued, over the queued runs only: a worker reads the top of a deep queue
    # without sorting it (Store names it with INDEXED BY: the planner, with no statistics, sorted every queued run)
    db.execute(
        "CREATE INDEX runs_claim_order ON runs((kind IN ('eval', 'spectra') AND parent_run IS NOT NULL) DESC, "
        "priority DESC, id) "
        "WHERE queued = 1 AND status = 'queued'"
    )


@MIGRATIONS(name="0005_spectra")
def _0005(db: Database) -> None:
    """Singular-vector rotation of checkpoints against a reference (healer spectra), and run parameters (edits)."""
    db.execute("ALTER TABLE runs ADD COLUMN params TEXT")  # JSON: what an edit run did (reference, ranks, ...)
    db.execute(
        """
        CREATE TABLE spectra (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            step INTEGER NOT NULL,
            ref TEXT NOT NULL,                -- the reference: RUN@STEP, or a directory
            ref_run INTEGER,                  -- its run and step, when it is a run's checkpoint
            ref_step INTEGER,
            param TEXT NOT NULL,              -- the state-dict key of the matrix
            layer INTEGER NOT NULL,
            module TEXT NOT NULL,             -- q, k, v, o, gate, up, down
            side TEXT NOT NULL,               -- u (left singular vectors) or v (right)
            k INTEGER NOT NULL,               -- subspace dimension, capped at the rank
            n INTEGER NOT NULL,               -- dimension of the space the subspaces live in
            forced_zero INTEGER NOT NULL,     -- max(0, 2k - n) angles that are 0 by dimension alone
            mean_angle_deg REAL NOT NULL,
            median_angle_deg REAL NOT NULL,
            max_angle_deg REAL NOT NULL,
            chordal REAL NOT NULL,            -- sqrt(sum sin^2 theta)
            chordal_norm REAL NOT NULL,       -- chordal / sqrt(k)
            sigma_rel_drift REAL NOT NULL,    -- mean |sigma_t - sigma_b| / sigma_b over the top k
            energy_diag REAL,                 -- shares of |W_t - W_b|^2_F: rescaling inside the top-k subspaces,
            energy_rotation REAL,             --   rotation inside them,
            energy_outside REAL,              --   and outside them
            gap_rel REAL,                     -- (sigma_k - sigma_k+1) / sigma_k of the checkpoint
            method TEXT NOT NULL,             -- exact, fast, exact (fast fell back)
            error_deg REAL,                   -- fast: estimated bound on the angle error
            angles BLOB NOT NULL,             -- float32 degrees, ascending
            sigma_drift BLOB NOT NULL,        -- float32 (sigma_t,i - sigma_b,i) / sigma_b,i, i <= k
            seconds REAL NOT NULL,
            settings TEXT NOT NULL,           -- JSON: k asked, method, modules
            created_at TEXT NOT NULL,
            UNIQUE (run_id, step, ref, layer, module, side)
        )
        """
    )
    db.execute("CREATE INDEX spectra_ref ON spectra(ref_run, ref_step)")


FEED_TABLES = ("runs", "checkpoints", "evals", "spectra", "metrics")  # rows the change feed numbers


@MIGRATIONS(name="0006_change_feed")
def _0006(db: Database) -> None:
    """The change feed and the read model's indexes.

    One counter, `change_seq`, goes up at every insert and update of a run, checkpoint, evaluation, spectra or
    metric row, and the row keeps the value in its `seq` column (triggers do both, so no writer can forget). A
    poller remembers the highest `seq` it saw and asks each table for `seq > it`: an index range, the same cost
    whatever the store's size. Status changes (an UPDATE), replaced spectra and re-logged metrics (upserts that keep
    their id) all show. A deleted run leaves a tombstone; a rewound run says where it was rewound to."""
    db.execute("CREATE TABLE change_seq (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)")
    db.execute("INSERT INTO change_seq (id, value) VALUES (1, 0)")
    db.execute("CREATE TABLE deleted_runs (seq INTEGER PRIMARY KEY, run_id INTEGER NOT NULL)")
    db.execute("ALTER TABLE runs ADD COLUMN rewound_to INTEGER")  # the step a resumed run's rows were cut back to
    for table in FEED_TABLES:
        db.execute(f"ALTER TABLE {table} ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
        db.execute(f"CREATE INDEX {table}_seq ON {table}(seq)")
        bump = (
            "UPDATE change_seq SET value = value + 1 WHERE id = 1; "
            f"UPDATE {table} SET seq = (SELECT value FROM change_seq WHERE id = 1) WHERE id = NEW.id;"
        )
        db.execute(f"CREATE TRIGGER {table}_seq_insert AFTER INSERT ON {table} BEGIN {bump} END")
        # the trigger's own UPDATE changes seq, so it never fires itself, even with recursive triggers on
        db.execute(
            f"CREATE TRIGGER {table}_seq_update AFTER UPDATE ON {table} WHEN NEW.seq IS OLD.seq BEGIN {bump} END"
        )
    db.execute(
        "CREATE TRIGGER runs_seq_delete AFTER DELETE ON runs BEGIN "
        "UPDATE change_seq SET value = value + 1 WHERE id = 1; "
        "INSERT INTO deleted_runs (seq, run_id) VALUES ((SELECT value FROM change_seq WHERE id = 1), OLD.id); END"
    )
    # what the views and polls look up: new rows of a run, its last step, a checkpoint by path, a run by name
    db.execute("CREATE INDEX metrics_run_id ON metrics(run_id, id)")
    db.execute("CREATE INDEX metrics_run_step ON metrics(run_id, step)")
    db.execute("CREATE INDEX metrics_run_seq ON metrics(run_id, seq)")  # a run's rows changed since a poll
    db.execute("CREATE INDEX checkpoints_path ON checkpoints(path)")
    db.execute("CREATE INDEX runs_name ON runs(name)")
    db.execute("CREATE INDEX runs_after ON runs(after_run) WHERE after_run IS NOT NULL")


@MIGRATIONS(name="0007_scale_out")
def _0007(db: Database) -> None:
    """Runs handed to an executor other than a local subprocess (Slurm), and the run-local journal they write on a
    cluster node instead of the database, which the worker that submitted them ingests."""
    for column in (
        "executor TEXT",  # NULL = a local subprocess; slurm = a Slurm job (submitit)
        "slurm_job TEXT",  # the Slurm job id
        "node TEXT",  # the node the job runs on
        "slurm_state TEXT",  # the job's state as Slurm last reported it (PENDING, RUNNING, COMPLETED, ...)
        "journal TEXT",  # the run-local append-only JSONL file the run writes on the node
        "journal_offset INTEGER NOT NULL DEFAULT 0",  # bytes of it ingested so far (complete lines only)
    ):
        db.execute(f"ALTER TABLE runs ADD COLUMN {column}")
    db.execute("CREATE INDEX runs_slurm ON runs(executor, status) WHERE executor IS NOT NULL")


@MIGRATIONS(name="0008_claim_ready")
def _0008(db: Database) -> None:
    """Claims that do not slow with the queue's depth: a queued run that waits for another run names it in
    `blocked_on`, and leaves the claim index until that run finishes or saves a checkpoint (the write that does it
    clears the column), so a worker never re-checks every blocked run on every claim."""
    db.execute("ALTER TABLE runs ADD COLUMN blocked_on INTEGER")  # the run whose finish (or checkpoint) it awaits
    db.execute("CREATE INDEX runs_blocked ON runs(blocked_on) WHERE blocked_on IS NOT NULL")
    db.execute(
        "CREATE INDEX runs_claim_ready ON runs((kind IN ('eval', 'spectra') AND parent_run IS NOT NULL) DESC, "
        "priority DESC, id) "
        "WHERE queued = 1 AND status = 'queued' AND blocked_on IS NULL"
    )
