"""The queue view: what `healer queue ls` shows, live: waiting runs and what each waits for, running ones with
their GPUs and workers, pending checkpoint jobs, the pause flag."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from healer.store.views import QueueRow
from healer.text import duration, progress, starts_from
from healer.tui.panels.runs import STATUS_GLYPHS

COLUMNS = ("id", "", "name", "prio", "gpus", "step", "elapsed", "eta", "from", "note")


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

    def on_mount(self) -> None:
        for name in COLUMNS:
            self.add_column(name, key=name or "status")

    def show(self, rows: tuple[QueueRow, ...]) -> None:
        self.clear()
        for row in rows:
            if row.kind in ("eval", "spectra") and row.status == "done":
                continue
            status = "dead" if row.alive is False else row.status
            glyph, style = STATUS_GLYPHS.get(status, ("?", ""))
            ident, name, *rest = queue_cells(row)
            self.add_row(Text(ident), Text(glyph, style=style), Text(name, overflow="ellipsis", no_wrap=True),
                         *(Text(c) for c in rest), key=str(row.id))  # fmt: skip
