"""The read model: views cost a fixed few queries whatever the number of runs, every read uses an index, a Reader
never writes a byte, and the change feed reports every kind of change a dashboard must redraw for."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from healer.stats import wilson
from healer.store import Status, Store
from healer.store.schema import LATEST_MIGRATION
from healer.store.views import Reader, to_json, to_plain

MODULES = ("q_proj", "v_proj")


def _eval(store: Store, run_id: int, step: int, split: str, correct: int, n: int = 50) -> None:
    low, high = wilson(correct, n)
    summary = {"run_id": run_id, "step": step, "checkpoint_path": None, "task": "card_sum", "split": split,
               "protocol": "single", "max_attempts": 1, "n": n, "correct": correct, "accuracy": correct / n,
               "ci_low": low, "ci_high": high, "format_error_rate": 0.0, "mean_reward": None, "loss": 0.5,
               "outcomes": "{}", "settings": "{}", "seconds": 1.0}  # fmt: skip
    samples = [{"idx": i, "prompt": "p", "completion": "c", "transcript": None, "outcome": "correct",
                "reward": None, "correct": i < correct, "attempts": 1, "meta": "{}"} for i in range(n)]  # fmt: skip
    store.record_eval(summary, samples)


def _spectra(store: Store, run_id: int, step: int, angle: float = 1.0) -> None:
    rows = [{"param": f"model.layers.{layer}.{module}.weight", "layer": layer, "module": module, "side": side,
             "k": 4, "n": 16, "forced_zero": 0, "mean_angle_deg": angle + layer, "median_angle_deg": angle,
             "max_angle_deg": 2 * angle, "chordal": 0.1, "chordal_norm": 0.05, "sigma_rel_drift": 0.001,
             "energy_diag": None, "energy_rotation": None, "energy_outside": None, "gap_rel": None, "method": "exact",
             "error_deg": None, "seconds": 0.0, "angles_deg": [angle] * 4, "sigma_drift": [0.0] * 4}
            for layer in range(2) for module in MODULES for side in ("u", "v")]  # fmt: skip
    store.record_spectra(run_id, step, "start", run_id, 0, {"k": 4}, rows)


def fill(store: Store, families: int, root: Path) -> dict[str, int]:
    """`families` SFT runs, each with metrics, checkpoints, evaluations and spectra, an RL run from its OOD peak, an
    evaluation job and a queued run waiting on it: 4 runs per family. Returns ids of the first family by role."""
    ids: dict[str, int] = {}
    for f in range(families):
        sft = store.create_run(kind="sft", method="sft", name=f"sft-{f}", spec={"model": {"path": "m"}},
                               total_steps=30, queued=1)  # fmt: skip
        store.claim(sft.id, worker="w:1", host="elsewhere")
        store.mark_running(sft.id, pid=1, host="elsewhere")
        for step in range(1, 31):
            store.log_metrics(sft.id, step, {"loss": 2.0 / step, "learning_rate": 1e-4, "grad_norm": 1.0})
        for step in (0, 10, 20, 30):
            if step:
                path = root / f"sft-{f}" / f"checkpoint-{step}"
                path.mkdir(parents=True)
                (path / "config.json").write_text("{}")
                (path / "tokenizer_config.json").write_text("{}")
                store.add_checkpoint(sft.id, step, str(path))
            _eval(store, sft.id, step, "id", 10 + step)
            _eval(store, sft.id, step, "ood", 20 - abs(step - 10) // 2)
            _spectra(store, sft.id, step, angle=step / 10)
        store.finish_run(sft.id, Status.DONE, exit_code=0)
        rl = store.create_run(kind="rl", method="grpo", name=f"rl-{f}", spec={}, parent_run=sft.id, parent_step=10,
                              total_steps=5)  # fmt: skip
        for step in range(1, 6):
            store.log_metrics(rl.id, step, {"loss": 0.1, "reward": step / 5})
        _eval(store, rl.id, 0, "ood", 20)
        _eval(store, rl.id, 5, "ood", 24)
        store.finish_run(rl.id, Status.DONE, exit_code=0)
        job = store.create_run(kind="eval", method="eval", name=f"eval {sft.id}@30", spec={}, parent_run=sft.id,
                               parent_step=30, queued=1)  # fmt: skip
        waiting = store.create_run(kind="rl", method="grpo", name=f"later-{f}", spec={}, parent_run=sft.id,
                                   queued=1, start_ref=f"{sft.id}@peak-ood", after_run=rl.id)  # fmt: skip
        if f == 0:
            ids = {"sft": sft.id, "rl": rl.id, "job": job.id, "waiting": waiting.id}
    return ids


def count_statements(reader: Reader, view: Callable[[], Any]) -> tuple[int, list[str]]:
    statements: list[str] = []
    reader.conn.set_trace_callback(statements.append)
    try:
        view()
    finally:
        reader.conn.set_trace_callback(None)
    return len(statements), statements


def views(reader: Reader, ids: dict[str, int]) -> dict[str, Callable[[], Any]]:
    return {
        "runs": lambda: reader.runs(),
        "runs --all": lambda: reader.runs(jobs=True),
        "run_detail": lambda: reader.run_detail(ids["sft"]),
        "run_detail (queued child)": lambda: reader.run_detail(ids["waiting"]),
        "tree": lambda: reader.tree(),
        "tree of one": lambda: reader.tree(ids["rl"]),
        "queue": lambda: reader.queue(),
        "metrics": lambda: reader.metrics(ids["sft"]),
        "metrics after": lambda: reader.metrics(ids["sft"], after_seq=5),
        "lineage_metrics": lambda: reader.lineage_metrics(ids["rl"]),
        "eval_table": lambda: reader.eval_table(ids["sft"]),
        "spectra_grid": lambda: reader.spectra_grid(ids["sft"]),
        "heal_sweep": lambda: reader.heal_sweep(ids["sft"]),
        "changes": lambda: reader.changes(0),
    }


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, dict[str, int]]]:
    """A store of 5 families (20 runs) and one of 50 families (200 runs)."""
    made = {}
    for families in (5, 50):
        root = tmp_path_factory.mktemp(f"store{families}")
        with Store(root / "healer.db") as store:
            ids = fill(store, families, root)
        made[families] = (root / "healer.db", ids)
    return made


def test_every_view_costs_the_same_queries_at_20_and_at_200_runs(stores: dict) -> None:
    counts: dict[int, dict[str, int]] = {}
    for families, (path, ids) in stores.items():
        with Reader(path) as reader:
            counts[families] = {name: count_statements(reader, view)[0] for name, view in views(reader, ids).items()}
    assert counts[5] == counts[50], {
        k: (counts[5][k], counts[50][k]) for k in counts[5] if counts[5][k] != counts[50][k]
    }
    assert max(counts[50].values()) <= 15, counts[50]


def test_every_query_a_view_makes_reads_metrics_and_spectra_through_an_index(stores: dict) -> None:
    path, ids = stores[50]
    with Reader(path) as reader:
        for name, view in views(reader, ids).items():
            _, statements = count_statements(reader, view)
            for sql in statements:
                plan = [row[3] for row in reader.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
                for line in plan:
                    assert not re.match(r"SCAN (metrics|spectra|eval_samples|checkpoints)\b", line), (name, sql, plan)
                    assert not re.match(r"SCAN m\b", line), (name, sql, plan)
                if re.search(r"\bFROM metrics\b", sql):
                    assert not any("TEMP B-TREE" in line for line in plan if "metrics" in line), (name, sql, plan)


def test_the_metric_reads_that_find_what_is_new_or_last_use_their_indexes(stores: dict) -> None:
    path, ids = stores[5]
    with Reader(path) as reader:

        def plan(sql: str, params: list[Any]) -> str:
            return " | ".join(r[3] for r in reader.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))

        run = ids["sft"]
        assert "metrics_run_step" in plan("SELECT MAX(step) FROM metrics WHERE run_id = ?", [run])
        assert "metrics_run_id" in plan("SELECT * FROM metrics WHERE run_id = ? AND id > ? ORDER BY id", [run, 5])
        assert "metrics_seq" in plan("SELECT run_id, MAX(seq) FROM metrics WHERE seq > ? GROUP BY +run_id", [5])
        new = plan("SELECT step, name FROM metrics WHERE run_id = ? AND seq > ? ORDER BY step, name", [run, 5])
        assert "metrics_run_seq" in new, new


def test_a_reader_changes_no_byte_and_creates_no_file(tmp_path: Path, stores: dict) -> None:
    source, ids = stores[5]
    copy = tmp_path / "copy" / "healer.db"
    copy.parent.mkdir()
    shutil.copy(source, copy)
    before = {p.name: p.read_bytes() for p in copy.parent.iterdir()}
    with Reader(copy) as reader:
        for view in views(reader, ids).values():
            view()
    after = {p.name: p.read_bytes() for p in copy.parent.iterdir()}
    assert sorted(after) == ["healer.db"]
    assert after == before


def test_a_reader_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    with Reader(tmp_path / "nowhere" / "healer.db") as reader:
        assert reader.runs() == []
        assert reader.changes(0).seq == 0
    assert not (tmp_path / "nowhere").exists()


def test_a_reader_refuses_a_store_from_another_schema_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with Store(path) as store:
        store.conn.execute("DELETE FROM _sqlite_migrations WHERE name = ?", [LATEST_MIGRATION])
        store.conn.commit()
    from healer.errors import HealerError

    with pytest.raises(HealerError, match=r"another healer version.*healer db migrate"):
        Reader(path).runs()


def test_a_reader_sees_writes_made_after_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "healer.db"
    Store(path).close()  # the writer has gone: no -wal file, the reader opens it immutable
    with Reader(path) as reader:
        assert reader.runs() == []
        with Store(path) as store:
            store.create_run(kind="sft", method="sft", name="late", spec={})
            assert [r.name for r in reader.runs()] == ["late"]


def test_a_reader_sees_a_writer_that_came_and_went(tmp_path: Path) -> None:
    path = tmp_path / "healer.db"
    Store(path).close()
    with Reader(path) as reader:
        assert reader.runs() == []  # opened immutable: no writer, no -wal
        with Store(path) as store:  # a writer opens, writes and closes between two reads: the -wal comes and goes
            store.create_run(kind="sft", method="sft", name="quick", spec={})
        assert not Path(f"{path}-wal").exists()
        assert [r.name for r in reader.runs()] == ["quick"]


def test_changes_report_status_updates_evals_replaced_spectra_checkpoints_metrics_and_deletions(tmp_path: Path) -> None:
    path = tmp_path / "healer.db"
    with Store(path) as store, Reader(path) as reader:
        run = store.create_run(kind="sft", method="sft", name="a", spec={}, queued=1)
        other = store.create_run(kind="sft", method="sft", name="b", spec={}, queued=1)
        _spectra(store, run.id, 10)
        store.log_metrics(run.id, 1, {"loss": 1.0})
        start = reader.changes(0)
        assert set(start.runs) == {run.id, other.id} and start.spectra == ((run.id, 10),)
        assert start.metrics == {run.id: 1}

        assert not reader.changes(start.seq)  # nothing happened since
        store.claim(run.id, worker="w:1", host="h")
        status = reader.changes(start.seq)
        assert status.runs == (run.id,) and status.touched == {run.id}

        _eval(store, run.id, 10, "ood", 5)
        _spectra(store, run.id, 10, angle=3.0)  # replaces the rows (an upsert: same ids)
        store.add_checkpoint(run.id, 20, str(tmp_path / "ck"))
        store.log_metrics(run.id, 1, {"loss": 0.5})  # re-logged: same id, new value
        after = reader.changes(status.seq)
        assert after.evals == ((run.id, 10),)
        assert after.spectra == ((run.id, 10),)
        assert after.checkpoints == ((run.id, 20),)
        assert after.metrics == {run.id: 1}
        assert [m.value for m in reader.metrics(run.id, after_seq=status.seq)] == [0.5]

        store.delete_run(other.id)
        store.rewind(run.id, 5)
        last = reader.changes(after.seq)
        assert last.deleted == (other.id,) and last.runs == (run.id,)
        assert last.seq > after.seq > status.seq > start.seq


def test_pure_reads_show_a_dead_process_without_recording_it(tmp_path: Path) -> None:
    path = tmp_path / "healer.db"
    with Store(path) as store:
        run = store.create_run(kind="sft", method="sft", name="ghost", spec={}, total_steps=10)
        import socket

        store.mark_running(run.id, pid=2**22 + 12345, host=socket.gethostname())  # no such process
    before = path.read_bytes()
    with Reader(path) as reader:
        (row,) = reader.runs()
        assert (row.status, row.alive) == ("running", False)
        assert reader.run_detail(run.id).alive is False
    assert path.read_bytes() == before


def test_views_print_the_json_contract(stores: dict) -> None:
    path, ids = stores[5]
    with Reader(path) as reader:
        rows = json.loads(to_json(reader.runs()))
        assert set(rows[0]) >= {
            "id",
            "name",
            "kind",
            "method",
            "status",
            "parent_run",
            "parent_step",
            "start_ref",
            "created_at",
            "started_at",
            "finished_at",
            "exit_code",
            "step",
            "total_steps",
        }
        assert rows[0]["step"] == 30 and rows[0]["kind"] == "sft"
        detail = to_plain(reader.run_detail(ids["rl"]))
        assert detail["lineage"] == [{"id": ids["sft"], "name": "sft-0", "kind": "sft", "step": 10}]
        assert detail["last_metrics"]["reward"] == {"step": 5, "value": 1.0}
        sweep = reader.heal_sweep(ids["sft"])
        row = next(r for r in sweep.rows if r.rl_run == ids["rl"])
        assert [r.rl_run for r in sweep.rows] == [ids["waiting"], ids["rl"]]  # by start step: not started yet first
        assert row.delta_ood == pytest.approx(4 / 50)
        assert row.flips_ood == {"gained": 4, "lost": 0}
        queued = {r.id: r for r in reader.queue()}
        assert queued[ids["waiting"]].waiting_for == f"run {ids['rl']} to finish (--after)" or queued[
            ids["waiting"]
        ].waiting_for.startswith("the evaluations of run")
        grid = reader.spectra_grid(ids["sft"])
        assert grid.step == 30 and grid.layers == (0, 1) and grid.modules == MODULES
        assert grid.mean_angle_deg["1"]["q_proj"] == pytest.approx(4.0)


def test_a_poll_stays_one_query(stores: dict) -> None:
    path, _ = stores[50]
    with Reader(path) as reader:
        seq = reader.changes(0).seq
        assert count_statements(reader, lambda: reader.changes(seq))[0] == 1


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file modes")
def test_a_reader_opens_a_store_in_a_read_only_folder(tmp_path: Path, stores: dict) -> None:
    source, _ = stores[5]
    folder = tmp_path / "ro"
    folder.mkdir()
    shutil.copy(source, folder / "healer.db")
    folder.chmod(0o555)
    try:
        with Reader(folder / "healer.db") as reader:
            assert len(reader.runs()) == 15
    finally:
        folder.chmod(0o755)


def test_sqlite_version_supports_the_feed() -> None:
    assert sqlite3.sqlite_version_info >= (3, 24)
