"""`healer tui`: the pure pieces (rows, readout), the live app driven by Pilot, snapshots of its screens, `--once`,
and `--read-only` writing nothing. The store is a real SQLite file filled through the store's own writes, its times
fixed so screens do not move with the clock."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from healer.stats import wilson
from healer.store import Status, Store
from healer.store.views import Reader
from healer.text import duration, progress
from healer.tui.app import HealerApp, readout
from healer.tui.panels.queue import queue_cells
from healer.tui.panels.runs import run_lines
from healer.tui.snapshot import refresh, take
from tests.conftest import REPO

CLOCK = datetime(2026, 9, 21, 10, 1, 20, tzinfo=UTC).timestamp()  # the fixed "now" of every screen
FIXED = "2026-09-21T09:50:00+00:00"
MODULES = ("q", "k", "v", "o")


def _eval(store: Store, run_id: int, step: int, split: str, correct: int, n: int = 100) -> None:
    low, high = wilson(correct, n)
    summary = {"run_id": run_id, "step": step, "checkpoint_path": None, "task": "general_points", "split": split,
               "protocol": "single", "max_attempts": 1, "n": n, "correct": correct, "accuracy": correct / n,
               "ci_low": low, "ci_high": high, "format_error_rate": 0.0, "mean_reward": None, "loss": 0.5,
               "outcomes": "{}", "settings": "{}", "seconds": 1.0}  # fmt: skip
    store.record_eval(summary, [])


def _spectra(store: Store, run_id: int, step: int, forced_layer: int | None = None) -> None:
    rows = []
    for layer in range(4):
        for module in MODULES:
            for side in ("u", "v"):
                forced = layer == forced_layer and module == "k"  # k >= n: every angle is 0 by dimension alone
                angle = 0.0 if forced else step / 20 + layer + MODULES.index(module) / 2 + (side == "v")
                rows.append({"param": f"model.layers.{layer}.{module}_proj.weight", "layer": layer, "module": module,
                             "side": side, "k": 8, "n": 8 if forced else 64, "forced_zero": 8 if forced else 0,
                             "mean_angle_deg": angle, "median_angle_deg": angle, "max_angle_deg": 2 * angle,
                             "chordal": 0.1, "chordal_norm": 0.05, "sigma_rel_drift": 0.0002 * step,
                             "energy_diag": None, "energy_rotation": None, "energy_outside": None, "gap_rel": None,
                             "method": "exact", "error_deg": None, "seconds": 0.0, "angles_deg": [angle] * 8,
                             "sigma_drift": [0.0] * 8})  # fmt: skip
    store.record_spectra(run_id, step, "1@0", run_id, 0, {"k": 8}, rows)


def seed(path: Path) -> dict[str, int]:
    """An SFT run whose OOD peaks at step 20 then falls while its loss keeps falling, GRPO from its peak and from its
    last checkpoint, a run training now, and a queued one waiting on it."""
    with Store(path) as store:
        sft = store.create_run(kind="sft", method="sft", name="gp-sft", spec={"train": {"max_steps": 60}},
                               total_steps=60, queued=1)  # fmt: skip
        for step in range(0, 61, 5):
            store.log_metrics(sft.id, step, {"loss": 2.0 / (1 + step / 10)}, wall_time=CLOCK - 3600 + step)
        for step, id_correct, ood_correct in ((0, 10, 12), (20, 40, 20), (40, 60, 14), (60, 70, 9)):
            if step:  # a checkpoint an RL run can start from (config and tokenizer; no weights are read)
                folder = path.parent / f"sft/checkpoint-{step}"
                folder.mkdir(parents=True)
                (folder / "config.json").write_text("{}")
                (folder / "tokenizer_config.json").write_text("{}")
                store.add_checkpoint(sft.id, step, str(folder))
            _eval(store, sft.id, step, "id", id_correct)
            _eval(store, sft.id, step, "ood", ood_correct)
            _spectra(store, sft.id, step, forced_layer=3)
        store.finish_run(sft.id, Status.DONE, exit_code=0)
        runs = {"sft": sft.id}
        for name, start, after in (("grpo-from-20", 20, (45, 19)), ("grpo-from-60", 60, (72, 8))):
            rl = store.create_run(kind="rl", method="grpo", name=name, spec={}, parent_run=sft.id, parent_step=start,
                                  total_steps=10, queued=1)  # fmt: skip
            for step in range(0, 11, 2):
                store.log_metrics(rl.id, step, {"loss": 0.1, "reward": step / 10}, wall_time=CLOCK - 600 + step)
            _eval(store, rl.id, 0, "ood", 20 if start == 20 else 9)
            _eval(store, rl.id, 10, "id", after[0])
            _eval(store, rl.id, 10, "ood", after[1])
            store.finish_run(rl.id, Status.DONE, exit_code=0)
            runs[name] = rl.id
        live = store.create_run(kind="sft", method="sft", name="gp-sft-long", spec={}, total_steps=400, queued=1)
        store.claim(live.id, worker="box:1", host="elsewhere", assigned_gpus="0")
        store.mark_running(live.id, pid=1, host="elsewhere")
        for step in range(1, 121):
            store.log_metrics(live.id, step, {"loss": 1.0 / step, "learning_rate": 1e-5}, wall_time=CLOCK - 120 + step)
        waiting = store.create_run(kind="rl", method="grpo", name="grpo-later", spec={}, parent_run=live.id,
                                   queued=1, start_ref=f"{live.id}@peak-ood")  # fmt: skip
        runs.update(live=live.id, waiting=waiting.id)
        # fixed times, so elapsed and ETA do not move with the clock (a test fixture may set what a run would)
        store.conn.execute("UPDATE runs SET created_at = ?, started_at = CASE WHEN status = 'queued' THEN NULL "
                           "ELSE ? END, finished_at = CASE WHEN status = 'done' THEN ? END, heartbeat = NULL",
                           [FIXED, "2026-09-21T09:58:00+00:00", "2026-09-21T09:59:30+00:00"])  # fmt: skip
        store.conn.commit()
    return runs


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    path = tmp_path / "healer.db"
    return path, seed(path)


# -- pure pieces -----------------------------------------------------------------------------------------------


def test_rows_draw_the_lineage_tree_and_a_filter_keeps_ancestors(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    snapshot = take(Reader(path), None, now=CLOCK)
    lines = run_lines(snapshot)
    assert [line.label for line in lines] == [
        f"{runs['sft']} gp-sft",
        f"├─@20 {runs['grpo-from-20']} grpo-from-20",
        f"└─@60 {runs['grpo-from-60']} grpo-from-60",
        f"{runs['live']} gp-sft-long",
        f"└─{runs['waiting']} grpo-later",
    ]
    sft = lines[0]
    assert (sft.status, sft.ood_acc, sft.peak, sft.time) == ("done", "9.0", "20.0 @20", "1:30")
    live = lines[3]
    assert (live.status, live.progress, live.gpu) == ("running", "120/400 ▰▰▱▱▱▱", "0")
    assert live.time == "3:20 ~4:40"  # elapsed at the fixed clock, then the ETA: 280 steps at 1 s a step
    kept = [line.label for line in run_lines(snapshot, "from-60")]
    assert kept == [f"{runs['sft']} gp-sft", f"└─@60 {runs['grpo-from-60']} grpo-from-60"]
    assert [line.run for line in run_lines(snapshot, "queued")] == [runs["live"], runs["waiting"]]
    with Store(path) as writer:  # by preset too
        writer.conn.execute("UPDATE runs SET preset_path = 'presets/gp-grpo-qwen.toml' WHERE id = ?", [runs["waiting"]])
        writer.conn.commit()
    by_preset = run_lines(take(Reader(path), None, now=CLOCK), "gp-grpo-qwen")
    assert [line.run for line in by_preset] == [runs["live"], runs["waiting"]]


def test_an_incremental_refresh_reads_what_a_full_read_does(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    reader = Reader(path)
    previous = take(reader, runs["live"], now=CLOCK)
    with Store(path) as writer:  # the run trains on: new steps, a re-logged one, and a heartbeat
        for step in (121, 122, 120):
            writer.log_metrics(runs["live"], step, {"loss": 0.5 / step, "learning_rate": 1e-5})
        writer.heartbeat(runs["live"])
    changes = reader.changes(previous.seq)
    assert changes.metrics == {runs["live"]: 122}
    incremental = refresh(reader, previous, changes, runs["live"], now=CLOCK)
    full = take(reader, runs["live"], now=CLOCK)
    assert incremental.lineage is not previous.lineage and incremental.tree is not previous.tree
    assert incremental == dataclasses.replace(full, rows=incremental.rows)  # rows: the heartbeat's time differs
    assert dict(incremental.lineage.loss)[120] == 0.5 / 120
    with Store(path) as writer:  # a checkpoint with its evaluations and spectra: read again, and only that
        writer.add_checkpoint(runs["live"], 120, str(path.parent / "live/checkpoint-120"))
        _eval(writer, runs["live"], 120, "id", 50)
        _eval(writer, runs["live"], 120, "ood", 30)
        _spectra(writer, runs["live"], 120)
    again = refresh(reader, incremental, reader.changes(incremental.seq), runs["live"], now=CLOCK)
    assert again.tree != incremental.tree and [p.step for p in again.lineage.points] == [120]
    assert again == take(reader, runs["live"], now=CLOCK)
    with Store(path) as writer:  # an evaluation of another run: its row in the tree changes, the lineage does not
        _eval(writer, runs["grpo-from-60"], 10, "ood", 11)
    third = refresh(reader, again, reader.changes(again.seq), runs["live"], now=CLOCK)
    assert third == take(reader, runs["live"], now=CLOCK) and third.lineage is again.lineage


def test_the_first_view_is_a_run_training_now_else_the_sweep(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    assert take(Reader(path), None, now=CLOCK).selected == runs["live"]
    with Store(path) as writer:
        writer.finish_run(runs["live"], Status.DONE, exit_code=0)
    assert take(Reader(path), None, now=CLOCK).selected == runs["sft"]  # two GRPO runs started from it
    assert take(Reader(path), runs["grpo-from-60"], now=CLOCK).selected == runs["grpo-from-60"]


def test_progress_and_queue_cells() -> None:
    assert progress(150, 300, bar=True) == "150/300 ▰▰▰▱▱▱" and progress(150, 300) == "150/300"
    assert progress(None, 300, bar=True) == "0/300 ▱▱▱▱▱▱"
    assert progress(7, None, bar=True) == "7" and progress(None, None) == ""
    assert duration(3725) == "1:02:05" and duration(65) == "1:05" and duration(None) == ""


def test_readout_names_the_checkpoint_under_the_cursor(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    lineage = take(Reader(path), runs["grpo-from-20"], now=CLOCK).lineage
    assert lineage is not None
    steps = [(p.run, p.step, p.lineage_step) for p in lineage.points]
    assert steps == [(runs["sft"], 0, 0), (runs["sft"], 20, 20), (runs["grpo-from-20"], 10, 30)]
    assert lineage.peak_ood == 20
    at_peak = readout(lineage, 1)
    assert at_peak.startswith(f"run {runs['sft']}@20 · axis 20 · ID 40.0 [") and "OOD 20.0 [" in at_peak
    assert "angle 2.97° σ drift 0.40%" in at_peak and "peak-ood" in at_peak and "lineage OOD peak" in at_peak
    assert readout(lineage, 2).startswith(f"run {runs['grpo-from-20']}@10 · axis 30 · ID 45.0")
    assert readout(None, None) == "no evaluated checkpoints in this lineage yet"
    queued = next(r for r in take(Reader(path), None, now=CLOCK).queue if r.id == runs["waiting"])
    assert queue_cells(queued)[-1] == f"run {runs['live']} to finish (its peak-ood is picked then)"


# -- the app ------------------------------------------------------------------------------------------------------


async def _ready(app: HealerApp, pilot: Any, what: Any = None) -> None:
    for _ in range(600):  # up to 30 s: a loaded 2-core CI machine
        if app.snapshot is not None and (what is None or what()):
            await pilot.pause()
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the app never showed a snapshot")


async def test_keys_move_the_cursor_filter_toggle_panes_and_show_the_queue(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    app = HealerApp(path, clock=lambda: CLOCK, interval=0.1, select=runs["sft"])
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot)
        readout_text = lambda: str(app.query_one("#readout").render())  # noqa: E731
        assert readout_text().startswith(f"run {runs['sft']}@60")  # the cursor starts at the last checkpoint
        await pilot.press("left")
        assert readout_text().startswith(f"run {runs['sft']}@40")
        await pilot.press("left", "left", "left")  # stops at the first
        assert readout_text().startswith(f"run {runs['sft']}@0")
        await pilot.press("right")
        assert readout_text().startswith(f"run {runs['sft']}@20")
        rotation = app.query_one("#rotation")
        await pilot.press("m", "v")  # the heatmap's keys work from the runs pane too
        assert (rotation.module, rotation.side) == ("k", "v")
        await pilot.press("u")
        assert rotation.side == "u"

        plot = app.query_one("#acc-plot")
        left = plot.query_one("#plot").region  # the chart's drawing area: its left edge is step 0
        await pilot.click("#acc-plot", offset=(left.x - plot.region.x + 1, left.y - plot.region.y + 1))
        assert readout_text().startswith(f"run {runs['sft']}@0")  # a click picks the nearest checkpoint
        await pilot.press("right")
        app.query_one("#runs").focus()  # the click focused the chart

        await pilot.press("down")  # select the GRPO run from step 20: its lineage, cursor on its last checkpoint
        await _ready(app, pilot, lambda: app.snapshot.selected == runs["grpo-from-20"])
        assert readout_text().startswith(f"run {runs['grpo-from-20']}@10 · axis 30")

        await pilot.press("slash", *"long")
        table = app.query_one("#runs")
        assert [line.run for line in table.lines] == [runs["live"]]
        await pilot.press("escape")
        assert not app.query_one("#filter").display

        await pilot.press("2")
        assert not app.query_one("#accuracy").display
        await pilot.press("2", "4")
        assert app.query_one("#views").current == "queue"
        await pilot.press("4")
        assert app.query_one("#views").current == "dashboard"


async def test_a_poll_after_new_rows_changes_the_view(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    app = HealerApp(path, clock=lambda: CLOCK, interval=0.1, select=runs["sft"])
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app, pilot)
        before = app.snapshot
        assert before is not None and len(before.lineage.points) == 4
        with Store(path) as writer:
            writer.add_checkpoint(runs["sft"], 80, str(path.parent / "sft/checkpoint-80"))
            _eval(writer, runs["sft"], 80, "id", 75)
            _eval(writer, runs["sft"], 80, "ood", 7)
        await _ready(app, pilot, lambda: app.snapshot is not before)
        assert len(app.snapshot.lineage.points) == 5
        assert str(app.query_one("#readout").render()).startswith(f"run {runs['sft']}@80")


async def test_an_empty_store_says_how_to_start(tmp_path: Path) -> None:
    Store(tmp_path / "healer.db").close()
    app = HealerApp(tmp_path / "healer.db", clock=lambda: CLOCK)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot)
        assert app.query_one("#views").current == "empty"
        assert "healer demo" in app.screen_text()


# -- snapshots of the screens ---------------------------------------------------------------------------------


def _app(path: Path, select: int | None = None) -> HealerApp:
    return HealerApp(path, clock=lambda: CLOCK, interval=0.1, select=select)


async def _settled(pilot: Any) -> None:
    await _ready(pilot.app, pilot)
    await pilot.pause(0.3)


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
def test_snapshot_dashboard(snap_compare: Any, store: tuple[Path, dict[str, int]], size: tuple[int, int]) -> None:
    assert snap_compare(_app(store[0], store[1]["sft"]), terminal_size=size, run_before=_settled)


def test_snapshot_rl_lineage_with_the_cursor_moved(snap_compare: Any, store: tuple[Path, dict[str, int]]) -> None:
    async def select(pilot: Any) -> None:
        await _settled(pilot)
        await pilot.press("down")
        await _ready(pilot.app, pilot, lambda: pilot.app.snapshot.selected == store[1]["grpo-from-20"])
        await pilot.press("left")
        await pilot.pause(0.3)

    assert snap_compare(_app(store[0], store[1]["sft"]), terminal_size=(80, 24), run_before=select)


def test_snapshot_queue(snap_compare: Any, store: tuple[Path, dict[str, int]]) -> None:
    async def queue(pilot: Any) -> None:
        await _settled(pilot)
        await pilot.press("4")
        await pilot.pause(0.2)

    assert snap_compare(_app(store[0]), terminal_size=(80, 24), run_before=queue)


def test_snapshot_detail(snap_compare: Any, store: tuple[Path, dict[str, int]]) -> None:
    async def detail(pilot: Any) -> None:
        await _settled(pilot)
        await pilot.press("enter")
        for _ in range(600):
            await pilot.pause(0.05)
            tables = pilot.app.screen.query("#checkpoint-table")
            if tables and tables.first().row_count:
                break
        await pilot.pause(0.2)

    assert snap_compare(_app(store[0], store[1]["sft"]), terminal_size=(80, 24), run_before=detail)


def test_snapshot_empty(snap_compare: Any, tmp_path: Path) -> None:
    Store(tmp_path / "healer.db").close()
    assert snap_compare(_app(tmp_path / "healer.db"), terminal_size=(80, 24), run_before=_settled)


# -- the command --------------------------------------------------------------------------------------------------


def _healer(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HEALER_DB", "COLUMNS")}
    return subprocess.run([sys.executable, "-m", "healer", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)  # fmt: skip


def test_once_prints_the_first_screen_and_read_only_writes_nothing(tmp_path: Path, store: tuple[Path, Any]) -> None:
    source, _ = store
    copy = tmp_path / "copy" / "healer.db"
    copy.parent.mkdir()
    shutil.copy(source, copy)
    before = {p.name: p.read_bytes() for p in copy.parent.iterdir()}
    result = _healer("--db", str(copy), "tui", "--once", "--read-only", "--width", "100", "--height", "30")
    assert result.returncode == 0, result.stderr
    assert "gp-sft" in result.stdout and "grpo-from-20" in result.stdout and "torch" not in result.stderr
    assert len(result.stdout.splitlines()) >= 25
    assert {p.name: p.read_bytes() for p in copy.parent.iterdir()} == before


def test_bad_databases_are_one_line_before_the_app_starts(tmp_path: Path) -> None:
    missing = _healer("--db", str(tmp_path / "none.db"), "tui")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no database at" in missing.stderr
    other = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    wrong = _healer("--db", str(other), "tui", "--once")
    assert wrong.returncode == 2 and "is not a healer database" in wrong.stderr and "Traceback" not in wrong.stderr
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not sqlite at all " * 100)
    bad = _healer("--db", str(garbage), "tui", "--once")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_queue_priority_changes_a_waiting_run_only(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    changed = _healer("--db", str(path), "queue", "priority", str(runs["waiting"]), "7")
    assert changed.returncode == 0 and changed.stdout.strip() == f"run {runs['waiting']} priority 7"
    refused = _healer("--db", str(path), "queue", "priority", str(runs["sft"]), "7")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "only a waiting run" in refused.stderr
    with Store(path) as check:
        assert (check.run(runs["waiting"]).priority, check.run(runs["sft"]).priority) == (7, 0)


def test_tui_starts_without_torch() -> None:
    probe = "import sys\nimport healer.tui.app\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", "import json\n" + probe], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert not {"torch", "transformers", "pandas", "pyarrow"} & set(json.loads(out))


async def test_enter_opens_the_run_detail_and_escape_comes_back(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    log = path.parent / "sft.log"
    log.write_text("".join(f"step {i}: loss {1 / (i + 1):.3f}\n" for i in range(300)))
    with Store(path) as writer:
        writer.set_location(runs["sft"], out_dir=str(path.parent), log_path=str(log))
        samples = [{"idx": i, "prompt": "p", "completion": f"wrong answer {i}", "transcript": None,
                    "outcome": "wrong_value", "reward": -1.0, "correct": False, "attempts": 1, "meta": "{}"}
                   for i in range(3)]  # fmt: skip
        low, high = wilson(9, 100)
        writer.record_eval({"run_id": runs["sft"], "step": 60, "checkpoint_path": None, "task": "general_points",
                            "split": "ood", "protocol": "single", "max_attempts": 1, "n": 100, "correct": 9,
                            "accuracy": 0.09, "ci_low": low, "ci_high": high, "format_error_rate": 0.0,
                            "mean_reward": None, "loss": 0.5, "outcomes": "{}", "settings": "{}", "seconds": 1.0},
                           samples)  # fmt: skip
    app = HealerApp(path, clock=lambda: CLOCK, interval=0.1, select=runs["sft"])
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot)
        await pilot.press("enter")
        for _ in range(600):
            await pilot.pause(0.05)
            if app.screen.query("#checkpoint-table") and app.screen.query_one("#checkpoint-table").row_count:
                break
        screen = app.screen
        table = screen.query_one("#checkpoint-table")
        first = [str(c) for c in table.get_row_at(0)]
        assert first[0] == "0" and first[2].startswith("12.0 [")
        assert [str(c) for c in table.get_row_at(1)][4] == "peak-ood, loss-pick"  # every loss ties: the earliest
        spec = screen.query_one("#spec-table")
        assert [str(c) for c in spec.get_row_at(0)] == ["train.max_steps", "60"]
        screen.query_one("TabbedContent").active = "log"  # a log renders once its tab has a size
        await pilot.pause(0.2)
        assert "step 299: loss 0.003" in "\n".join(line.text for line in screen.query_one("#log-view").lines)
        wrong = screen.query_one("#wrong-table")
        assert wrong.row_count == 3 and str(wrong.get_row_at(0)[3]) == "wrong answer 0"
        await pilot.press("left")  # the dashboard's keys are off here
        await pilot.press("escape")
        assert not app.screen.query("#checkpoint-table") and app.query_one("#runs")


async def test_question_mark_shows_the_keys_and_escape_hides_them(store: tuple[Path, dict[str, int]]) -> None:
    app = HealerApp(store[0], clock=lambda: CLOCK, interval=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot)
        await pilot.press("question_mark")
        assert app.screen.query("HelpPanel")
        await pilot.press("escape")
        assert not app.screen.query("HelpPanel")


def test_an_unreadable_store_keeps_the_last_view_with_a_notice(store: tuple[Path, dict[str, int]]) -> None:
    import threading

    from healer.tui.poller import Poller

    path, _ = store
    poller = Poller(path, clock=lambda: CLOCK)
    first = poller.poll()
    assert first is not None and first.rows
    sent: list[object] = []
    stop = threading.Event()
    poller._reader.close()  # type: ignore[union-attr]
    path.write_bytes(b"this is no longer a database" * 100)  # what a user would see if the file were overwritten

    def send(item: object) -> None:
        sent.append(item)
        stop.set()

    poller.run(send, stop, interval=0.01)
    (notice,) = sent
    assert isinstance(notice, str) and notice.startswith("cannot read the store") and "last view" in notice


def test_once_under_no_color(store: tuple[Path, dict[str, int]]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HEALER_DB", "COLUMNS")}
    result = subprocess.run([sys.executable, "-m", "healer", "--db", str(store[0]), "tui", "--once", "--width", "80",
                             "--height", "24"], capture_output=True, text=True, cwd=REPO, env={**env, "NO_COLOR": "1"},
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 24 and "\x1b[" not in result.stdout
    assert "✓" in result.stdout and "●" in result.stdout  # status reads by glyph, not by colour


# -- actions (part 2: steer) ----------------------------------------------------------------------------------


async def _at_peak(app: HealerApp, pilot: Any) -> None:
    await _ready(app, pilot)
    await pilot.press("left", "left")  # the SFT run's checkpoint at step 20, its OOD peak
    assert str(app.query_one("#readout").render()).startswith("run 1@20")


async def test_r_queues_rl_from_the_checkpoint_under_the_cursor(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    app = HealerApp(path, clock=lambda: CLOCK, interval=0.1, select=runs["sft"])
    async with app.run_test(size=(80, 24)) as pilot:
        await _at_peak(app, pilot)
        await pilot.press("r")
        dialog = app.screen
        assert "tiny-grpo" in dialog.presets
        dialog.query_one("#preset").value = "tiny-grpo"
        await pilot.pause()
        dialog.query_one("#overrides").value = "train.nonsense=1"
        await pilot.pause()  # the field's change is handled (it clears the error line) before enter
        await pilot.press("enter")
        assert "nonsense" in str(dialog.query_one("#dialog-error").render())  # the CLI's error, nothing written
        with Store(path) as check:
            assert [r.id for r in check.runs()] == list(range(1, 6))
        dialog.query_one("#overrides").value = "train.max_steps=7"
        dialog.query_one("#priority").value = "3"
        await pilot.pause()
        command = str(dialog.query_one("#dialog-command").render())
        assert command == "$ healer queue add tiny-grpo --from 1@20 --set train.max_steps=7 --priority 3"
        await pilot.press("enter")
        await pilot.pause()
        assert not app.screen.query("#dialog"), str(app.screen.query_one("#dialog-error").render())
    with Store(path) as check:
        added = check.runs()[-1]
    assert (added.kind, added.status, added.queued, added.start_ref, added.parent_run, added.priority) == (
        "rl", "queued", 1, f"{runs['sft']}@20", runs["sft"], 3)  # fmt: skip
    assert added.spec_dict["train"]["max_steps"] == 7 and added.name.endswith("-from-1@20")
    assert added.parent_step == 20  # the checkpoint it starts from, known now (a named pick waits for its run)


async def test_k_p_r_c_write_what_the_cli_would(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    with Store(path) as writer:
        writer.finish_run(runs["live"], Status.FAILED, exit_code=1, reason="boom")
    app = HealerApp(path, clock=lambda: CLOCK, interval=0.1, select=runs["sft"])
    async with app.run_test(size=(80, 24)) as pilot:
        await _at_peak(app, pilot)
        await pilot.press("k", "enter")
        await pilot.pause(0.3)
        with Store(path) as check:
            assert check.checkpoints(runs["sft"])[0].protected  # step 20
        await _ready(app, pilot, lambda: "kept" in app.snapshot.lineage.points[1].picks)
        await pilot.press("k")
        assert str(app.screen.query_one("#dialog-command").render()) == "$ healer runs keep 1@20 --release"
        await pilot.press("escape")  # cancelled: nothing written
        with Store(path) as check:
            assert check.checkpoints(runs["sft"])[0].protected

        await pilot.press("P", "enter")
        await pilot.pause(0.2)
        with Store(path) as check:
            assert check.setting("queue.paused") == "1"
        await _ready(app, pilot, lambda: app.snapshot.paused)
        assert "queue paused" in str(app.query_one("#header").render())

        await pilot.press("down", "down", "down")  # the failed run
        await _ready(app, pilot, lambda: app.snapshot.selected == runs["live"])
        await pilot.press("R", "enter")
        await pilot.pause(0.2)
        await pilot.press("down")  # the queued run waiting on it
        await _ready(app, pilot, lambda: app.snapshot.selected == runs["waiting"])
        await pilot.press("plus", "plus", "minus")  # at once, as the CLI's `queue priority` would
        await _ready(app, pilot, lambda: next(r.priority for r in app.snapshot.queue if r.id == runs["waiting"]) == 1)
        await pilot.press("c", "enter")
        for _ in range(600):
            await pilot.pause(0.05)
            if not app.screen.query("#dialog"):
                break
    with Store(path) as check:
        retried, cancelled = check.run(runs["live"]), check.run(runs["waiting"])
    assert (retried.status, retried.queued) == ("queued", 1)
    assert (cancelled.status, cancelled.reason) == ("cancelled", "cancelled before it started")


async def test_read_only_refuses_every_action(tmp_path: Path, store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    before = path.read_bytes()
    app = HealerApp(path, clock=lambda: CLOCK, interval=0.1, select=runs["sft"], immutable=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await _at_peak(app, pilot)
        for key in ("r", "h", "e", "s", "E", "k", "P", "R", "c", "plus", "d"):
            await pilot.press(key)
            assert not app.screen.query("#dialog"), key
        assert "read-only" in str(app.query_one("#header").render())
        assert "read-only: actions off" in app.screen_text().splitlines()[-1]  # and in the footer
    assert path.read_bytes() == before


async def test_space_overlays_runs_on_the_chart_with_a_legend(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    app = HealerApp(path, clock=lambda: CLOCK, interval=0.1, select=runs["sft"])
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app, pilot)
        await pilot.press("down", "space", "down", "space")  # both GRPO runs, then back to the SFT run
        await pilot.press("up", "up")
        await _ready(app, pilot, lambda: set(app.snapshot.compared) == {runs["grpo-from-20"], runs["grpo-from-60"]}
                     and app.snapshot.selected == runs["sft"])  # fmt: skip
        panel = app.query_one("#accuracy")
        caption = str(panel.query_one("#acc-caption").render())
        assert f"◇{runs['grpo-from-20']} grpo-from-20" in caption and f"◇{runs['grpo-from-60']} grpo-from-60" in caption
        labels = [label for label in panel.accuracy_plot._labels if label]
        assert f"OOD {runs['grpo-from-20']}" in labels and f"OOD {runs['grpo-from-60']}" in labels
        await pilot.press("down", "space")  # off again
        await _ready(app, pilot, lambda: set(app.snapshot.compared) == {runs["grpo-from-60"]})


def test_snapshot_compare_overlay(snap_compare: Any, store: tuple[Path, dict[str, int]]) -> None:
    async def overlay(pilot: Any) -> None:
        await _settled(pilot)
        await pilot.press("down", "space", "down", "space", "up", "up")
        await _ready(pilot.app, pilot, lambda: len(pilot.app.snapshot.compared) == 2
                     and pilot.app.snapshot.selected == store[1]["sft"])  # fmt: skip
        await pilot.pause(0.3)

    assert snap_compare(_app(store[0], store[1]["sft"]), terminal_size=(80, 24), run_before=overlay)


def test_snapshot_queue_rl_dialog(snap_compare: Any, store: tuple[Path, dict[str, int]]) -> None:
    async def dialog(pilot: Any) -> None:
        await _at_peak(pilot.app, pilot)
        await pilot.press("r")
        pilot.app.screen.query_one("#preset").value = "tiny-grpo"
        await pilot.pause(0.2)

    assert snap_compare(_app(store[0], store[1]["sft"]), terminal_size=(80, 24), run_before=dialog)


# -- the forgetting alarm ---------------------------------------------------------------------------------------


def _evals_of(table: list[tuple[int, int, int]], n: int) -> list[Any]:
    """Eval records of one run: (step, ID correct, OOD correct) out of n each."""
    from healer.store import Eval

    made = []
    for i, (step, id_correct, ood_correct) in enumerate(table):
        for split, correct in (("id", id_correct), ("ood", ood_correct)):
            low, high = wilson(correct, n)
            made.append(Eval(id=2 * i + (split == "ood"), run_id=1, step=step, checkpoint_path=None, task="t",
                             split=split, protocol="single", max_attempts=1, n=n, correct=correct,
                             accuracy=correct / n, ci_low=low, ci_high=high, format_error_rate=0.0, mean_reward=None,
                             loss=None, outcomes="{}", settings="{}", seconds=0.0, created_at=FIXED))  # fmt: skip
    return made


def test_forgetting_fires_when_ood_falls_beyond_its_intervals_while_id_rises() -> None:
    from healer.evals import forgetting

    fell = forgetting(_evals_of([(0, 50, 200), (100, 300, 150), (200, 400, 90), (300, 450, 60)], 500))
    assert fell is not None and (fell.peak_step, fell.last_step) == (100, 300)
    assert fell.drop == pytest.approx(0.18) and fell.separated and fell.id_rising and fell.alarm(0.05)
    assert not fell.alarm(0.20)  # a higher threshold
    within = forgetting(_evals_of([(100, 60, 30), (300, 90, 24)], 100))  # 6 points, but inside the intervals
    assert within is not None and within.drop == pytest.approx(0.06) and not within.separated
    assert not within.alarm(0.05)
    id_fell = forgetting(_evals_of([(100, 300, 150), (300, 250, 60)], 500))  # both fell: not the paper's pattern
    assert id_fell is not None and id_fell.separated and not id_fell.id_rising and not id_fell.alarm(0.05)
    assert forgetting(_evals_of([(100, 300, 150), (300, 450, 160)], 500)) is None  # the peak is the last
    assert forgetting(_evals_of([(0, 50, 200), (100, 300, 150)], 500)) is None  # one checkpoint: nothing to fall


async def test_the_alarm_is_notified_once_per_run(store: tuple[Path, dict[str, int]],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    path, runs = store
    with Store(path) as writer:
        big = writer.create_run(kind="sft", method="sft", name="gp-sft-big", spec={}, total_steps=60)
        for step, id_correct, ood_correct in ((20, 200, 150), (40, 300, 100), (60, 400, 60)):
            _eval(writer, big.id, step, "id", id_correct, n=500)
            _eval(writer, big.id, step, "ood", ood_correct, n=500)
        writer.finish_run(big.id, Status.DONE, exit_code=0)
    app = HealerApp(path, clock=lambda: CLOCK, interval=0.1, select=runs["sft"])
    said: list[str] = []
    monkeypatch.setattr(app, "notify", lambda message, **kw: said.append(message))
    async with app.run_test(size=(100, 30)) as pilot:
        await _ready(app, pilot)
        with Store(path) as writer:  # another snapshot: no second notice
            writer.log_metrics(runs["live"], 121, {"loss": 0.1})
        await _ready(app, pilot, lambda: 121 in [n.step for n in app.snapshot.tree])
        lines = {line.run: line for line in app.query_one("#runs").lines}
    assert said == [f"run {big.id} gp-sft-big: OOD fell 18.0 points from its peak at step 20 (30.0 -> 12.0 at step "
                    "60) while ID rose: forgetting"]  # fmt: skip
    assert lines[big.id].alarm and not lines[runs["sft"]].alarm  # the seed's SFT fell 11 points, within intervals
