"""The queue view: what `healer queue ls` shows, live: waiting runs and what each waits for, running ones with
their GPUs and workers, pending checkpoint jobs, the pause flag."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from healer.store.views import QueueRow
from healer.text import duration, progress, starts_from
from healer.tui.panels.runs import STATUS_GLYPHS, reset_columns

COLUMNS = ("id", "", "name", "prio", "gpus", "step", "elapsed", "eta", "from", "note")
NARROW = ("id", "", "name", "prio", "step", "from", "note")  # under WIDE columns: what a queue is about
WIDE = 120
NAME_MAX = 22  # a longer name is cut with … in the narrow layout, so the note keeps some room


def queue_cells(row: QueueRow) -> list[str]:
    """One queue row as text cells (pure)."""
    source = starts_from(row)
    note = row.waiting_for or row.reason or ("its process is gone" if row.alive is False else row.worker or "")
    step = "" if row.kind in ("eval", "spectra") else progress(row.step, row.total_steps, bar=True)
    gpus = row.assigned_gpus or ("auto" if row.gpus is None else str(row.gpus))
    return [str(row.id), row.name, str(row.priority), gpus, step, duration(row.elapsed_s), duration(row.eta_s), source,
            note]  # fmt: skip


class QueuePane(DataTable[Text]):
    """Every run that went through the queue, newest last; finished checkpoint jobs are left out."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", **kwargs)  # type: ignore[arg-type]
        self.rows_shown: tuple[QueueRow, ...] = ()

    def show(self, rows: tuple[QueueRow, ...]) -> None:
        """The rows, in the columns that fit the pane's width: at 80 columns the GPUs, elapsed time and ETA drop
        out (the runs pane has them) and long names and notes are cut with …, as `healer queue ls` does."""
        self.rows_shown = rows
        width = self.size.width or 80
        names = COLUMNS if width >= WIDE else NARROW
        reset_columns(self, names)
        table = []
        for row in rows:
            if row.kind in ("eval", "spectra") and row.status == "done":
                continue
            status = "dead" if row.alive is False else row.status
            glyph = STATUS_GLYPHS.get(status, ("?", ""))
            ident, name, *rest = queue_cells(row)
            cells = dict(zip(COLUMNS, [ident, glyph[0], name, *rest], strict=True))
            if names is NARROW and len(name) > NAME_MAX:
                cells["name"] = name[: NAME_MAX - 1] + "…"
            table.append((row, glyph[1], cells))
        used = sum(max([len(n), *(len(c[n]) for _, _, c in table)]) + 2 for n in names if n != "note")
        room = max(8, width - used - 3)  # the scrollbar and the cell padding
        for row, style, cells in table:
            note = cells["note"] if len(cells["note"]) <= room else cells["note"][: room - 1] + "…"
            shown = {**cells, "note": note}
            self.add_row(*(Text(shown[n], style=style if n == "" else "", no_wrap=True) for n in names),
                         key=str(row.id))  # fmt: skip

    def on_resize(self) -> None:
        if self.rows_shown:
            self.show(self.rows_shown)
