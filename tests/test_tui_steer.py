"""`healer tui`, part 2 (steer): the keys that queue heal sweeps, evaluations and spectra from the checkpoint under
the cursor, delete a run, export the lineage, pin a run and subtract two checkpoints' rotation maps, each asserted on
the rows it wrote (the same seeded store as test_tui), and the CLI commands they stand for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from healer.store import Store
from healer.store.views import Reader
from healer.tui.app import HealerApp
from healer.tui.panels.rotation import rotation_lines
from tests.conftest import healer
from tests.test_tui import CLOCK, _app, _at_peak, _ready, _settled, seed

Seeded = tuple[Path, dict[str, int]]


@pytest.fixture
def store(tmp_path: Path) -> Seeded:
    path = tmp_path / "healer.db"
    return path, seed(path)


def _app_on(path: Path, runs: dict[str, int], **kwargs: Any) -> HealerApp:
    return HealerApp(path, clock=lambda: CLOCK, interval=0.1, select=runs["sft"], **kwargs)


async def _closed(app: HealerApp, pilot: Any) -> None:
    """Wait for the dialog to close (it stays open with an error when the action failed)."""
    for _ in range(600):
        await pilot.pause(0.05)
        if not app.screen.query("#dialog"):
            return
    raise AssertionError(str(app.screen.query_one("#dialog-error").render()))


async def _select(app: HealerApp, pilot: Any, run: int) -> None:
    """Move the runs pane's cursor to `run`, and wait for the panels to show it."""
    pane = app.query_one("#runs")
    rows = [line.run for line in pane.lines]
    pane.move_cursor(row=rows.index(run))
    await _ready(app, pilot, lambda: app.snapshot.selected == run)


def _run_ids(path: Path) -> list[int]:
    with Store(path) as check:
        return [r.id for r in check.runs()]


