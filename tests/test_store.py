"""The store: migrations on a blank database, upserts, verdicts, and the read-only SQL guard."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from healer.errors import HealerError
from healer.store import Status, Store, query_read_only
from healer.store.migrations import MIGRATIONS


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "healer.db")


def columns(store: Store, table: str) -> set[str]:
    return {row[1] for row in store.conn.execute(f"PRAGMA table_info({table})")}


def test_migrations_build_the_schema_on_a_blank_database(store: Store) -> None:
    assert {"run_id", "step", "name", "value", "wall_time"} <= columns(store, "metrics")
    assert {"run_id", "step", "path", "protected"} <= columns(store, "checkpoints")
    assert {
        "id",
        "kind",
        "name",
        "spec",
        "preset_text",
        "parent_run",
        "parent_step",
        "status",
        "created_at",
        "started_at",
        "finished_at",
        "exit_code",
        "log_path",
        "host",
        "healer_version",
        "git_commit",
    } <= columns(store, "runs")
    applied = [m.name for m in MIGRATIONS.applied(store.db)]
    assert applied == [m.name for m in MIGRATIONS._migrations]
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    Store(tmp_path / "a.db").close()
    again = Store(tmp_path / "a.db")
    assert MIGRATIONS.pending(again.db) == []
    assert again.conn.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()[0] == len(MIGRATIONS._migrations)


def _open(path: str) -> int:
    with Store(path) as store:
        return len(MIGRATIONS.applied(store.db))


def test_processes_opening_a_new_database_at_once_do_not_race(tmp_path: Path) -> None:
    path = str(tmp_path / "fresh.db")
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        applied = pool.map(_open, [path] * 12)
    assert applied == [len(MIGRATIONS._migrations)] * 12
    with Store(path) as store:
        assert (
            store.conn.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()[0]
            == len(applied and applied[0:1]) * applied[0]
        )


def test_metrics_upsert_never_duplicates_a_step(store: Store) -> None:
    run = store.create_run(kind="sft", method="sft", name="r", spec={})
    store.log_metrics(run.id, 10, {"loss": 2.0, "grad_norm": float("nan")})
    store.log_metrics(run.id, 10, {"loss": 1.5})  # a resumed run logs step 10 again
    store.log_metrics(run.id, 20, {"loss": 1.0})
    rows = store.metrics(run.id, "loss")
    assert [(m.step, m.value) for m in rows] == [(10, 1.5), (20, 1.0)]
    assert store.metrics(run.id, "grad_norm")[0].value is None
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute(
            "INSERT INTO metrics (run_id, step, name, value, wall_time) VALUES (?, 20, 'loss', 0, 0)", [run.id]
        )
    assert store.last_metrics(run.id)["loss"].step == 20
    assert [m.step for m in store.metrics(run.id, "loss", after_id=rows[0].id)] == [20]


def test_runs_by_id_and_name_and_unknown_ids(store: Store) -> None:
    first = store.create_run(kind="sft", method="sft", name="alpha", spec={"a": 1})
    second = store.create_run(
        kind="sft", method="sft", name="alpha", spec={"a": 2}, parent_run=first.id, parent_step=40
    )
    assert store.find_run(str(first.id)).id == first.id
    assert store.find_run("alpha").id == second.id  # the newest of that name
    assert store.children(first.id)[0].parent_step == 40
    assert second.spec_dict == {"a": 2}
    with pytest.raises(HealerError, match="no run with id 99"):
        store.run(99)
    with pytest.raises(HealerError, match="'beta'"):
        store.find_run("beta")


def test_the_first_verdict_stands(store: Store) -> None:
    run = store.create_run(kind="sft", method="sft", name="r", spec={})
    store.mark_running(run.id, pid=123, host="h")
    store.finish_run(run.id, Status.CANCELLED, exit_code=130, reason="SIGTERM")
    store.finish_run(run.id, Status.FAILED, exit_code=1, reason="later")
    final = store.run(run.id)
    assert (final.status, final.exit_code, final.reason) == ("cancelled", 130, "SIGTERM")
    assert final.finished_at is not None


def test_checkpoints_are_registered_once_per_step(store: Store) -> None:
    run = store.create_run(kind="sft", method="sft", name="r", spec={})
    store.add_checkpoint(run.id, 40, "/a")
    store.add_checkpoint(run.id, 40, "/b")
    store.add_checkpoint(run.id, 80, "/c", protected=True)
    assert [(c.step, c.path, c.protected) for c in store.checkpoints(run.id)] == [(40, "/b", False), (80, "/c", True)]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM runs",
        "DROP TABLE metrics",
        "INSERT INTO runs (kind) VALUES ('x')",
        "UPDATE runs SET name = 'x'",
        "ATTACH DATABASE '/tmp/other.db' AS other",
        "PRAGMA journal_mode=DELETE",
        "CREATE TABLE t (x)",
        "SELECT 1; DELETE FROM runs",
    ],
)
def test_sql_rejects_anything_but_reading(store: Store, sql: str) -> None:
    store.create_run(kind="sft", method="sft", name="keep", spec={})
    with pytest.raises(HealerError, match=r"^sql: "):
        query_read_only(store.path, sql)
    assert store.conn.execute("SELECT name FROM runs").fetchall()[0][0] == "keep"
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sql_reads(store: Store) -> None:
    store.create_run(kind="sft", method="sft", name="r", spec={})
    columns_, rows = query_read_only(store.path, "WITH x AS (SELECT name FROM runs) SELECT name, 1 + 1 AS two FROM x")
    assert columns_ == ["name", "two"] and rows == [("r", 2)]


def test_an_unwritable_database_path_is_one_clear_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    with pytest.raises(HealerError, match=r"cannot open the database .*file/healer\.db"):
        Store(not_a_directory / "healer.db")
    assert not_a_directory.read_text() == "x"


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc, which nobody can write")
def test_a_database_in_a_read_only_directory_is_one_clear_error() -> None:
    with pytest.raises(HealerError, match="point --db or \\$HEALER_HOME at a writable directory"):
        Store(Path("/proc/healer-test/healer.db"))
