"""The accuracy panel: ID and OOD accuracy per checkpoint on the lineage's step axis, and the training loss below.

What it must make visible (the paper's point): OOD accuracy peaks early in SFT and then declines while the loss keeps
falling (the loss does not find the OOD peak), and RL started from SFT checkpoints (the start lines) changes OOD.

`series` is the pure part (no Textual): it turns a `Lineage` into the numbers drawn. `AccuracyPanel` draws them with
textual-plot (pinned exactly in pyproject.toml: `_Plot` below uses its private rendering hooks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.events import Click, Resize
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static
from textual_plot import HiResMode, LegendLocation, PlotWidget
from textual_plot.axis_formatter import NumericAxisFormatter
from textual_plot.plot_widget import ScatterPlot

from healer.tui.snapshot import Accuracy, Lineage

EMPTY = "no evaluations yet: checkpoints are evaluated as they are saved (`healer eval RUN`)"

ID_STYLE, ID_MARK = "cyan", "●"
OOD_STYLE, OOD_MARK = "yellow", "◆"
PEAK_STYLE, PEAK_MARK = "bold red", "★"
START_STYLE = "magenta"
CURSOR_STYLE = "bold bright_white"
OVERLAY_STYLES = ("bright_magenta", "bright_green", "bright_blue", "bright_red", "orange1", "turquoise2")
OVERLAY_MARK = "◇"  # an overlaid run's OOD accuracy (`space` in the runs pane)
LOSS_STYLE = "green"


@dataclass(frozen=True)
class Split:
    """One split's accuracies in %, at the points that have it (x is the lineage step)."""

    x: tuple[int, ...]
    y: tuple[float, ...]
    low: tuple[float, ...]  # Wilson 95 % interval, in %
    high: tuple[float, ...]


@dataclass(frozen=True)
class ChartData:
    steps: tuple[int, ...]  # the lineage step of every point, index-aligned with lineage.points (the cursor's axis)
    id: Split
    ood: Split
    loss_x: tuple[int, ...]
    loss_y: tuple[float, ...]
    starts: tuple[tuple[int, str], ...]  # (lineage step, label) of each run started inside the lineage
    peak: int | None  # lineage step of the OOD peak
    peak_y: float | None  # OOD accuracy there, in %
    x_range: tuple[float, float]  # shared by both charts: 0 (or less) .. the last step of anything drawn

    def at(self, cursor: int | None) -> int | None:
        """The lineage step of point `cursor`, or None when there is no such point."""
        return self.steps[cursor] if cursor is not None and 0 <= cursor < len(self.steps) else None


def _split(lineage: Lineage, name: str) -> Split:
    xs, ys, lows, highs = [], [], [], []
    for p in lineage.points:
        acc: Accuracy | None = getattr(p, name)
        if acc is None:
            continue
        xs.append(p.lineage_step)
        ys.append(100 * acc.accuracy)
        lows.append(100 * acc.ci_low)
        highs.append(100 * acc.ci_high)
    return Split(tuple(xs), tuple(ys), tuple(lows), tuple(highs))


def overlay_style(run: int) -> str:
    """A compared run's colour: the same run keeps its colour however the selection changes."""
    return OVERLAY_STYLES[run % len(OVERLAY_STYLES)]


def series(lineage: Lineage) -> ChartData:
    """What the panel draws for `lineage` (pure; tested without a terminal)."""
    ood = _split(lineage, "ood")
    peak_y = None
    if lineage.peak_ood is not None and lineage.peak_ood in ood.x:
        peak_y = ood.y[ood.x.index(lineage.peak_ood)]
    steps = tuple(p.lineage_step for p in lineage.points)
    starts = tuple((s.lineage_step, f"{s.name} ({s.method})") for s in lineage.starts)
    xs = [*steps, *(s for s, _ in lineage.loss), *(s for s, _ in starts)]
    lo = float(min([lineage.runs[0][2] if lineage.runs else 0, *xs]))  # 0, or where a zoomed lineage starts
    hi = float(max(xs, default=lo))
    return ChartData(
        steps=steps,
        id=_split(lineage, "id"),
        ood=ood,
        loss_x=tuple(s for s, _ in lineage.loss),
        loss_y=tuple(v for _, v in lineage.loss),
        starts=starts,
        peak=lineage.peak_ood,
        peak_y=peak_y,
        x_range=(lo, hi if hi > lo else lo + 1),
    )


