"""The run detail (`enter` on a run): its resolved spec, its checkpoints with their evaluations, the tail of its log
(followed while it runs) and the wrong answers of an evaluation, each in a tab."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, RichLog, Static, TabbedContent, TabPane

from healer.store import EvalSample
from healer.store.views import Reader, RunDetail
from healer.text import flatten

LOG_LINES = 200
SAMPLES = 50


@dataclass(frozen=True)
class Detail:
    """What the detail screen shows, read in one go off the UI thread."""

    run: RunDetail
    wrong: tuple[EvalSample, ...]  # the wrong answers of the evaluation named by `wrong_of`
    wrong_of: str  # e.g. "ood at step 120 (single)"


def checkpoint_rows(detail: RunDetail) -> list[list[str]]:
    """One row per checkpoint: step, ID and OOD accuracy with intervals, loss, the picks it is, kept or pruned."""
    protocol = detail.peaks.get("protocol", "single")
    evals: dict[int, dict[str, Any]] = {}
    for e in sorted(detail.evals, key=lambda e: (e.step, e.n, e.id)):
        if e.protocol == protocol:
            evals.setdefault(e.step, {})[e.split] = e
    picks: dict[int, list[str]] = {}
    for name, entry in detail.peaks.items():
        if isinstance(entry, dict):
            picks.setdefault(entry["step"], []).append(name)
    steps = sorted({c.step for c in detail.checkpoints} | set(evals))
    pruned = {c.step for c in detail.checkpoints if c.pruned_at}
    rows = []
    for step in steps:
        by_split = evals.get(step, {})
        cells = [str(step)]
        for split in ("id", "ood"):
            e = by_split.get(split)
            cells.append(f"{100 * e.accuracy:.1f} [{100 * e.ci_low:.1f}, {100 * e.ci_high:.1f}]" if e else "")
        loss = by_split.get("id")
        cells.append(f"{loss.loss:.4g}" if loss is not None and loss.loss is not None else "")
        cells.append(", ".join(picks.get(step, []) + (["pruned"] if step in pruned else [])))
        rows.append(cells)
    return rows


def read_detail(db: Path, run_id: int, step: int | None, immutable: bool = False) -> Detail:
    """The run's detail and the wrong answers of its OOD evaluation at `step` (default: the last evaluated)."""
    with Reader(db, immutable=immutable) as reader:
        detail = reader.run_detail(run_id)
        evals = [e for e in reader.evals(run_id) if e.split == "ood"] or list(reader.evals(run_id))
        if step is not None and any(e.step == step for e in evals):
            evals = [e for e in evals if e.step == step]
        if not evals:
            return Detail(detail, (), "no evaluations yet")
        chosen = max(evals, key=lambda e: (e.step, e.n, e.id))
        wrong = tuple(reader.eval_samples(chosen.id, wrong_only=True)[:SAMPLES])
        return Detail(detail, wrong, f"{chosen.split} at step {chosen.step} ({chosen.protocol})")


class DetailReady(Message):
    def __init__(self, detail: Detail) -> None:
        super().__init__()
        self.detail = detail


class LogLines(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class DetailScreen(Screen[None]):
    """One run: spec, checkpoints, log, wrong answers. `escape` goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("q", "app.pop_screen", "back", show=False),
    ]

    def __init__(self, db: Path, run_id: int, step: int | None = None, immutable: bool = False) -> None:
        super().__init__()
        self.db, self.run_id, self.step, self.immutable = db, run_id, step, immutable
        self._stop = threading.Event()

    def compose(self) -> ComposeResult:
        yield Static(f"run {self.run_id} …", id="detail-title")
        with TabbedContent(initial="checkpoints"):
            with TabPane("checkpoints", id="checkpoints"):
                yield DataTable(id="checkpoint-table", cursor_type="row")
            with TabPane("spec", id="spec"):
                yield DataTable(id="spec-table", cursor_type="row")
            with TabPane("log", id="log"):
                yield RichLog(id="log-view", max_lines=5000, wrap=False, markup=False, highlight=False)
            with TabPane("wrong answers", id="wrong"):
                yield Static("", id="wrong-title")
                yield DataTable(id="wrong-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    def on_unmount(self) -> None:
        self._stop.set()

    @work(thread=True, exclusive=True, group="detail")
    def load(self) -> None:
        detail = read_detail(self.db, self.run_id, self.step, self.immutable)
        self.post_message(DetailReady(detail))
        path = Path(detail.run.log_path or "")
        offset = 0
        if path.is_file():
            text = path.read_text(errors="replace")
            self.post_message(LogLines("\n".join(text.splitlines()[-LOG_LINES:])))
            offset = len(text.encode(errors="replace"))
        while detail.run.status in ("queued", "running") and not self._stop.wait(1.0):  # follow while it runs
            if path.is_file():
                with open(path, "rb") as log:
                    log.seek(offset)
                    chunk = log.read()
                offset += len(chunk)
                if chunk:
                    self.post_message(LogLines(chunk.decode(errors="replace").rstrip("\n")))

    def on_detail_ready(self, message: DetailReady) -> None:
        detail = message.detail
        run = detail.run
        title = f"run {run.id} {run.name} · {run.kind} {run.method} · {run.status}"
        if run.reason:
            title += f" ({run.reason})"
        self.query_one("#detail-title", Static).update(Text(title, no_wrap=True, overflow="ellipsis"))
        table = self.query_one("#checkpoint-table", DataTable)
        table.clear(columns=True)
        table.add_columns("step", "ID % [95% CI]", "OOD % [95% CI]", "loss", "")
        for row in checkpoint_rows(run):
            table.add_row(*row)
        spec = self.query_one("#spec-table", DataTable)
        spec.clear(columns=True)
        spec.add_columns("key", "value")
        for key, value in flatten(run.spec):
            spec.add_row(key, repr(value))
        self.query_one("#wrong-title", Static).update(f"wrong answers of the evaluation: {detail.wrong_of}")
        wrong = self.query_one("#wrong-table", DataTable)
        wrong.clear(columns=True)
        wrong.add_columns("#", "outcome", "tries", "completion")
        for s in detail.wrong:
            wrong.add_row(str(s.idx), s.outcome, str(s.attempts), Text(s.completion.replace("\n", " ⏎ ")[:200]))

    def on_log_lines(self, message: LogLines) -> None:
        if message.text:
            self.query_one("#log-view", RichLog).write(message.text)