async def test_h_queues_a_heal_sweep_around_the_cursor(store: Seeded) -> None:
    path, runs = store
    app = _app_on(path, runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await _at_peak(app, pilot)
        await pilot.press("h")
        dialog = app.screen
        dialog.query_one("#preset").value = "tiny-grpo"
        dialog.query_one("#count").value = "2"
        await pilot.pause()
        assert str(dialog.query_one("#dialog-command").render()) == (
            "$ healer heal 1 --preset tiny-grpo --around 20 --count 2 --queue"
        )
        dialog.query_one("#count").value = "two"
        await pilot.pause()
        await pilot.press("enter")
        assert "--count 'two'" in str(dialog.query_one("#dialog-error").render())
        assert _run_ids(path) == list(range(1, 6))  # nothing written
        dialog.query_one("#count").value = "2"
        await pilot.pause()
        await pilot.press("enter")
        await _closed(app, pilot)
    with Store(path) as check:
        added = check.runs()[5:]
    assert [(r.kind, r.status, r.start_ref, r.parent_run) for r in added] == [
        ("rl", "queued", "1@20", runs["sft"]), ("rl", "queued", "1@40", runs["sft"])]  # fmt: skip
    assert [r.name for r in added] == ["tiny-grpo-from-20", "tiny-grpo-from-40"]


async def test_h_at_picks_writes_what_healer_heal_queue_does(store: Seeded, tmp_path: Path) -> None:
    path, runs = store
    app = _app_on(path, runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await _at_peak(app, pilot)
        await pilot.press("h")
        app.screen.query_one("#preset").value = "tiny-grpo"
        app.screen.query_one("#where").value = "peak-ood,last"
        await pilot.pause()
        command = str(app.screen.query_one("#dialog-command").render())
        await pilot.press("enter")
        await _closed(app, pilot)
    assert command == "$ healer heal 1 --preset tiny-grpo --at peak-ood,last --queue"
    with Store(path) as check:
        tui_rows = [(r.name, r.start_ref, r.spec_dict) for r in check.runs()[5:]]
    (tmp_path / "cli").mkdir()
    other = tmp_path / "cli" / "healer.db"
    seed(other)
    result = healer("--db", str(other), *command[2:].split()[1:])
    assert result.returncode == 0, result.stderr
    with Store(other) as check:
        cli_rows = [(r.name, r.start_ref, r.spec_dict) for r in check.runs()[5:]]
    assert tui_rows == cli_rows and len(tui_rows) == 2


async def test_e_and_s_queue_jobs_with_the_settings_chosen(store: Seeded) -> None:
    path, runs = store
    app = _app_on(path, runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await _at_peak(app, pilot)
        await pilot.press("e")
        app.screen.query_one("#split").value = "ood"
        app.screen.query_one("#protocol").value = "feedback"
        await pilot.pause()
        assert str(app.screen.query_one("#dialog-command").render()) == (
            "$ healer eval 1@20 --split ood --protocol feedback --queue"
        )
        await pilot.press("enter")
        await _closed(app, pilot)
        await pilot.press("e", "enter")  # the same checkpoint again while the first job waits: refused in the dialog
        await pilot.pause(0.2)
        assert "is queued already" in str(app.screen.query_one("#dialog-error").render())
        await pilot.press("escape")
        await pilot.press("s")
        app.screen.query_one("#ref").value = "parent@peak-ood"
        await pilot.pause()
        await pilot.press("enter")
        assert "parent" in str(app.screen.query_one("#dialog-error").render())  # the SFT run has no parent run
        app.screen.query_one("#ref").value = "start"
        app.screen.query_one("#k").value = "4"
        await pilot.pause()
        assert str(app.screen.query_one("#dialog-command").render()) == (
            "$ healer spectra measure 1@20 --ref start --k 4 --queue"
        )
        await pilot.press("enter")
        await _closed(app, pilot)
    with Store(path) as check:
        jobs = check.checkpoint_jobs(runs["sft"])
    assert [(j.kind, j.status, j.parent_step) for j in jobs] == [("eval", "queued", 20), ("spectra", "queued", 20)]
    assert jobs[0].spec_dict["eval"]["splits"] == ["ood"] and jobs[0].spec_dict["eval"]["protocol"] == "feedback"
    assert jobs[1].spec_dict["spectra"]["ref"] == "start" and jobs[1].spec_dict["spectra"]["k"] == 4


def test_eval_and_spectra_queue_on_the_cli(store: Seeded) -> None:
    path, runs = store
    result = healer("--db", str(path), "eval", "1@40", "--split", "id", "--queue", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["kind"], row["status"], row["name"]) == ("eval", "queued", "eval 1@40")
    again = healer("--db", str(path), "eval", "1@40", "--queue")
    assert again.returncode == 2 and "already" in again.stderr and "Traceback" not in again.stderr
    bad = healer("--db", str(path), "spectra", "measure", "1@40", "--queue", "--ref", "nowhere@3")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    ok = healer("--db", str(path), "spectra", "measure", "1@40", "--queue", "--k", "3", "--modules", "q,v")
    assert ok.returncode == 0, ok.stderr
    with Store(path) as check:
        job = next(j for j in check.checkpoint_jobs(runs["sft"]) if j.kind == "spectra")
    assert {key: job.spec_dict["spectra"][key] for key in ("k", "modules", "ref")} == {
        "k": 3,
        "modules": ["q", "v"],
        "ref": "base",
    }


async def test_d_deletes_a_finished_leaf_run_and_refuses_a_parent(store: Seeded) -> None:
    path, runs = store
    app = _app_on(path, runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot)
        await pilot.press("d")  # the SFT run: GRPO runs started from it
        assert str(app.screen.query_one("#dialog-command").render()) == "$ healer runs rm 1"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert "delete them first" in str(app.screen.query_one("#dialog-error").render())
        await pilot.press("escape")
        await _select(app, pilot, runs["grpo-from-60"])
        await pilot.press("d", "enter")
        await _closed(app, pilot)
        await _ready(app, pilot, lambda: runs["grpo-from-60"] not in app.snapshot.rows)
        await _select(app, pilot, runs["live"])  # running: refused before any dialog
        await pilot.press("d")
        assert not app.screen.query("#dialog")
    assert runs["grpo-from-60"] not in _run_ids(path) and runs["sft"] in _run_ids(path)
    with Reader(path) as reader:
        assert reader.evals(runs["grpo-from-60"]) == [] and reader.metrics(runs["grpo-from-60"]) == []


def test_runs_rm_on_the_cli(store: Seeded) -> None:
    path, runs = store
    refused = healer("--db", str(path), "runs", "rm", str(runs["live"]))
    assert refused.returncode == 2 and "only a finished run" in refused.stderr
    done = healer("--db", str(path), "runs", "rm", str(runs["grpo-from-20"]))
    assert done.returncode == 0 and f"run {runs['grpo-from-20']} (grpo-from-20) deleted" in done.stdout
    assert runs["grpo-from-20"] not in _run_ids(path)


async def test_E_writes_what_healer_export_table_writes(store: Seeded, healer_home: Path, tmp_path: Path) -> None:
    path, runs = store
    app = _app_on(path, runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot)
        await pilot.press("E")
        dialog = app.screen
        dialog.query_one("#stages").value = "base,later"
        await pilot.pause()
        await pilot.press("enter")
        assert "--stages 'base,later'" in str(dialog.query_one("#dialog-error").render())
        dialog.query_one("#stages").value = "base,peak-ood,sft-end,rl-end"
        await pilot.pause()
        shown = str(dialog.query_one("#dialog-command").render())
        await pilot.press("enter")
        await _closed(app, pilot)
    target = healer_home / "exports" / f"table-{runs['sft']}.md"
    assert shown == (f"$ healer export table {runs['sft']} --format markdown --stages base,peak-ood,sft-end,rl-end "
                     f"-o {target}")  # fmt: skip
    cli = tmp_path / "cli.md"
    result = healer("--db", str(path), *shown[2:].split()[1:-1], str(cli))
    assert result.returncode == 0, result.stderr
    body = [line for line in target.read_text().splitlines() if line.startswith("| ")]
    assert body == [line for line in cli.read_text().splitlines() if line.startswith("| ")]  # the CLI's table
    assert len(body) == 3 and body[1].startswith("| gp-sft → grpo-from-20 | 10.0 [5.5, 17.4] |")  # a header, 2 rows


async def test_p_pins_the_panels_while_the_cursor_moves(store: Seeded) -> None:
    path, runs = store
    app = _app_on(path, runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot)
        await pilot.press("p", "down", "space", "down")
        await _ready(app, pilot, lambda: app.snapshot.compared.keys() == {runs["grpo-from-20"]})
        assert app.snapshot.selected == runs["sft"] and app.poller.selected == runs["sft"]
        assert f"pinned run {runs['sft']}" in str(app.query_one("#header").render())
        await pilot.press("up", "up", "p")  # released on the pinned run: the panels follow the cursor again
        await pilot.press("down")
        await _ready(app, pilot, lambda: app.snapshot.selected == runs["grpo-from-20"])
        assert "pinned" not in str(app.query_one("#header").render())


async def test_x_shows_the_difference_of_two_checkpoints_rotation(store: Seeded) -> None:
    path, runs = store
    app = _app_on(path, runs)
    async with app.run_test(size=(120, 40)) as pilot:
        await _at_peak(app, pilot)
        await pilot.press("x", "right")  # 1@40 minus 1@20: every angle of the seed grows by (40 - 20) / 20 = 1°
        await pilot.pause()
        panel = app.query_one("#rotation")
        text = ["".join(t for t, _ in line) for line in panel.lines()]
        assert text[0].startswith("rotation Δ") and "1@40 − 1@20" in text[0]
        assert text[2].startswith(" 0 ▲1.0▲1.0▲1.0▲1.0"), text
        assert "   =" in text[5]  # layer 3's k: forced to 0 by dimension in both, not a difference
        await pilot.press("left", "x")  # on the base again: plain angles
        await pilot.pause()
        assert "".join(t for t, _ in panel.lines()[0]).startswith("rotation  module")


def test_a_difference_leaves_blank_what_the_base_lacks(store: Seeded) -> None:
    path, runs = store
    with Reader(path) as reader:
        spectra = reader.spectra(runs["sft"])
    rows = tuple(r for r in spectra if r.step == 40)
    plain = ["".join(t for t, _ in line) for line in rotation_lines(rows, rows, "1@40", "q", "u", 80, 20)]
    assert plain[0].startswith("rotation  module") and "▲" not in "".join(plain)
    base = tuple(r for r in spectra if r.step == 20 and r.layer == 0)
    diff = ["".join(t for t, _ in line) for line in rotation_lines(rows, rows, "1@40", "q", "u", 80, 20, base, "1@20")]
    assert diff[2].startswith(" 0 ▲1.0▲1.0▲1.0▲1.0")
    assert diff[3].split() == ["1"]  # layer 1: nothing to subtract, so no cell and no drift


@pytest.mark.parametrize("key", ["h", "e", "s"])
def test_snapshot_dialogs(snap_compare: Any, store: Seeded, key: str) -> None:
    async def dialog(pilot: Any) -> None:
        await _at_peak(pilot.app, pilot)
        await pilot.press(key)
        if key == "h":
            pilot.app.screen.query_one("#preset").value = "tiny-grpo"
        await pilot.pause(0.2)

    assert snap_compare(_app(store[0], store[1]["sft"]), terminal_size=(80, 24), run_before=dialog)


def test_snapshot_rotation_difference(snap_compare: Any, store: Seeded) -> None:
    async def diff(pilot: Any) -> None:
        await _settled(pilot)
        await pilot.press("left", "left", "x", "right")
        await pilot.pause(0.2)

    assert snap_compare(_app(store[0], store[1]["sft"]), terminal_size=(80, 24), run_before=diff)


# -- the GPU panel and settings that persist -------------------------------------------------------------------

RECORDING = Path(__file__).parent / "data" / "nvidia-smi-query-gpu.csv"  # nvidia-smi --format=csv,noheader,nounits


async def test_the_gpu_panel_shows_what_nvidia_smi_said_and_who_holds_each_gpu(store: Seeded) -> None:
    from healer.gpus import parse

    path, runs = store
    app = _app_on(path, runs, gpus=lambda: parse(RECORDING.read_text()))
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot, lambda: len(app.gpu_stats) == 8)
        await pilot.pause()
        panel = app.query_one("#gpus")
        assert panel.display
        text = str(panel.render()).splitlines()
        assert text[0].startswith("GPU 0 H100") and f"run {runs['live']} gp-sft-long" in text[0]  # assigned GPU 0
        assert " 98%" in text[0] and text[3].endswith("idle") and "n/a" in text[5]
        await pilot.press("g")  # hidden by hand, and so on the next start
        assert not panel.display and not app.settings.shows("gpus")
    none = _app_on(path, runs, gpus=lambda: [])
    async with none.run_test(size=(80, 24)) as pilot:
        await _ready(none, pilot)
        await pilot.pause(0.2)
        assert not none.query_one("#gpus").display  # a CPU box: no panel


async def test_theme_and_panes_come_from_tui_toml_and_are_kept(store: Seeded) -> None:
    from healer.tui.settings import Settings, config_path, load, save

    path, runs = store
    save(Settings(theme="nord", panes=("runs", "accuracy", "gpus")))
    settings, warnings = load()
    assert warnings == []
    app = _app_on(path, runs, settings=settings, save_settings=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot)
        assert app.theme == "nord" and not app.query_one("#rotation").display
        await pilot.press("3")
        assert app.query_one("#rotation").display
        app.theme = "gruvbox"
        await pilot.pause()
    kept, warnings = load()
    assert (kept.theme, kept.panes, warnings) == ("gruvbox", ("runs", "accuracy", "rotation", "gpus"), [])
    assert config_path().is_file()


def test_a_bad_setting_is_one_line_and_the_tui_starts_with_the_default(store: Seeded) -> None:
    from healer.tui.settings import config_path

    path, _ = store
    config_path().parent.mkdir(parents=True)
    config_path().write_text('theme = "neon"\nalarm_drop = 7\n')
    result = healer("--db", str(path), "tui", "--once", "--width", "80", "--height", "24")
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "theme = 'neon': not a Textual theme" in line and "using textual-dark" in line
    assert "healer" in result.stdout
    bad = healer("--db", str(path), "tui", "--once", "--theme", "neon")
    assert bad.returncode == 2 and "--theme 'neon'" in bad.stderr and "Traceback" not in bad.stderr


# -- the lineage from the selected run on, `z` for all of it ------------------------------------------------------


def _continued(path: Path, runs: dict[str, int]) -> dict[str, int]:
    """SFT continued from the SFT run's checkpoint at 40 (as the demo's stage 1 continues stage 0), and GRPO from it."""
    from tests.test_tui import _eval as seed_eval

    with Store(path) as writer:
        more = writer.create_run(kind="sft", method="sft", name="sft-more", spec={}, parent_run=runs["sft"],
                                 parent_step=40, queued=0)  # fmt: skip
        for step, (id_correct, ood_correct) in ((0, (60, 14)), (10, (65, 11)), (20, (70, 8))):
            seed_eval(writer, more.id, step, "id", id_correct)
            seed_eval(writer, more.id, step, "ood", ood_correct)
        rl = writer.create_run(kind="rl", method="grpo", name="grpo-more", spec={}, parent_run=more.id,
                               parent_step=20, queued=0)  # fmt: skip
        seed_eval(writer, rl.id, 5, "ood", 12)
    return {"more": more.id, "rl": rl.id}


def test_the_charts_start_at_the_selected_run_and_an_rl_run_keeps_its_parent(store: Seeded) -> None:
    from healer.tui.snapshot import take, zoomed

    path, runs = store
    added = _continued(path, runs)
    with Reader(path) as reader:
        for selected, first_run in ((added["more"], added["more"]), (added["rl"], added["more"]),
                                    (runs["sft"], runs["sft"])):  # fmt: skip
            snapshot = take(reader, selected, now=CLOCK)
            kinds = {run: row.kind for run, row in snapshot.rows.items()}
            full, view = snapshot.lineage, zoomed(snapshot.lineage, kinds)
            assert view is not None and full is not None
            assert view.runs[0][0] == first_run
            lo = view.runs[0][2]
            assert [p.lineage_step for p in view.points] == [
                p.lineage_step for p in full.points if p.lineage_step >= lo
            ]
            if first_run == added["more"]:
                assert lo == 40 and (view.points[0].run, view.points[0].step) == (runs["sft"], 40)  # where it started
                assert all(s >= 40 for s, _ in view.loss) and view.peak_ood == 40


async def test_z_shows_the_whole_lineage_and_back(store: Seeded) -> None:
    path, runs = store
    added = _continued(path, runs)
    app = HealerApp(path, clock=lambda: CLOCK, interval=0.1, select=added["more"])
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot, lambda: app.snapshot.selected == added["more"])
        assert app.snapshot.lineage.points[0].lineage_step == 40
        await pilot.press("z")
        assert app.whole_lineage and app.snapshot.lineage.points[0].lineage_step == 0
        assert str(app.query_one("#readout").render()).startswith(f"run {added['more']}@20")  # the cursor stayed
        await pilot.press("z")
        assert not app.whole_lineage and app.snapshot.lineage.points[0].lineage_step == 40


async def test_c_stops_a_running_process_with_sigterm_and_records_the_cancel(store: Seeded) -> None:
    """`c` on a running run: SIGTERM to its process group (as `healer queue cancel`), then the row says cancelled."""
    import signal
    import socket
    import subprocess
    import sys

    path, runs = store
    code = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
    code += "print('ready', flush=True)\n"
    child = subprocess.Popen(  # a run's process: its own session, exits 143 on SIGTERM as the training child does
        [sys.executable, "-c", code + "time.sleep(120)"], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with Store(path) as writer:
            run = writer.create_run(kind="sft", method="sft", name="training-now", spec={}, total_steps=100, queued=1)
            writer.claim(run.id, worker="box:1", host=socket.gethostname(), assigned_gpus=None)
            writer.mark_running(run.id, pid=child.pid, host=socket.gethostname())
        app = _app_on(path, runs)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(app, pilot, lambda: run.id in app.snapshot.rows)
            await _select(app, pilot, run.id)
            await pilot.press("c")
            assert str(app.screen.query_one("#dialog-command").render()) == f"$ healer queue cancel {run.id}"
            await pilot.press("enter")
            await _closed(app, pilot)
        assert child.wait(timeout=30) == 143  # it got SIGTERM (not SIGKILL: -9)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()
    with Store(path) as check:
        cancelled = check.run(run.id)
    assert (cancelled.status, cancelled.reason) == ("cancelled", "cancelled (healer queue cancel)")


async def test_a_runs_table_message_handled_after_the_table_left_is_not_a_crash(store: Seeded) -> None:
    """A cursor message from the runs table can be handled after the table left the screen (the app shutting down,
    as CI once caught): the app reads the run from the message's own table, not from a query that finds nothing."""
    from textual.widgets import DataTable

    from healer.tui.panels.runs import RunsPane

    path, runs = store
    app = _app_on(path, runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot, lambda: runs["sft"] in app.snapshot.rows)
        table = app.query_one(RunsPane)
        other = next(i for i, line in enumerate(table.lines) if line.run != table.selected_run)
        with table.prevent(DataTable.RowHighlighted):  # moved without its message, which is posted below
            table.move_cursor(row=other)
        await pilot.pause()
        moved_to = table.selected_run
        assert moved_to is not None and moved_to != app.poller.selected
        message = DataTable.RowHighlighted(table, other, table.coordinate_to_cell_key((other, 0)).row_key)
        await table.remove()
        app.post_message(message)
        await pilot.pause()
        await pilot.pause()
        assert app.is_running and app.poller.selected == moved_to, "the message's own table named the run"


async def test_a_snapshot_handled_while_the_app_shuts_down_is_not_a_crash(store: Seeded) -> None:
    """Textual's shutdown stops the app running, then removes the panes one by one: a snapshot handled in between
    (CI caught it: the queue pane gone, the runs pane still there) is dropped, not a crash."""
    from healer.tui.app import SnapshotReady
    from healer.tui.panels.queue import QueuePane
    from healer.tui.poller import Poller

    path, runs = store
    app = _app_on(path, runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot, lambda: runs["sft"] in app.snapshot.rows)
        raw = Poller(path).poll()
        assert raw is not None
        await app.query_one(QueuePane).remove()
        app._running = False  # the state textual's App._shutdown leaves before it prunes the screens
        try:
            app.on_snapshot_ready(SnapshotReady(raw))
        finally:
            app._running = True
        assert app.snapshot is not None and app.query_one("#views")