def readout(data: ChartData, lineage: Lineage, cursor: int | None) -> Text:
    """The panel's one-line caption: the cursor's checkpoint, coloured like its series (so it doubles as a legend)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    step = data.at(cursor)
    if step is None:
        text.append(f"{ID_MARK} ID", ID_STYLE)
        text.append(f"  {OOD_MARK} OOD", OOD_STYLE)
        text.append(f"  {PEAK_MARK} peak", PEAK_STYLE)
        text.append("  │ start", START_STYLE)
        return text
    assert cursor is not None
    point = lineage.points[cursor]
    text.append(f"@{step} ")
    for mark, label, acc, style in ((ID_MARK, "ID", point.id, ID_STYLE), (OOD_MARK, "OOD", point.ood, OOD_STYLE)):
        if acc is not None:
            text.append(
                f"{mark}{label} {100 * acc.accuracy:.0f}% {100 * acc.ci_low:.0f}–{100 * acc.ci_high:.0f} ", style
            )
    if step == data.peak:
        text.append(f"{PEAK_MARK}peak ", PEAK_STYLE)
    if point.loss is not None:
        text.append(f"loss {point.loss:.3g}", LOSS_STYLE)
    return text


def legend_caption(caption: Text, overlays: list[tuple[int, str, str]], width: int) -> Text:
    """The caption with a legend entry per overlaid run; where the line is too narrow for both, the legend wins (the
    readout under the panels repeats the cursor's numbers) and the names share what room is left, cut at the front:
    runs of one sweep differ at the end (`tiny-grpo-from-peak-ood`, `tiny-grpo-from-last`)."""
    if not overlays:
        return caption
    entries = [(f"  {OVERLAY_MARK}{run} ", name, style) for run, name, style in overlays]
    need = sum(len(head) + len(name) for head, name, _ in entries)
    if caption.cell_len + need > width:
        caption = Text(caption.plain.split(" ")[0], no_wrap=True, overflow="ellipsis")  # just `@STEP`
    room = max(3, (width - caption.cell_len - sum(len(head) for head, _, _ in entries)) // len(entries))
    for head, name, style in entries:
        caption.append(head + (name if len(name) <= room else "…" + name[-(room - 1) :]), style)  # the tail tells apart
    return caption


class _Compact(NumericAxisFormatter):
    """Tick labels that fit the 4-character margin: 1500 -> 1.5k, 100 -> 100, 0.8123 -> 0.81."""

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [
            f"{t / 1000:.3g}k" if abs(t) >= 1000 else f"{t:.0f}" if abs(t) >= 10 or t == int(t) else f"{t:.2g}"
            for t in ticks
        ]


class _Plot(PlotWidget):
    """PlotWidget that draws the point markers again after its vertical lines.

    textual-plot renders `add_v_line` lines after every dataset, so a start or cursor line would hide the checkpoint
    it passes through (RL starts sit exactly on an evaluated SFT checkpoint). This re-renders the plain scatter
    datasets (the markers, not the error bars) on top; `_render_plot`/`_render_scatter_plot` are private to
    textual-plot 0.10.1, hence the exact pin.
    """

    def _render_plot(self) -> None:
        super()._render_plot()
        if self.query("#plot").first()._canvas_size is None:  # type: ignore[attr-defined]
            return
        for dataset in self._datasets:
            if type(dataset) is ScatterPlot:
                self._render_scatter_plot(dataset)


def _ticks(lo: float, hi: float, cells: int, width: int) -> list[float]:
    """At most one tick per `width` cells, at 1-2-5 steps within lo..hi."""
    n = max(1, cells // width)
    raw = (hi - lo) / n
    if raw <= 0:
        return [lo]
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


class AccuracyPanel(Widget, can_focus=True):
    """ID/OOD accuracy (%) per checkpoint with Wilson intervals, start lines, the OOD peak and a cursor; loss below."""

    DEFAULT_CSS = """
    AccuracyPanel {
        height: 1fr;
        min-height: 6;
        layout: vertical;
    }
    AccuracyPanel > #acc-caption { height: 1; width: 1fr; }
    AccuracyPanel > #acc-empty { height: 1; width: 1fr; color: $text-muted; }
    AccuracyPanel > #acc-plot { height: 1fr; }
    AccuracyPanel > #loss-plot { height: 5; }
    """

    class PointClicked(Message):
        """A click on a chart picked the checkpoint nearest to it on the step axis (an index into lineage.points)."""

        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._lineage: Lineage | None = None
        self._data: ChartData | None = None
        self._cursor: int | None = None
        self._shown = False
        self._overlays: tuple[tuple[int, str, Lineage], ...] = ()  # (run, name, its lineage), compared runs

    def compose(self) -> ComposeResult:
        yield Static(Text(EMPTY, no_wrap=True, overflow="ellipsis"), id="acc-empty")
        yield Static("", id="acc-caption")
        yield _Plot(id="acc-plot", allow_pan_and_zoom=False)
        yield _Plot(id="loss-plot", allow_pan_and_zoom=False)

    @property
    def data(self) -> ChartData | None:
        """What is drawn now (None when the empty message is shown)."""
        return self._data

    @property
    def accuracy_plot(self) -> PlotWidget:
        return self.query_one("#acc-plot", PlotWidget)

    @property
    def loss_plot(self) -> PlotWidget:
        return self.query_one("#loss-plot", PlotWidget)

    def on_mount(self) -> None:
        for plot in (self.accuracy_plot, self.loss_plot):
            plot.margin_left = 5
            plot.set_x_formatter(_Compact())
            plot.set_y_formatter(_Compact())
            plot.set_xlabel("step")
        self.accuracy_plot.set_ylabel("%")
        self.loss_plot.set_ylabel("loss")
        self._layout()
        self._draw()

    def on_click(self, event: Click) -> None:
        """A click on either chart moves the cursor to the checkpoint nearest the clicked step."""
        if self._data is None or not self._data.steps:
            return
        for plot in (self.accuracy_plot, self.loss_plot):
            if plot.region.contains(event.screen_x, event.screen_y):
                canvas = plot.query_one("#plot")
                offset = event.screen_offset - self.screen.get_offset(canvas)
                step, _ = plot.get_coordinate_from_pixel(offset.x, offset.y)
                steps = self._data.steps
                self.post_message(self.PointClicked(min(range(len(steps)), key=lambda i: abs(steps[i] - step))))
                return

    def on_resize(self, event: Resize) -> None:
        self._layout()
        self._draw()

    def show(self, lineage: Lineage | None, cursor: int | None,
             overlays: tuple[tuple[int, str, Lineage], ...] = ()) -> None:  # fmt: skip
        """Show `lineage` with the cursor on `lineage.points[cursor]` (None or out of range: no cursor line).

        Called on every snapshot and cursor move: it clears both charts and plots again (a few datasets, cheap);
        a call with the same lineage object and cursor as the last does nothing.
        """
        if self._shown and lineage is self._lineage and cursor == self._cursor and overlays == self._overlays:
            return
        self._overlays = overlays
        if lineage is not self._lineage:
            self._data = series(lineage) if lineage is not None and lineage.points else None
        self._lineage, self._cursor, self._shown = lineage, cursor, True
        if self.is_mounted:
            self._draw()

    def _layout(self) -> None:
        """Margins and legend for the panel's size: compact (40x13) keeps the plot area, larger shows axis labels."""
        width, height = self.size
        tall = height >= 20
        acc, loss = self.accuracy_plot, self.loss_plot
        # margin rows: top holds the y label, bottom the x tick labels (row 0) and the x label (row 2)
        acc.margin_top = 1 if tall else 0
        acc.margin_bottom = 0  # same x axis as the loss chart below, which carries the tick labels
        loss.margin_top = 1 if tall else 0
        loss.margin_bottom = 3 if tall else 1
        loss.styles.height = max(9, height * 2 // 5) if tall else 5
        # the caption line is the legend; textual-plot's boxed legend (7 rows with starts and cursor) covers data, so
        # only on a large panel, top left (early steps at high accuracy: the emptiest corner of these charts)
        acc.show_legend(LegendLocation.TOPLEFT, is_visible=width >= 100 and height >= 30)

    def _draw(self) -> None:
        data, lineage = self._data, self._lineage
        empty = data is None
        self.query_one("#acc-empty", Static).display = empty
        for part in ("#acc-caption", "#acc-plot", "#loss-plot"):
            self.query_one(part).display = not empty
        acc, loss = self.accuracy_plot, self.loss_plot
        acc.clear()
        loss.clear()
        if data is None or lineage is None:
            return
        drawn = [(run, name, series(ov), overlay_style(run)) for run, name, ov in self._overlays if ov.points]
        self.query_one("#acc-caption", Static).update(
            legend_caption(readout(data, lineage, self._cursor), [(run, name, style) for run, name, _, style in drawn],
                           self.size.width or 80)
        )  # fmt: skip

        lo, hi = data.x_range
        for _, _, ov, _ in drawn:
            lo, hi = min(lo, ov.x_range[0]), max(hi, ov.x_range[1])
        # the panel's width, not the plot's: on the first show the plots have not been laid out yet
        plot_cells = max(1, self.size.width - acc.margin_left - 2)
        # points at exactly x max / y max land on textual-plot's right/top border (it maps max to the border cell):
        # widen by a hair so they fall in the last inner cell; tick labels are set explicitly below
        x_hi = hi + (hi - lo) * 1e-6
        xticks = _ticks(lo, hi, plot_cells, 9)
        for plot in (acc, loss):
            plot.set_xlimits(lo, x_hi)
            plot.set_xticks(xticks)

        rows = max(1, self.size.height - 1 - int(loss.styles.height.value) - acc.margin_top - acc.margin_bottom - 2)
        acc.set_ylimits(0, 100 + 1e-6)
        acc.set_yticks([0, 50, 100] if rows < 9 else [0, 25, 50, 75, 100] if rows < 19 else list(range(0, 101, 10)))

        # the trend: thin braille lines through each split's accuracies, under everything else
        for split, style in ((data.id, ID_STYLE), (data.ood, OOD_STYLE)):
            if len(split.x) > 1:
                acc.plot(split.x, split.y, line_style=f"dim {style}", hires_mode=HiResMode.BRAILLE)
        # Wilson intervals: textual-plot's errorbar only takes a symmetric yerr, so each interval is drawn as an
        # error bar centred on its midpoint (low+high)/2 with yerr (high-low)/2 -- which spans exactly low..high
        # (to textual-plot's half-cell resolution); the "│" marker fills the midpoint cell, and the accuracy
        # marker is scattered on top. ID and OOD bars share a column; OOD is drawn last, so it wins where they overlap.
        for split, style in ((data.id, ID_STYLE), (data.ood, OOD_STYLE)):
            if split.x:
                mid = [(a + b) / 2 for a, b in zip(split.low, split.high, strict=True)]
                half = [(b - a) / 2 for a, b in zip(split.low, split.high, strict=True)]
                acc.errorbar(split.x, mid, yerr=half, marker="│", marker_style=f"dim {style}")
        for split, style, mark, label in ((data.id, ID_STYLE, ID_MARK, "ID"), (data.ood, OOD_STYLE, OOD_MARK, "OOD")):
            if split.x:
                acc.scatter(split.x, split.y, marker=mark, marker_style=style, label=label)
        if data.peak is not None and data.peak_y is not None:
            acc.scatter([data.peak], [data.peak_y], marker=PEAK_MARK, marker_style=PEAK_STYLE, label="OOD peak")
        for run, _name, ov, style in drawn:  # compared runs: their OOD accuracy, in the run's own colour
            if len(ov.ood.x) > 1:
                acc.plot(ov.ood.x, ov.ood.y, line_style=style, hires_mode=HiResMode.BRAILLE)
            if ov.ood.x:
                acc.scatter(ov.ood.x, ov.ood.y, marker=OVERLAY_MARK, marker_style=style, label=f"OOD {run}")

        if data.loss_x:
            ymin, ymax = min(data.loss_y), max(data.loss_y)
            if ymax <= ymin:
                ymin, ymax = ymin - 0.5, ymax + 0.5
            loss.set_ylimits(ymin, ymax + (ymax - ymin) * 1e-6)
            loss.set_yticks([ymin, ymax])
            if len(data.loss_x) > 1:
                loss.plot(data.loss_x, data.loss_y, line_style=LOSS_STYLE, hires_mode=HiResMode.BRAILLE)
            else:
                loss.scatter(data.loss_x, data.loss_y, marker="·", marker_style=LOSS_STYLE)
        else:
            loss.set_ylimits(0, 1)
            loss.set_yticks([])

        # starts and the cursor: vertical lines on both charts (the markers are re-drawn over them, see _Plot)
        for i, (step, _name) in enumerate(data.starts):
            for plot in (acc, loss):
                plot.add_v_line(step, line_style=START_STYLE, label="start" if i == 0 and plot is acc else None)
        if (step := data.at(self._cursor)) is not None:
            for plot in (acc, loss):
                plot.add_v_line(step, line_style=CURSOR_STYLE, label="cursor" if plot is acc else None)


__all__ = ["EMPTY", "AccuracyPanel", "ChartData", "Split", "readout", "series"]
