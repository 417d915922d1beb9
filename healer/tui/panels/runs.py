"""The runs pane: training and edit runs as a tree by lineage, with status, progress, accuracy and the OOD peak."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual.widgets import DataTable

from healer.store.views import QueueRow, RunRow, TreeNode
from healer.text import duration, progress
from healer.tui.panels.accuracy import overlay_style
from healer.tui.snapshot import Snapshot

STATUS_GLYPHS = {  # glyph, style: the glyph alone reads under NO_COLOR
    "queued": ("○", "grey58"),
    "running": ("●", "green"),
    "done": ("✓", "cyan"),
    "failed": ("✗", "red"),
    "cancelled": ("⊘", "yellow"),
    "dead": ("✗", "bold red"),  # running, but its process is gone
}
COLUMNS = ("run", "", "method", "progress", "time", "ID %", "OOD %", "peak", "gpu")
NARROW = ("run", "", "progress", "ID %", "OOD %", "peak")  # below WIDE columns: what a glance needs
WIDE = 110


def columns_for(width: int) -> tuple[str, ...]:
    return COLUMNS if width >= WIDE else NARROW


def cells(line: RunLine) -> dict[str, str]:
    """A line's text per column (the status column holds its glyph)."""
    return {"run": line.label + (f" +{line.jobs}" if line.jobs else ""), "": STATUS_GLYPHS.get(line.status, ("?",))[0],
            "method": line.method, "progress": line.progress, "time": line.time, "ID %": line.id_acc,
            "OOD %": line.ood_acc + (" ⚠" if line.alarm else ""), "peak": line.peak, "gpu": line.gpu}  # fmt: skip


def label_width(width: int, lines: list[RunLine]) -> int:
    """Room for the tree labels: what the other columns, as wide as their widest cell, leave (each pads 2), at
    least 16."""
    others = [c for c in columns_for(width) if c != "run"]
    texts = [cells(line) for line in lines]
    used = sum(max([len(c), *(len(t[c]) for t in texts)]) for c in others)
    return max(16, width - used - 2 * len(columns_for(width)) - 3)  # 2 for a vertical scrollbar


@dataclass(frozen=True)
class RunLine:
    """One row of the runs pane, as text cells (pure: built from a snapshot, tested without Textual)."""

    run: int
    label: str  # tree glyphs, the step it started from, id and name
    status: str  # queued, running, done, failed, cancelled, dead
    method: str
    progress: str  # `120/300 ▰▰▰▱▱▱`
    time: str  # elapsed, and the ETA while running
    id_acc: str
    ood_acc: str
    peak: str  # `19.7 @120`
    gpu: str
    jobs: int  # checkpoint jobs (eval, spectra) pending on it
    alarm: str = ""  # the forgetting alarm: why its OOD accuracy is flagged, '' when it is not


ALARM_DROP = 0.05  # the forgetting alarm's default: OOD 5 points below its peak (beyond both intervals), ID rising


def alarm_text(node: TreeNode, drop: float) -> str:
    """Why a run's OOD accuracy is flagged (pure): it fell `drop` or more below its peak, beyond both Wilson
    intervals, while its ID accuracy still rose; '' otherwise."""
    fall = node.forgetting
    if not fall or not (fall["separated"] and fall["id_rising"] and fall["drop"] >= drop):
        return ""
    return (f"run {node.id} {node.name}: OOD fell {100 * fall['drop']:.1f} points from its peak at step "
            f"{fall['peak_step']} ({100 * fall['peak']:.1f} -> {100 * fall['last']:.1f} at step {fall['last_step']}) "
            "while ID rose: forgetting")  # fmt: skip


def run_lines(snapshot: Snapshot, query: str = "", now: float | None = None,
              alarm_drop: float = ALARM_DROP) -> list[RunLine]:  # fmt: skip
    """The tree, depth first, each child under its parent; `query` keeps runs whose name, status, method or id
    contains it (with their ancestors, so the tree still reads)."""
    now = snapshot.taken_at if now is None else now
    queue = {r.id: r for r in snapshot.queue}
    lines: list[RunLine] = []

    def visit(node: TreeNode, lead: str, indent: str) -> bool:
        start = f"@{node.parent_step} " if node.parent_step is not None and lead else ""
        row = snapshot.rows.get(node.id)
        line = _line(node, row, queue.get(node.id), f"{lead}{start}{node.id} {node.name}", snapshot, now)
        line = dataclasses.replace(line, alarm=alarm_text(node, alarm_drop))
        at = len(lines)
        lines.append(line)
        kept = False
        for i, child in enumerate(node.children):
            end = i == len(node.children) - 1
            kept |= visit(child, indent + ("└─" if end else "├─"), indent + ("  " if end else "│ "))
        if query and not kept and not _matches(node, line, query, row.preset if row else None):
            del lines[at]
            return False
        return True

    for root in snapshot.tree:
        visit(root, "", "")
    return lines


