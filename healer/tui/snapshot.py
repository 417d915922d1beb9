"""What the TUI shows, as one immutable snapshot built off the UI thread from the store's read views.

The poller (`poller.py`) calls `take` when the change feed says something changed (or the selection moved); panels
only render the snapshot's parts. Nothing here imports Textual, so all of it is tested without a terminal.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from healer.store import Spectrum
from healer.store.views import Changes, QueueRow, Reader, RunRow, TreeNode, segments


@dataclass(frozen=True)
class Accuracy:
    """One split's accuracy at one checkpoint, with its Wilson 95 % interval."""

    accuracy: float
    ci_low: float
    ci_high: float
    correct: int
    n: int


@dataclass(frozen=True)
class Point:
    """A checkpoint on the lineage's one step axis (the axis of `healer metrics --lineage`)."""

    lineage_step: int
    run: int  # the run the checkpoint belongs to
    step: int  # its step in that run
    id: Accuracy | None
    ood: Accuracy | None
    loss: float | None  # the training loss logged at that step, if any
    picks: tuple[str, ...]  # peak-ood, best-id, loss-pick (of its run), pruned


@dataclass(frozen=True)
class Start:
    """Where a run started from a checkpoint on the axis (an RL run from an SFT checkpoint, an edit, ...)."""

    lineage_step: int
    run: int
    name: str
    method: str


@dataclass(frozen=True)
class Lineage:
    """The selected run's lineage: root -> ... -> the run, on one step axis."""

    run: int
    runs: tuple[tuple[int, str, int], ...]  # (run id, name, offset on the axis), oldest first
    points: tuple[Point, ...]  # evaluated checkpoints, in axis order
    loss: tuple[tuple[int, float], ...]  # (lineage_step, training loss)
    starts: tuple[Start, ...]  # runs started inside this lineage (the chain's own, and the selected run's children)
    peak_ood: int | None  # the lineage step of the highest OOD accuracy among the points (earliest on ties)
    rotation: dict[int, tuple[Spectrum, ...]] = field(default_factory=dict)  # run id -> its spectra rows

    def spectra_at(self, point: Point) -> tuple[Spectrum, ...]:
        """The spectra rows of the checkpoint at `point` (one reference: the run's first)."""
        rows = self.rotation.get(point.run, ())
        ref = rows[0].ref if rows else None
        return tuple(r for r in rows if r.step == point.step and r.ref == ref)


@dataclass(frozen=True)
class Snapshot:
    seq: int  # the change feed's mark this snapshot reflects
    taken_at: float  # unix time it was read (the clock tests fix)
    tree: tuple[TreeNode, ...]  # runs by lineage (training and edit runs; jobs are counted on their run)
    rows: dict[int, RunRow]  # every run's row (status, alive, step, last loss) by id
    pending_jobs: dict[int, int]  # run id -> its checkpoint jobs queued or running
    queue: tuple[QueueRow, ...]
    paused: bool
    selected: int | None
    lineage: Lineage | None
    notice: str | None = None  # one line: the store is locked, a read failed; the view shown is the last good one

    @property
    def empty(self) -> bool:
        return not self.tree


def take(reader: Reader, selected: int | None, now: float | None = None) -> Snapshot:
    """Read everything the screen shows, in one pass of the store's views."""
    now = time.time() if now is None else now
    seq = reader.seq()
    tree = tuple(reader.tree())
    rows = {r.id: r for r in reader.runs(jobs=True)}
    queue = tuple(reader.queue(now))
    pending = _pending(queue)
    if selected not in rows or rows[selected].kind in ("eval", "spectra"):
        selected = default_selection(tree, rows)
    return Snapshot(
        seq=seq,
        taken_at=now,
        tree=tree,
        rows=rows,
        pending_jobs=pending,
        queue=queue,
        paused=reader.setting("queue.paused", "0") == "1",
        selected=selected,
        lineage=lineage(reader, selected, tree) if selected is not None else None,
    )


def refresh(reader: Reader, previous: Snapshot | None, changes: Changes | None, selected: int | None,
            now: float | None = None) -> Snapshot:  # fmt: skip
    """The next snapshot, reading only what `changes` (the feed since `previous`) says moved: the runs' rows and the
    queue always (a few cheap queries), the tree only when a run came, went or changed its status or an evaluation
    landed, the lineage only when its runs' checkpoints, evaluations or spectra changed; new loss values of the
    selected run are appended. Anything else reads everything, as `take` does."""
    if previous is None or changes is None or changes.deleted or selected != previous.selected:
        return take(reader, selected, now)
    now = time.time() if now is None else now
    rows = {r.id: r for r in reader.runs(jobs=True)}
    if _shape(rows) != _shape(previous.rows) or changes.evals:
        return take(reader, selected, now)
    queue = tuple(reader.queue(now))
    tree = tuple(_restep(node, rows) for node in previous.tree)
    view = previous.lineage
    if view is not None:
        chain = {run for run, _, _ in view.runs}
        grown = set(changes.metrics) & chain
        if {r for r, _ in (*changes.checkpoints, *changes.spectra)} & chain:
            view = lineage(reader, view.run, tree)
        elif grown:
            view = _more_loss(reader, view, previous.seq) if grown == {view.run} else lineage(reader, view.run, tree)
    return dataclasses.replace(previous, seq=changes.seq, taken_at=now, tree=tree, rows=rows, queue=queue,
                               pending_jobs=_pending(queue), paused=reader.setting("queue.paused", "0") == "1",
                               lineage=view)  # fmt: skip


