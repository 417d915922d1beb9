"""`healer tui`: the live dashboard. Bindings and routing only: data comes as snapshots from the poller's thread,
panels render them (attributes down, messages up); nothing here reads the store."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, Footer, Input, Static

from healer.errors import HealerError
from healer.gpus import GpuStat, holders
from healer.tui import actions
from healer.tui.dialogs import (
    ConfirmDialog,
    EvalDialog,
    ExportDialog,
    HealDialog,
    QueueRLDialog,
    SpectraDialog,
    rl_presets,
)
from healer.tui.panels.accuracy import AccuracyPanel
from healer.tui.panels.detail import DetailScreen
from healer.tui.panels.gpus import GpuPanel
from healer.tui.panels.queue import QueuePane
from healer.tui.panels.rotation import RotationPanel
from healer.tui.panels.runs import ALARM_DROP, RunsPane, run_lines
from healer.tui.poller import GpuReading, Poller
from healer.tui.settings import DEFAULTS, Settings, with_pane
from healer.tui.settings import save as save_settings
from healer.tui.snapshot import Lineage, Point, Snapshot, zoomed

EMPTY = "no runs yet: `healer demo` or `healer run PRESET`"
PANES = {"1": "runs", "2": "accuracy", "3": "rotation", "g": "gpus"}
WRITES = {
    "queue_rl",
    "heal",
    "evaluate",
    "spectra",
    "export",
    "keep",
    "pause",
    "retry",
    "cancel_run",
    "priority",
    "delete",
}  # the actions that write (off under --read-only; `E` writes a file, not the store, but a read-only box may not)
DASHBOARD_ACTIONS = {"cursor", "toggle", "queue", "filter", "back", "rotation", "compare", "pin", "diff", "zoom",
                     *WRITES}  # fmt: skip


class SnapshotReady(Message):
    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class GpusRead(Message):
    def __init__(self, reading: GpuReading) -> None:
        super().__init__()
        self.reading = reading


class Notice(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


def readout(lineage: Lineage | None, cursor: int | None) -> str:
    """The one line under the panels: the checkpoint under the cursor (pure, tested without Textual)."""
    if lineage is None or cursor is None or not lineage.points:
        return "no evaluated checkpoints in this lineage yet"
    point = lineage.points[cursor]
    parts = [f"run {point.run}@{point.step}", f"axis {point.lineage_step}"]
    for name, acc in (("ID", point.id), ("OOD", point.ood)):
        if acc is not None:
            parts.append(f"{name} {100 * acc.accuracy:.1f} [{100 * acc.ci_low:.1f}, {100 * acc.ci_high:.1f}]")
    angle, drift = rotation_at(lineage, point)
    if angle is not None and drift is not None:
        parts.append(f"angle {angle:.2f}° σ drift {100 * drift:.2f}%")
    if point.loss is not None:
        parts.append(f"loss {point.loss:.4g}")
    picks = list(point.picks) + (["lineage OOD peak"] if point.lineage_step == lineage.peak_ood else [])
    if picks:
        parts.append(", ".join(dict.fromkeys(picks)))
    return " · ".join(parts)


def rotation_at(lineage: Lineage, point: Point) -> tuple[float | None, float | None]:
    """Mean angle and mean singular-value drift over the checkpoint's matrices (side u)."""
    rows = [r for r in lineage.spectra_at(point) if r.side == "u"]
    if not rows:
        return None, None
    return sum(r.mean_angle_deg for r in rows) / len(rows), sum(r.sigma_rel_drift for r in rows) / len(rows)