def _matches(node: TreeNode, line: RunLine, query: str, preset: str | None) -> bool:
    query = query.lower()
    texts = (node.name, line.status, node.method, str(node.id), node.kind, preset or "")
    return any(query in text.lower() for text in texts)


def _line(node: TreeNode, row: RunRow | None, queued: QueueRow | None, label: str, snapshot: Snapshot,
          now: float) -> RunLine:  # fmt: skip
    status = "dead" if row is not None and row.alive is False else node.status
    last, peak = node.last_eval or {}, node.peak_ood
    return RunLine(
        run=node.id,
        label=label,
        status=status,
        method=node.method,
        progress=progress(node.step, node.total_steps, bar=True),
        time=_time(row, queued, now),
        id_acc=_pct(last.get("id")),
        ood_acc=_pct(last.get("ood")),
        peak=f"{100 * peak['ood']:.1f} @{peak['step']}" if peak else "",
        gpu=(queued.assigned_gpus or "") if queued is not None and node.status == "running" else "",
        jobs=snapshot.pending_jobs.get(node.id, 0),
    )


def _time(row: RunRow | None, queued: QueueRow | None, now: float) -> str:
    if row is None or not row.started_at:
        return ""
    start = datetime.fromisoformat(row.started_at).timestamp()
    end = datetime.fromisoformat(row.finished_at).timestamp() if row.finished_at else now
    text = duration(max(0.0, end - start))
    if queued is not None and queued.eta_s is not None and row.status == "running":
        text += f" ~{duration(queued.eta_s)}"
    return text


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def reset_columns(table: DataTable[Text], names: tuple[str, ...]) -> None:
    """Empty a table for new rows, with these columns (kept when they are already these: no flicker)."""
    if tuple(str(c.label) for c in table.columns.values()) != names:
        table.clear(columns=True)
        for name in names:
            table.add_column(name, key=name or "status")
    else:
        table.clear()


class RunsPane(DataTable[Text]):
    """The runs tree as a table; `enter` asks the app for the run's detail, the cursor row is the selection."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self.lines: list[RunLine] = []
        self.marked: set[int] = set()  # runs overlaid on the chart: their label is drawn in their overlay colour
        self.pinned: int | None = None  # the run the panels stay on (`p`): its label is underlined

    def show(self, lines: list[RunLine], selected: int | None) -> None:
        """Replace the rows (the columns that fit the pane's width), keeping the cursor on the selected run."""
        self.lines = lines
        width = self.size.width or 80
        names = columns_for(width)
        reset_columns(self, names)
        room = label_width(width, lines)
        for line in lines:
            glyph, style = STATUS_GLYPHS.get(line.status, ("?", ""))
            label = line.label + (f" +{line.jobs}" if line.jobs else "")
            label = label if len(label) <= room else label[: room - 1] + "…"
            cells = {
                "run": Text(label, no_wrap=True, style=self._label_style(line.run)),
                "": Text(glyph, style=style),
                "method": Text(line.method, style="dim"),
                "progress": Text(line.progress),
                "time": Text(line.time, style="dim"),
                "ID %": Text(line.id_acc, justify="right"),
                "OOD %": Text(
                    line.ood_acc + (" ⚠" if line.alarm else ""),
                    justify="right",
                    style="bold red" if line.alarm else "bold",
                ),
                "peak": Text(line.peak, style="magenta"),
                "gpu": Text(line.gpu),
            }
            self.add_row(*(cells[name] for name in names), key=str(line.run))
        ids = [line.run for line in lines]
        if selected in ids:
            self.move_cursor(row=ids.index(selected), animate=False)

    def _label_style(self, run: int) -> str:
        style = overlay_style(run) if run in self.marked else ""
        return f"{style} bold underline".strip() if run == self.pinned else style

    def on_resize(self) -> None:
        if self.lines:
            self.show(self.lines, self.selected_run)

    @property
    def selected_run(self) -> int | None:
        if not self.lines or self.cursor_row >= len(self.lines):
            return None
        return self.lines[self.cursor_row].run
