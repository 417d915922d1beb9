"""The rotation pane: how far the checkpoint's singular vectors turned from the reference, as two small heatmaps.

The app feeds it with `show(rows, all_rows, step_label)`:

- `rows`: the spectra of the checkpoint under the cursor (`Lineage.spectra_at(point)`; empty when it has none),
- `all_rows`: every spectra row of that checkpoint's run (`Lineage.rotation[point.run]`; only the reference of
  `rows`, or the first stored one, is drawn),
- `step_label`: how the title names the checkpoint (`RUN@STEP`, a lineage step, ...).

The pane keeps its own `module` and `side` (reactive; keys `m`, `u`, `v`). It draws, line by line:

    rotation  module q  side u  step 1@200      title: the module and side of the keys, the checkpoint
     L   q   k   v   o gat  up dwn  σ Δ%          layer × module at this checkpoint
     0  2.0   =   =▒8.0▒ 10▓ 12█ 14 0.17%
    +25 layers                                  when not all layers fit (as many as fit are shown)
     L   +3 400 500 600 700 800 900  σ Δ%          layer × step for the module: the latest steps that fit,
     0      1.0 1.0 1.0 1.0 1.0 1.0 0.20%          with the current one (underlined); `+N` steps left out
     0°·2.7°░5.3°▒8.0°▓10.7°█13.3° =k≥n         the colour scale (bucket lower bounds), one for both maps

A cell is the bucket's shade glyph and the mean angle in degrees; `=` marks a cell whose angles are all 0 by
dimension (k >= n), which is not "no rotation". `σ Δ%` is the mean relative singular-value drift of the row: the
angles move while the singular values barely do. The glyphs read without colour (NO_COLOR).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from healer.spectra import (
    ANGLE_GLYPHS,
    FORCED_GLYPH,
    FORCED_STYLE,
    Grid,
    angle_glyph,
    angle_style,
    layer_by_module,
    layer_by_step,
    legend,
)
from healer.spectral import MODULES
from healer.store import Spectrum

EMPTY = "no spectra yet: `healer spectra RUN@STEP` or spectra.every_checkpoint = true"
MORE, LESS = "bold #e69f00", "bold #56b4e9"  # Okabe-Ito orange and sky blue: a difference's sign, colour-blind safe
CELL = 4  # a cell: the shade glyph and a 3-character angle
DRIFT = 6  # the drift column: ` 0.02%`
ABBREVIATIONS = {"gate": "gat", "down": "dwn"}

Span = tuple[str, str]  # text, style
Line = list[Span]


def short_angle(value: float) -> str:
    """An angle in degrees in 3 characters: `  0`, `.05`, `2.3`, ` 12`."""
    if value < 0.005:
        return "  0"
    if value < 0.995:
        return f"{value:.2f}"[1:]
    if value < 9.95:
        return f"{value:.1f}"
    return f"{value:3.0f}"[-3:]


def short_step(step: int) -> str:
    """A step in at most 3 characters: `200`, `1k2`, `12k`, `3M`."""
    if step < 1000:
        return str(step)
    if step < 10_000:
        hundreds = (step % 1000) // 100
        return f"{step // 1000}k{hundreds}" if hundreds else f"{step // 1000}k"
    if step < 1_000_000:
        return f"{step // 1000}k"
    return f"{step // 1_000_000}M"


def _cell(grid: Grid, row: int, column: int, top: float, signed: bool = False) -> Span:
    value = grid.rows[row][1][column]
    if grid.is_forced(row, column):
        return f"{FORCED_GLYPH:>{CELL}}", FORCED_STYLE
    if value is None:
        return " " * CELL, ""
    if signed:  # a difference: ▲ turned more, ▼ less, where the shade would be (also warm and cool colours)
        if abs(value) < 0.005:
            return "   0", "dim"
        return ("▲" if value > 0 else "▼") + short_angle(abs(value)), MORE if value > 0 else LESS
    return angle_glyph(value, top) + short_angle(value), angle_style(value, top)


def difference(grid: Grid, base: Grid) -> Grid:
    """A layer × module grid minus another checkpoint's (against the same reference), cell by cell where both have
    a value; a cell forced to 0 in either stays forced (its difference says nothing about training)."""
    at = {(name, m): (i, j) for i, (name, _, _) in enumerate(base.rows) for j, m in enumerate(base.columns)}
    base_drift = {name: drift for name, _, drift in base.rows}
    rows: list[tuple[str, list[float | None], float | None]] = []
    forced = set()
    for i, (name, values, drift) in enumerate(grid.rows):
        cells: list[float | None] = []
        for j, (module, value) in enumerate(zip(grid.columns, values, strict=True)):
            where = at.get((name, module))
            other = base.rows[where[0]][1][where[1]] if where else None
            cells.append(None if value is None or other is None else value - other)
            if grid.is_forced(i, j) or (where is not None and base.is_forced(*where)):
                forced.add((i, j))
        before = base_drift.get(name)
        rows.append((name, cells, None if drift is None or before is None else drift - before))
    return Grid(f"{grid.title} minus {base.title}", grid.columns, rows, frozenset(forced))


def _drift(drift: float | None, signed: bool = False) -> Span:
    if drift is None:
        return " " * DRIFT, ""
    text = f"{100 * drift:+{DRIFT - 1}.2f}%" if signed else f"{100 * drift:{DRIFT - 1}.2f}%"
    return text[-DRIFT:].rjust(DRIFT), ""


def _map(grid: Grid, headers: list[Span], columns: Sequence[int], top: float, label: int, room: int, slots: int,
         before: int = 0, after: int = 0, signed: bool = False) -> list[Line]:  # fmt: skip
    """A header and up to `room - 1` rows of a grid (its columns `columns`, with a `+N` cell each side when `before`
    or `after` columns are left out, padded to `slots` cells so the drift columns of both maps line up); the last
    row says how many layers did not fit, when some did not."""
    pad = [(" " * CELL * max(0, slots - len(columns) - bool(before) - bool(after)), "")]
    left = [(f"+{before}".rjust(CELL), "dim")] if before else []
    right = [(f"+{after}".rjust(CELL), "dim")] if after else []
    lines: list[Line] = [[("L".rjust(label - 1) + " ", "bold"), *left, *headers, *right, *pad,
                          ("σ Δ%".rjust(DRIFT), "bold")]]  # fmt: skip
    blank_left = [(" " * CELL, "")] if before else []
    blank_right = [(" " * CELL, "")] if after else []
    shown = len(grid.rows) if len(grid.rows) <= room - 1 else max(0, room - 2)
    for i, (name, _, drift) in enumerate(grid.rows[:shown]):
        cells = [_cell(grid, i, j, top, signed) for j in columns]
        lines.append([(name.rjust(label - 1) + " ", ""), *blank_left, *cells, *blank_right, *pad,
                      _drift(drift, signed)])  # fmt: skip
    if shown < len(grid.rows):
        lines.append([(f"+{len(grid.rows) - shown} layers", "dim")])
    return lines


def step_window(count: int, current: int | None, fit: int) -> tuple[int, int]:
    """Which of `count` step columns fit in `fit` cells, as [start, end): all, else the latest ones with the
    current step among them, a cell given up on each side that has steps left out (for its `+N`)."""
    if count <= fit:
        return 0, count
    at = count - 1 if current is None else current
    width = max(1, fit - 1)
    if at >= count - width:
        return count - width, count
    width = max(1, fit - 2)
    start = max(0, at + 1 - width)
    if start == 0:
        return 0, max(1, fit - 1)
    return start, start + width


def _rooms(wanted: tuple[int, int], room: int) -> tuple[int, int]:
    """Split `room` lines between two maps wanting `wanted` lines each (header included)."""
    first, second = wanted
    if first + second <= room:
        return first, second
    half = max(2, room // 2)
    if first <= half:
        return first, max(2, room - first)
    if second <= room - half:
        return max(2, room - second), second
    return half, max(2, room - half)


def rotation_lines(rows: Sequence[Spectrum], all_rows: Sequence[Spectrum], step_label: str, module: str, side: str,
                   width: int, height: int, base_rows: Sequence[Spectrum] = (),
                   base_label: str = "") -> list[Line]:  # fmt: skip
    """The pane's lines, as (text, style) spans, for a `width` × `height` box (pure: no Textual). With `base_rows`
    (another checkpoint's spectra against the same reference), the layer × module map is the difference: this
    checkpoint's angles minus that one's, signed."""
    if not rows and not all_rows:
        return [[(part, "dim")] for part in textwrap.wrap(EMPTY, max(20, width))]  # one line, wrapped in a narrow box
    ref = rows[0].ref if rows else all_rows[0].ref
    run_rows = [r for r in all_rows if r.ref == ref]
    present = modules_of(rows, all_rows)
    module = module if module in present else present[0]
    title: Line = [("rotation", "bold"), (f"  module {module}  side {side}  step {step_label}", "")]
    by_module = layer_by_module(rows, rows[0].step, side) if rows else None
    base = [r for r in base_rows if r.ref == ref]
    signed = bool(by_module and base)
    if by_module and base:
        by_module = difference(by_module, layer_by_module(base, base[0].step, side))
        title = [("rotation Δ", "bold"), (f"  side {side}  {step_label} − {base_label}", "")]
    elif base_rows:
        title.append((f"  (no spectra of {base_label} against {ref} to subtract)", "dim"))
    by_step = layer_by_step(run_rows, module, side)
    top = max(by_module.top if by_module and not signed else 0.0, by_step.top)
    labels = [name for grid in (by_module, by_step) if grid for name, _, _ in grid.rows]
    label = max(2, *(len(n) for n in labels)) + 1 if labels else 3
    room = max(4, height - 2)  # the title and the legend take a line each
    wanted = (len(by_module.rows) + 1 if by_module else 1, len(by_step.rows) + 1)
    first, second = _rooms(wanted, room)
    steps = [int(s) for s in by_step.columns]
    current = rows[0].step if rows else None
    fit = max(1, (width - label - DRIFT) // CELL)
    start, end = step_window(len(steps), steps.index(current) if current in steps else None, fit)
    before, after = start, len(steps) - end
    slots = max(len(by_module.columns) if by_module else 0, end - start + bool(before) + bool(after))
    lines: list[Line] = [title]
    if by_module:
        headers = [(ABBREVIATIONS.get(m, m)[:3].rjust(CELL), "bold") for m in by_module.columns]
        lines += _map(by_module, headers, range(len(by_module.columns)), top, label, first, slots, signed=signed)
    else:
        lines.append([(f"step {step_label}: no spectra of this checkpoint", "dim")])
    headers = [(short_step(steps[j]).rjust(CELL), "bold underline" if steps[j] == current else "bold")
               for j in range(start, end)]  # fmt: skip
    lines += _map(by_step, headers, range(start, end), top, label, second, slots, before, after)
    scale: Line = [(ANGLE_GLYPHS[i] + text, style) for i, (text, style) in enumerate(legend(top))]
    if (by_module and by_module.forced) or by_step.forced:
        scale.append((f" {FORCED_GLYPH}k≥n", FORCED_STYLE))
    if signed:
        scale += [(" ", ""), ("▲", MORE), ("▼", LESS), ("Δ", "")]
    lines.append(scale)
    return lines


def modules_of(rows: Sequence[Spectrum], all_rows: Sequence[Spectrum]) -> list[str]:
    """The modules with spectra, in the model's order (q, k, v, o, gate, up, down); ['q'] when none."""
    found = {r.module for r in (*rows, *all_rows)}
    return [m for m in MODULES if m in found] or ["q"]


class RotationPanel(Widget, can_focus=True):
    """Mean principal angle per layer × module (the checkpoint under the cursor) and per layer × step (one module),
    with the singular-value drift per row and a colour scale in degrees. See the module's docstring for the feed."""

    DEFAULT_CSS = """
    RotationPanel {
        height: 1fr;
        min-height: 4;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "next_module", "module"),
        Binding("u", "side('u')", "side u"),
        Binding("v", "side('v')", "side v"),
    ]

    module: reactive[str] = reactive("q")  # the module of the layer × step map
    side: reactive[str] = reactive("u")  # u: left singular vectors, v: right

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.rows: tuple[Spectrum, ...] = ()
        self.all_rows: tuple[Spectrum, ...] = ()
        self.step_label = ""
        self.base_rows: tuple[Spectrum, ...] = ()
        self.base_label = ""
        self._version = 0
        self._cache: tuple[tuple[object, ...], list[Strip]] | None = None

    def show(self, rows: Sequence[Spectrum], all_rows: Sequence[Spectrum], step_label: str,
             base_rows: Sequence[Spectrum] = (), base_label: str = "") -> None:  # fmt: skip
        """What to draw: the checkpoint's rows, its run's rows and the checkpoint's name (see the module); with
        `base_rows`, the layer × module map is this checkpoint minus that one (`base_label`)."""
        rows, all_rows, base_rows = tuple(rows), tuple(all_rows), tuple(base_rows)
        new = (rows, all_rows, step_label, base_rows, base_label)
        if new == (self.rows, self.all_rows, self.step_label, self.base_rows, self.base_label):
            return
        self.rows, self.all_rows, self.step_label, self.base_rows, self.base_label = new
        self._version += 1
        present = modules_of(rows, all_rows)
        if self.module not in present:
            self.module = present[0]
        self.refresh()

    def action_next_module(self) -> None:
        present = modules_of(self.rows, self.all_rows)
        at = present.index(self.module) if self.module in present else -1
        self.module = present[(at + 1) % len(present)]

    def action_side(self, side: str) -> None:
        self.side = side

    def lines(self) -> list[Line]:
        """The spans of every line at the current size (what `render_line` draws)."""
        return rotation_lines(self.rows, self.all_rows, self.step_label, self.module, self.side,
                              self.size.width, self.size.height, self.base_rows, self.base_label)  # fmt: skip

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        key = (width, self.size.height, self._version, self.module, self.side, base)
        if self._cache is None or self._cache[0] != key:
            strips = []
            for line in self.lines():
                segments = [Segment(text, base + Style.parse(style) if style else base) for text, style in line]
                strips.append(Strip(segments).adjust_cell_length(width, base))
            self._cache = (key, strips)
        strips = self._cache[1]
        return strips[y] if y < len(strips) else Strip.blank(width, base)