class HealerApp(App[None]):
    """Watch runs, their ID/OOD accuracy across SFT and RL, and the rotation of their weights, live."""

    CSS_PATH = "healer.tcss"
    TITLE = "healer"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+o", "read_only_note", "read-only: actions off"),  # in the footer under --read-only only
        Binding("q", "quit", "quit"),
        Binding("question_mark", "keys", "keys"),
        Binding("slash", "filter", "filter", show=False),
        Binding("left", "cursor(-1)", "ckpt", priority=True),
        Binding("right", "cursor(1)", "ckpt", priority=True),
        Binding("1", "toggle('runs')", "runs", show=False),
        Binding("2", "toggle('accuracy')", "accuracy", show=False),
        Binding("3", "toggle('rotation')", "rotation", show=False),
        Binding("g", "toggle('gpus')", "GPUs", show=False),
        Binding("z", "zoom", "whole lineage", show=False),
        Binding("4", "queue", "queue"),
        Binding("space", "compare", "compare", show=False),
        Binding("r", "queue_rl", "RL from here"),
        Binding("h", "heal", "heal sweep", show=False),
        Binding("e", "evaluate", "evaluate", show=False),
        Binding("s", "spectra", "spectra", show=False),
        Binding("E", "export", "export table", show=False),
        Binding("p", "pin", "pin run", show=False),
        Binding("x", "diff", "rotation diff", show=False),
        Binding("d", "delete", "delete run", show=False),
        Binding("k", "keep", "keep", show=False),
        Binding("P", "pause", "pause queue", show=False),
        Binding("R", "retry", "retry", show=False),
        Binding("c", "cancel_run", "cancel", show=False),
        Binding("plus", "priority(1)", "priority +1", show=False),
        Binding("minus", "priority(-1)", "priority -1", show=False),
        Binding("m", "rotation('module')", "module", show=False),
        Binding("u", "rotation('u')", "side u", show=False),
        Binding("v", "rotation('v')", "side v", show=False),
        Binding("escape", "back", "back", show=False),
    ]

    def __init__(self, db: Path, *, immutable: bool = False, clock: Callable[[], float] = time.time,
                 interval: float = 1.0, select: int | None = None, alarm_drop: float = ALARM_DROP,
                 settings: Settings = DEFAULTS, save_settings: bool = False,
                 gpus: Callable[[], list[GpuStat]] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.settings = settings  # theme and shown panes; saved to tui.toml as the user changes them when save_settings
        self.save_settings = save_settings
        self.alarm_drop = alarm_drop
        self._alarmed: set[int] = set()  # runs whose forgetting alarm was already notified
        self.headless_screen = False  # --once: a screen to print, no toasts over it (the runs pane still flags ⚠)
        self.db = db
        self.clock = clock
        self.interval = interval
        self.poller = Poller(db, immutable=immutable, clock=clock, gpus=gpus)
        self.gpu_stats: tuple[GpuStat, ...] = ()
        self.poller.selected = select  # None: a run training now, else the SFT run with the most RL runs from it
        self.snapshot: Snapshot | None = None
        self.cursor: int | None = None
        self.query_text = ""
        self.pinned: int | None = None  # `p`: the panels stay on this run while the runs pane's cursor moves
        self.whole_lineage = False  # `z`: the charts from the lineage's root, not from the selected run
        self.raw_lineage: Lineage | None = None  # the snapshot's lineage before the zoom
        self.diff_base: Point | None = None  # `x`: the rotation map shows the cursor's checkpoint minus this one
        self._stop = threading.Event()

    # -- layout --------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(f"healer · {self.db}", id="header")
        with ContentSwitcher(initial="loading", id="views"):
            yield Static("reading the store …", id="loading")
            yield Static(EMPTY, id="empty")
            with Vertical(id="dashboard"):
                yield RunsPane(id="runs")
                yield GpuPanel(id="gpus")
                with Horizontal(id="panels"):
                    yield AccuracyPanel(id="accuracy")
                    yield RotationPanel(id="rotation")
            yield QueuePane(id="queue")
        yield Static("", id="readout")
        yield Input(placeholder="filter runs by name, status, method or id (esc closes)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.theme = self.settings.theme
        for pane in PANES.values():
            if not self.settings.shows(pane):
                self.query_one(f"#{pane}").display = False
        self.watch(self, "theme", self._theme_changed, init=False)
        self.poll()

    def _theme_changed(self, theme: str) -> None:
        self._save(dataclasses.replace(self.settings, theme=theme))

    def _save(self, settings: Settings) -> None:
        """Keep a change of theme or panes for the next start (tui.toml), unless this app only shows a screen."""
        self.settings = settings
        if self.save_settings:
            try:
                save_settings(settings)
            except OSError as exc:
                self.notify(f"settings not saved: {exc}", severity="warning")

    def on_unmount(self) -> None:
        self._stop.set()
        self.poller.wake.set()

    @work(thread=True, exclusive=True, group="poller")
    def poll(self) -> None:
        def send(item: Snapshot | GpuReading | str) -> None:
            if isinstance(item, Snapshot):
                self.post_message(SnapshotReady(item))
            elif isinstance(item, GpuReading):
                self.post_message(GpusRead(item))
            else:
                self.post_message(Notice(item))

        self.poller.run(send, self._stop, self.interval)

    # -- snapshots -----------------------------------------------------------------------------------------

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        if self._leaving() or not self.query("#views") or not self.query(RunsPane):
            return
        self.raw_lineage = message.snapshot.lineage
        snapshot = self._view(message.snapshot)
        previous = self.snapshot
        self.snapshot = snapshot
        views = self.query_one("#views", ContentSwitcher)
        if snapshot.empty:
            views.current = "empty"
        elif views.current in ("loading", "empty"):
            views.current = "dashboard"
            self.query_one(RunsPane).focus()
        self._keep_cursor(previous, snapshot)
        lines = run_lines(snapshot, self.query_text, alarm_drop=self.alarm_drop)
        pane = self.query_one(RunsPane)
        pane.show(lines, snapshot.selected if self.pinned is None else pane.selected_run)
        for line in run_lines(snapshot, alarm_drop=self.alarm_drop):
            if line.alarm and line.run not in self._alarmed:  # once per run
                self._alarmed.add(line.run)
                if not self.headless_screen:
                    self.notify(line.alarm, title="forgetting", severity="warning", timeout=12)
        self.query_one(QueuePane).show(snapshot.queue)
        self._render_panels()
        self._show_gpus()
        self._header(None)

    def _leaving(self) -> bool:
        """The app is closing: a poll that finished meanwhile has no screen to go to. Textual stops running before it
        removes the widgets one by one (and unmounts the app, which sets _stop, after them), so a message handled
        in between would find some panes and not others."""
        return self._stop.is_set() or not self.is_running

    def on_gpus_read(self, message: GpusRead) -> None:
        if self._leaving():
            return
        self.gpu_stats = message.reading.stats
        self._show_gpus()

    def _show_gpus(self) -> None:
        """Each GPU and the runs holding it (hidden while nvidia-smi reports none, or when the user hid the pane)."""
        panel = self.query_one(GpuPanel)
        panel.show(list(self.gpu_stats), holders(self.snapshot.queue if self.snapshot else ()))
        panel.display = bool(self.gpu_stats) and self.settings.shows("gpus")

    def on_notice(self, message: Notice) -> None:
        if not self._leaving():
            self._header(message.text)

    def _header(self, notice: str | None) -> None:
        snapshot = self.snapshot
        parts = [f"healer · {self.db.name}" + (" (read-only: actions off)" if self.poller.immutable else "")]
        if snapshot is not None:
            runs = [r for r in snapshot.rows.values() if not (r.kind in ("eval", "spectra") and r.parent_run)]
            running = [r for r in runs if r.status == "running"]
            dead = sum(1 for r in running if r.alive is False)
            parts.append(f"{len(runs)} runs, {len(running) - dead} running" + (f", {dead} dead" if dead else ""))
            if snapshot.paused:
                parts.append("queue paused")
            if self.pinned is not None:
                parts.append(f"pinned run {self.pinned} (p releases)")
            if self.diff_base is not None:
                parts.append(f"rotation minus {self.diff_base.run}@{self.diff_base.step} (x clears)")
        if notice:
            parts.append(notice)
        self.query_one("#header", Static).update(" · ".join(parts))

    def _view(self, snapshot: Snapshot) -> Snapshot:
        """The snapshot as the charts show it: its lineage from the selected run on, unless `z` asked for all of it."""
        if self.whole_lineage or snapshot.lineage is None:
            return snapshot
        kinds = {run: row.kind for run, row in snapshot.rows.items()}
        compared = {run: zoomed(view, kinds) or view for run, view in snapshot.compared.items()}
        return dataclasses.replace(snapshot, lineage=zoomed(self.raw_lineage, kinds), compared=compared)

    def action_zoom(self) -> None:
        """`z`: the whole lineage (from its root, pretraining included) or from the selected run on."""
        if self.snapshot is None:
            return
        self.whole_lineage = not self.whole_lineage
        previous = self.snapshot
        self.snapshot = self._view(dataclasses.replace(self.snapshot, lineage=self.raw_lineage))
        old = previous.lineage.points[self.cursor] if previous.lineage and self.cursor is not None else None
        keys = [(p.run, p.step) for p in self.snapshot.lineage.points] if self.snapshot.lineage else []
        key = (old.run, old.step) if old is not None else None
        self.cursor = keys.index(key) if key in keys else (len(keys) - 1 if keys else None)
        self._render_panels()
        self.notify("the whole lineage, from its root" if self.whole_lineage else "the lineage from this run on")

    def _keep_cursor(self, previous: Snapshot | None, snapshot: Snapshot) -> None:
        """The cursor stays on its checkpoint across polls, or follows the newest one while it sits on the last (as
        `tail -f` does); a new selection starts it at the last checkpoint."""
        lineage = snapshot.lineage
        if lineage is None or not lineage.points:
            self.cursor = None
            return
        old = previous.lineage if previous else None
        last = len(lineage.points) - 1
        if old is None or old.run != lineage.run or self.cursor is None or self.cursor >= len(old.points) - 1:
            self.cursor = last
            return
        key = (old.points[self.cursor].run, old.points[self.cursor].step)
        keys = [(p.run, p.step) for p in lineage.points]
        self.cursor = keys.index(key) if key in keys else last

    def _render_panels(self) -> None:
        snapshot = self.snapshot
        lineage = snapshot.lineage if snapshot else None
        compared = snapshot.compared if snapshot else {}
        overlays = tuple((run, snapshot.rows[run].name, view) for run, view in compared.items()
                         if snapshot is not None and run in snapshot.rows)  # fmt: skip
        self.query_one(AccuracyPanel).show(lineage, self.cursor, overlays)
        point = lineage.points[self.cursor] if lineage and self.cursor is not None else None
        rotation = self.query_one(RotationPanel)
        if lineage is None or point is None:
            rotation.show((), (), "")
        else:
            base = self.diff_base
            base_rows = lineage.spectra_at(base) if base is not None and base != point else ()
            rotation.show(lineage.spectra_at(point), lineage.rotation.get(point.run, ()), f"{point.run}@{point.step}",
                          base_rows, f"{base.run}@{base.step}" if base_rows and base else "")  # fmt: skip
        self.query_one("#readout", Static).update(readout(lineage, self.cursor))

    # -- actions -------------------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#runs")
    def _detail(self, event: DataTable.RowSelected) -> None:
        run = _run_of(event.data_table)
        if run is None:
            return
        lineage = self.snapshot.lineage if self.snapshot else None
        point = lineage.points[self.cursor] if lineage and self.cursor is not None else None
        step = point.step if point is not None and point.run == run else None
        self.push_screen(DetailScreen(self.db, run, step, immutable=self.poller.immutable))

    @on(DataTable.RowHighlighted, "#runs")
    def _selected(self, event: DataTable.RowHighlighted) -> None:
        run = _run_of(event.data_table)
        if run is not None and run != self.poller.selected and self.pinned is None:
            self.poller.selected = run
            self.poller.wake.set()

    def on_accuracy_panel_point_clicked(self, message: AccuracyPanel.PointClicked) -> None:
        if self.snapshot is not None and self.snapshot.lineage is not None:
            self.cursor = message.index
            self._render_panels()

    def action_cursor(self, step: int) -> None:
        lineage = self.snapshot.lineage if self.snapshot else None
        if lineage is None or not lineage.points or self.cursor is None:
            return
        self.cursor = max(0, min(len(lineage.points) - 1, self.cursor + step))
        self._render_panels()

    # -- actions that write (each a CLI command, confirmed in a dialog) --------------------------------------

    def _point(self) -> Point | None:
        lineage = self.snapshot.lineage if self.snapshot else None
        return lineage.points[self.cursor] if lineage and self.cursor is not None else None

    def _act(self, dialog: ConfirmDialog) -> None:
        if self.poller.immutable:
            self.notify("read-only (--read-only): actions are off; open the store without it to act",
                        severity="warning")  # fmt: skip
            return
        self.push_screen(dialog, self._acted)

    def _acted(self, result: str | None) -> None:
        if result:
            self.notify(result)
            self.poller.wake.set()  # show what it wrote now, not in a second

    def action_queue_rl(self) -> None:
        point = self._point()
        if point is None:
            self.notify("no checkpoint under the cursor: select a run with evaluated checkpoints", severity="warning")
            return
        presets = self._rl_presets()
        if presets:
            self._act(QueueRLDialog(self.db, point.run, point.step, presets))

    def _rl_presets(self) -> list[str] | None:
        presets = rl_presets()
        if not presets:
            self.notify("no RL presets found (method = grpo or rloo): `healer presets ls`", severity="warning")
            return None
        return sorted(presets, key=lambda name: (not name.startswith("tiny-") if self._cpu_only() else False, name))

    @staticmethod
    def _cpu_only() -> bool:
        import shutil

        return shutil.which("nvidia-smi") is None

    def _saved_point(self, what: str) -> Point | None:
        """The checkpoint under the cursor, when it is one a run saved (step 0 is the model it started from)."""
        point = self._point()
        if point is None:
            self.notify(f"no checkpoint under the cursor to {what}: select a run with evaluated checkpoints",
                        severity="warning")  # fmt: skip
        return point

    def action_heal(self) -> None:
        point = self._saved_point("start a heal sweep from")
        presets = self._rl_presets() if point is not None else None
        if point is not None and presets:
            self._act(HealDialog(self.db, point.run, point.step, presets))

    def action_evaluate(self) -> None:
        point = self._saved_point("evaluate")
        if point is not None:
            self._act(EvalDialog(self.db, point.run, point.step))

    def action_spectra(self) -> None:
        point = self._saved_point("measure")
        if point is not None:
            self._act(SpectraDialog(self.db, point.run, point.step))

    def action_export(self) -> None:
        lineage = self.snapshot.lineage if self.snapshot else None
        if lineage is None:
            self.notify("no lineage to export: select a run", severity="warning")
            return
        rows = self.snapshot.rows if self.snapshot else {}
        row = rows.get(lineage.run)
        with_rl = (row is not None and row.kind == "rl") or any(r.parent_run == lineage.run and r.kind == "rl"
                                                                for r in rows.values())  # fmt: skip
        stages = "base,peak-ood,sft-end,rl-end" if with_rl else "base,peak-ood,sft-end"
        self._act(ExportDialog(self.db, lineage.run, stages))

    def action_delete(self) -> None:
        run = self.query_one(RunsPane).selected_run
        row = self.snapshot.rows.get(run) if self.snapshot and run is not None else None
        if row is None:
            return
        if row.status not in ("done", "failed", "cancelled"):
            self.notify(f"run {run} is {row.status}; only a finished run can be deleted (c cancels it first)",
                        severity="warning")  # fmt: skip
            return
        self._act(ConfirmDialog(actions.delete(row.id), self.db))

    def action_pin(self) -> None:
        """`p`: keep the panels on the selected run while the cursor moves over others (to overlay them with space);
        again: release."""
        run = self.query_one(RunsPane).selected_run
        if self.pinned is not None and (run is None or run == self.pinned):
            self.pinned = None
            if run is not None and run != self.poller.selected:
                self.poller.selected = run
                self.poller.wake.set()
        elif run is not None:
            self.pinned = run
            self.poller.selected = run
            self.poller.wake.set()
        pane = self.query_one(RunsPane)
        pane.pinned = self.pinned
        pane.show(pane.lines, pane.selected_run)
        self._header(None)

    def action_diff(self) -> None:
        """`x`: the rotation map shows the cursor's checkpoint minus this one (move the cursor to compare); again on
        the same checkpoint, or with nothing under the cursor: back to plain angles."""
        point = self._point()
        self.diff_base = None if point is None or point == self.diff_base else point
        self._render_panels()
        self._header(None)

    def action_keep(self) -> None:
        point = self._point()
        if point is None or point.step == 0:
            self.notify("move the cursor to a checkpoint a run saved (step 0 is the model it started from)",
                        severity="warning")  # fmt: skip
            return
        self._act(ConfirmDialog(actions.keep(point.run, point.step, release="kept" in point.picks), self.db))

    def action_pause(self) -> None:
        self._act(ConfirmDialog(actions.pause(bool(self.snapshot and self.snapshot.paused)), self.db))

    def action_retry(self) -> None:
        run = self.query_one(RunsPane).selected_run
        if run is not None:
            self._act(ConfirmDialog(actions.retry(run), self.db))

    def action_cancel_run(self) -> None:
        run = self.query_one(RunsPane).selected_run
        if run is not None:
            self._act(ConfirmDialog(actions.cancel(run), self.db))

    def action_priority(self, delta: int) -> None:
        """`+`/`-`: at once, no dialog (it is undone by the other key)."""
        run = self.query_one(RunsPane).selected_run
        if run is None or self.snapshot is None or run not in self.snapshot.rows:
            return
        if self.poller.immutable:
            self.notify("read-only (--read-only): actions are off", severity="warning")
            return
        current = next((r.priority for r in self.snapshot.queue if r.id == run), 0)
        try:
            self._acted(actions.priority(run, current + delta).do(self.db))
        except HealerError as exc:
            self.notify(str(exc), severity="warning")

    def action_compare(self) -> None:
        """`space`: overlay the selected run's OOD accuracy on the chart (again: take it off)."""
        run = self.query_one(RunsPane).selected_run
        if run is None:
            return
        self.poller.compare = self.poller.compare ^ {run}
        self.query_one(RunsPane).marked = set(self.poller.compare)
        self.poller.wake.set()

    def action_rotation(self, what: str) -> None:
        """`m` cycles the heatmap's module, `u`/`v` pick its side, whichever pane has the focus."""
        panel = self.query_one(RotationPanel)
        if what == "module":
            panel.action_next_module()
        else:
            panel.action_side(what)

    def action_toggle(self, pane: str) -> None:
        """Show or hide a pane; the choice is kept for the next start."""
        widget = self.query_one(f"#{pane}")
        shown = not self.settings.shows(pane)
        self._save(with_pane(self.settings, pane, shown))
        if pane == "gpus":
            self._show_gpus()
            if not self.gpu_stats:
                self.notify("no GPUs: nvidia-smi reports none on this machine", severity="information")
        else:
            widget.display = self.settings.shows(pane)

    def action_queue(self) -> None:
        views = self.query_one("#views", ContentSwitcher)
        if views.current == "queue":
            views.current = "empty" if self.snapshot is None or self.snapshot.empty else "dashboard"
        else:
            views.current = "queue"
            self.query_one(QueuePane).focus()

    def action_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.display = True
        field.focus()

    def action_back(self) -> None:
        field = self.query_one("#filter", Input)
        if field.display:
            field.display = False
            self.query_one(RunsPane).focus()
        elif self.screen.query("HelpPanel"):
            self.action_hide_help_panel()

    @on(Input.Changed, "#filter")
    def _filter(self, event: Input.Changed) -> None:
        self.query_text = event.value
        if self.snapshot is not None:
            self.query_one(RunsPane).show(run_lines(self.snapshot, self.query_text, alarm_drop=self.alarm_drop),
                                          self.poller.selected)  # fmt: skip

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        self.query_one(RunsPane).focus()

    def action_read_only_note(self) -> None:
        self.notify("read-only (--read-only): actions are off; open the store without it to act", severity="warning")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "read_only_note":
            return self.poller.immutable  # False hides it from the footer
        if action in DASHBOARD_ACTIONS and isinstance(self.screen, DetailScreen):
            return False  # the detail screen has keys of its own
        return not (
            action in {"cursor", "rotation", "compare", *WRITES} and isinstance(self.focused, Input)
        )  # the filter's keys

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Queue", "Show the queue (or back to the dashboard)", self.action_queue)
        yield SystemCommand("Filter runs", "Filter the runs tree by name, status, method or id", self.action_filter)
        for key, pane in PANES.items():
            yield SystemCommand(f"Toggle {pane}", f"Show or hide the {pane} pane (key {key})",
                                lambda pane=pane: self.action_toggle(pane))  # fmt: skip

    # -- headless ------------------------------------------------------------------------------------------

    def screen_text(self) -> str:
        """The screen as plain text (what `--once` prints)."""
        import io

        from rich.console import Console

        width, height = self.size
        console = Console(width=width, height=height, file=io.StringIO(), force_terminal=False, color_system=None,
                          record=True, legacy_windows=False, safe_box=False)  # fmt: skip
        console.print(self.screen._compositor.render_update(full=True, screen_stack=self._background_screens))
        return "\n".join(line.rstrip() for line in console.export_text().splitlines())


async def _snapshot_taken(app: HealerApp, timeout: float = 30.0) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while app.snapshot is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def once(db: Path, width: int, height: int, immutable: bool = False, svg: Path | None = None,
         select: int | None = None, settings: Settings = DEFAULTS) -> str:  # fmt: skip
    """Start the app headless, wait for the first snapshot, return the first screen as text (and save it as an SVG
    screenshot when `svg` names a file)."""
    import asyncio

    app = HealerApp(db, immutable=immutable, select=select, settings=settings)
    app.headless_screen = True
    text: list[str] = []

    async def pilot(p: object) -> None:
        await _snapshot_taken(app)
        await p.pause()  # type: ignore[attr-defined]
        await p.pause()  # type: ignore[attr-defined]
        text.append(app.screen_text())
        if svg is not None:
            svg.write_text(app.export_screenshot(title="healer tui"))
        app.exit()

    asyncio.run(app.run_async(headless=True, size=(width, height), auto_pilot=pilot))  # type: ignore[arg-type]
    return text[0] if text else ""


def _run_of(table: DataTable) -> int | None:  # type: ignore[type-arg]
    """The run under the cursor of the table a message came from. Not `query_one(RunsPane)`: the message may be
    handled after another screen took over (a dialog, or the app shutting down), where that query finds nothing."""
    return table.selected_run if isinstance(table, RunsPane) else None