def _shape(rows: dict[int, RunRow]) -> dict[int, tuple[object, ...]]:
    """What the tree is drawn from, besides steps: which runs there are, their status, parent, name and liveness."""
    return {i: (r.status, r.alive, r.parent_run, r.parent_step, r.name, r.start_ref) for i, r in rows.items()}


def _restep(node: TreeNode, rows: dict[int, RunRow]) -> TreeNode:
    row = rows.get(node.id)
    return dataclasses.replace(node, step=row.step if row else node.step,
                               children=tuple(_restep(c, rows) for c in node.children))  # fmt: skip


def _more_loss(reader: Reader, lineage: Lineage, since: int) -> Lineage:
    """The selected run's new (or re-logged) loss values, appended to its curve on the lineage axis."""
    run, _, offset = lineage.runs[-1]
    first = 0 if len(lineage.runs) == 1 else 1
    fresh = {offset + m.step: m.value for m in reader.metrics(run, "loss", after_seq=since)
             if m.value is not None and m.step >= first}  # fmt: skip
    if not fresh:
        return lineage
    loss = sorted({**dict(lineage.loss), **fresh}.items())
    return dataclasses.replace(lineage, loss=tuple(loss))


def _pending(queue: tuple[QueueRow, ...]) -> dict[int, int]:
    pending: dict[int, int] = {}
    for r in queue:
        if r.kind in ("eval", "spectra") and r.parent_run is not None and r.status in ("queued", "running"):
            pending[r.parent_run] = pending.get(r.parent_run, 0) + 1
    return pending


def default_selection(tree: tuple[TreeNode, ...], rows: dict[int, RunRow]) -> int | None:
    """What to show first: a run training now (a live dashboard shows what is happening), else the run with the most
    RL runs started from it (the heal sweep the paper is about), else the newest root."""
    nodes = [n for root in tree for n in _walk(root)]
    running = [n.id for n in nodes if rows.get(n.id) and rows[n.id].status == "running" and rows[n.id].alive]
    if running:
        return running[-1]
    healed = [(sum(c.kind == "rl" for c in n.children), n.id) for n in nodes]
    best = max(healed, default=(0, None))
    if best[0] > 0:
        return best[1]
    return tree[-1].id if tree else None


def _walk(node: TreeNode) -> list[TreeNode]:
    return [node, *(n for child in node.children for n in _walk(child))]


def lineage(reader: Reader, run_id: int, tree: tuple[TreeNode, ...] | None = None) -> Lineage:
    """The run's lineage on one axis: its checkpoints' accuracies, the loss, where runs start, the rotation."""
    chain = reader.chain(run_id)
    segs = segments(chain)
    metrics = [*reader.lineage_metrics(run_id, "loss", evals=False), *reader.lineage_metrics(run_id, metrics=False)]
    by_step: dict[int, dict[str, Accuracy]] = {}
    where: dict[int, tuple[int, int]] = {}
    loss: list[tuple[int, float]] = []
    for m in metrics:
        if m.name == "loss" and m.value is not None:
            loss.append((m.lineage_step, m.value))
        elif m.name.startswith("eval/") and m.n is not None:
            split = m.name.split("/")[1]
            assert m.correct is not None and m.ci_low is not None and m.ci_high is not None and m.value is not None
            by_step.setdefault(m.lineage_step, {})[split] = Accuracy(m.value, m.ci_low, m.ci_high, m.correct, m.n)
            where[m.lineage_step] = (m.run, m.step)
    loss_at = dict(loss)
    picks: dict[tuple[int, int], list[str]] = {}
    for seg in segs:
        table = reader.eval_table(seg.run.id)
        for name, entry in table.peaks.items():
            if isinstance(entry, dict) and name not in ("start", "last"):
                picks.setdefault((seg.run.id, entry["step"]), []).append(name)
    for run, checkpoints in reader.checkpoints([s.run.id for s in segs]).items():
        for c in checkpoints:
            if c.pruned_at:
                picks.setdefault((run, c.step), []).append("pruned")
    points = tuple(
        Point(s, *where[s], splits.get("id"), splits.get("ood"), loss_at.get(s), tuple(picks.get(where[s], ())))
        for s, splits in sorted(by_step.items())
    )
    ood = [(p.ood.correct / p.ood.n, -p.lineage_step) for p in points if p.ood is not None and p.ood.n]
    peak = -max(ood)[1] if ood else None
    starts = [Start(seg.offset, seg.run.id, seg.run.name, seg.run.method) for seg in segs[1:]]
    last = segs[-1]
    for child in _children(tuple(reader.tree(run_id)) if tree is None else tree, run_id):
        if child.parent_step is not None:
            starts.append(Start(last.offset + child.parent_step, child.id, child.name, child.method))
    rotation = {seg.run.id: tuple(reader.spectra(seg.run.id, angles=False)) for seg in segs}
    return Lineage(run=run_id, runs=tuple((s.run.id, s.run.name, s.offset) for s in segs), points=points,
                   loss=tuple(loss), starts=tuple(sorted(starts, key=lambda s: (s.lineage_step, s.run))),
                   peak_ood=peak, rotation=rotation)  # fmt: skip


def _children(tree: tuple[TreeNode, ...], run_id: int) -> list[TreeNode]:
    for node in tree:
        found = _find(node, run_id)
        if found is not None:
            return list(found.children)
    return []


def _find(node: TreeNode, run_id: int) -> TreeNode | None:
    if node.id == run_id:
        return node
    for child in node.children:
        found = _find(child, run_id)
        if found is not None:
            return found
    return None
