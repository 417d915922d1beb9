"""Tables that fit the terminal, as `gh` and `kubectl` print them: low-priority columns drop out and long text folds
inside its column when the screen is narrow; `--wide` and piped output keep every column, whole."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

GAP = 2  # a column's padding: one space each side, none at the table's edges
FOLD_MIN = 16


@dataclass(frozen=True)
class Column:
    """A table column. `drop`: 0 is always shown; when the table is too wide, the highest `drop` goes first (ties:
    the rightmost). `fold`: long text (paths, reasons) wraps inside the column instead of widening the table, down to
    `min_width`; `cut`: a name that keeps its row on one line, ending in … when narrowed (`--wide` has it whole)."""

    header: str
    drop: int = 0
    fold: bool = False
    cut: bool = False
    justify: Literal["left", "right"] = "left"
    min_width: int = FOLD_MIN  # a narrower column is harder to read than a missing one

    @property
    def narrows(self) -> bool:
        return self.fold or self.cut


def fit_columns(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None) -> list[int]:
    """Indices of the columns to show within `width` cells (None: all): drop columns in `drop` order while the table,
    its folding columns squeezed to their min_width, would still be wider."""
    natural = natural_widths(columns, rows)
    shown = list(range(len(columns)))

    def needed() -> int:
        widths = [min(natural[i], columns[i].min_width) if columns[i].narrows else natural[i] for i in shown]
        return sum(widths) + GAP * (len(shown) - 1)

    while width is not None and needed() > width:
        droppable = [i for i in shown if columns[i].drop > 0]
        if not droppable:
            break
        shown.remove(max(droppable, key=lambda i: (columns[i].drop, i)))
    return shown


def natural_widths(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[int]:
    """Each column's width with nothing folded: its header or its longest line."""
    return [max([cell_len(c.header), *(_longest_line(row[i]) for row in rows)]) for i, c in enumerate(columns)]


def render_table(
    columns: Sequence[str | Column], rows: Sequence[Sequence[Any]], width: int | None
) -> tuple[Table, list[str]]:
    """The table to print at `width` cells (None: unlimited), and the headers of the columns left out."""
    specs = [c if isinstance(c, Column) else Column(c) for c in columns]
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    shown = fit_columns(specs, cells, width)
    widths = column_widths([specs[i] for i in shown], [natural_widths(specs, cells)[i] for i in shown], width)
    table = Table(box=None, header_style="bold", pad_edge=False, show_header=any(specs[i].header for i in shown))
    for i, w in zip(shown, widths, strict=True):
        spec = specs[i]
        overflow = "ellipsis" if spec.cut else "fold"
        table.add_column(spec.header, justify=spec.justify, no_wrap=not spec.fold, overflow=overflow, width=w)
    for row in cells:
        table.add_row(*(Text(row[i]) for i in shown))  # data, never markup: `[rl]` stays `[rl]`
    hidden = [specs[i].header or f"column {i + 1}" for i in range(len(specs)) if i not in shown]
    return table, hidden


def column_widths(columns: Sequence[Column], natural: Sequence[int], width: int | None) -> list[int]:
    """Widths within `width`: fixed columns keep their natural width; narrowing ones give up cells, the widest
    first, down to their min_width."""
    widths = list(natural)
    if width is None:
        return widths
    excess = sum(widths) + GAP * (len(widths) - 1) - width
    while excess > 0:
        squeezable = [i for i, c in enumerate(columns) if c.narrows and widths[i] > min(natural[i], c.min_width)]
        if not squeezable:
            break
        widest = max(squeezable, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def _longest_line(text: str) -> int:
    return max((cell_len(line) for line in text.splitlines()), default=0)
