"""What the TUI shows, as one immutable snapshot built off the UI thread from the store's read views.

The poller (`poller.py`) calls `take` when the change feed says something changed (or the selection moved); panels
only render the snapshot's parts. Nothing here imports Textual, so all of it is tested without a terminal.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from healer.store import Eval, Spectrum
from healer.store.views import Changes, QueueRow, Reader, RunRow, TreeNode, eval_summary, segments


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
    evals: dict[int, tuple[Eval, ...]] = field(default_factory=dict)  # run id -> its evaluations (a refresh reuses)

    def spectra_at(self, point: Point) -> tuple[Spectrum, ...]:
        """The spectra rows of the checkpoint at `point` (one reference: the run's first)."""
        rows = self.rotation.get(point.run, ())
        ref = rows[0].ref if rows else None
        return tuple(r for r in rows if r.step == point.step and r.ref == ref)


def zoomed(lineage: Lineage | None, kinds: dict[int, str]) -> Lineage | None:
    """The lineage from the selected run on (an RL run keeps its parent, the curve it heals): an SFT run that
    continued a pretraining run fills the chart instead of its last sliver. The axis keeps its steps; the point where
    the kept part starts (the parent's checkpoint it started from) stays as its first point."""
    if lineage is None or len(lineage.runs) < 2:
        return lineage
    first = len(lineage.runs) - 1
    if kinds.get(lineage.run) == "rl" and first > 0:
        first -= 1
    if first == 0:
        return lineage
    lo = lineage.runs[first][2]
    points = tuple(p for p in lineage.points if p.lineage_step >= lo)
    ood = [(p.ood.correct / p.ood.n, -p.lineage_step) for p in points if p.ood is not None and p.ood.n]
    return dataclasses.replace(
        lineage,
        runs=lineage.runs[first:],
        points=points,
        loss=tuple((s, v) for s, v in lineage.loss if s >= lo),
        starts=tuple(s for s in lineage.starts if s.lineage_step > lo),
        peak_ood=-max(ood)[1] if ood else None,
    )


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
    compared: dict[int, Lineage] = field(default_factory=dict)  # runs overlaid on the chart (`space`), by id

    @property
    def empty(self) -> bool:
        return not self.tree


def take(reader: Reader, selected: int | None, now: float | None = None,
         compare: frozenset[int] = frozenset()) -> Snapshot:  # fmt: skip
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
        compared={run: lineage(reader, run, tree) for run in sorted(compare) if run in rows and run != selected},
    )


def refresh(reader: Reader, previous: Snapshot | None, changes: Changes | None, selected: int | None,
            now: float | None = None, compare: frozenset[int] = frozenset()) -> Snapshot:  # fmt: skip
    """The next snapshot, reading only what `changes` (the feed since `previous`) says moved: the runs' rows and the
    queue always (a few cheap queries), the tree only when a run came, went or changed its status or an evaluation
    landed, the lineage only when its runs' checkpoints, evaluations or spectra changed; new loss values of the
    selected run are appended. Anything else reads everything, as `take` does."""
    if previous is None or changes is None or changes.deleted or selected != previous.selected:
        return take(reader, selected, now, compare)
    now = time.time() if now is None else now
    rows = {r.id: r for r in reader.runs(jobs=True)}
    if _shape(rows) != _shape(previous.rows):
        return take(reader, selected, now, compare)
    queue = tuple(reader.queue(now))
    evaluated = _evaluated(reader, previous.lineage, changes)
    summaries = {run: eval_summary(run_evals) for run, run_evals in evaluated.items()}
    tree = tuple(_restep(node, rows, summaries) for node in previous.tree)
    view = previous.lineage
    if view is not None:
        chain = {run for run, _, _ in view.runs}
        spectra = [(r, s) for r, s in changes.spectra if r in chain]
        grown = set(changes.metrics) & chain
        if grown and grown != {view.run}:
            view = lineage(reader, view.run, tree)  # an ancestor logged: rare, read it all
        else:
            if grown:
                view = _more_loss(reader, view, previous.seq)
            if set(evaluated) & chain or spectra or {r for r, _ in changes.checkpoints} & chain:
                view = lineage(reader, view.run, tree, reuse=view, spectra=spectra, evals=evaluated)
    compared = {}
    touched = {r for r, _ in (*changes.evals, *changes.checkpoints)}
    for run in sorted(compare - {selected}):
        kept = previous.compared.get(run)
        if run not in rows:
            continue
        if kept is None or touched & {r for r, _, _ in kept.runs}:
            kept = lineage(reader, run, tree)
        compared[run] = kept
    return dataclasses.replace(previous, seq=changes.seq, taken_at=now, tree=tree, rows=rows, queue=queue,
                               compared=compared,
                               pending_jobs=_pending(queue), paused=reader.setting("queue.paused", "0") == "1",
                               lineage=view)  # fmt: skip


def _evaluated(reader: Reader, view: Lineage | None, changes: Changes) -> dict[int, list[Eval]]:
    """The evaluations of every run with new ones: for the lineage's runs, the kept ones with the changed checkpoints'
    read again (an evaluation rerun replaces its row); for the others, all of theirs."""
    runs = sorted({run for run, _ in changes.evals})
    kept = view.evals if view is not None else {}
    fresh = reader.evals_at([c for c in changes.evals if c[0] in kept])
    found = reader.evals_of([run for run in runs if run not in kept])
    for run in runs:
        if run in kept:
            steps = {step for r, step in changes.evals if r == run}
            merged = [e for e in kept[run] if e.step not in steps]
            merged += [e for step in steps for e in fresh[(run, step)]]
            found[run] = sorted(merged, key=lambda e: (e.step, e.split, e.protocol, e.id))
    return found


def _shape(rows: dict[int, RunRow]) -> dict[int, tuple[object, ...]]:
    """What the tree is drawn from, besides steps: which runs there are, their status, parent, name and liveness."""
    return {i: (r.status, r.alive, r.parent_run, r.parent_step, r.name, r.start_ref) for i, r in rows.items()}


def _restep(node: TreeNode, rows: dict[int, RunRow], summaries: dict[int, tuple[Any, Any, Any]]) -> TreeNode:
    """The node with its run's last step, and its accuracies where new evaluations came (a summary per run)."""
    row = rows.get(node.id)
    last_eval, peak_ood, fall = summaries.get(node.id, (node.last_eval, node.peak_ood, node.forgetting))
    return dataclasses.replace(node, step=row.step if row else node.step, last_eval=last_eval, peak_ood=peak_ood,
                               forgetting=fall,
                               children=tuple(_restep(c, rows, summaries) for c in node.children))  # fmt: skip


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


def lineage(reader: Reader, run_id: int, tree: tuple[TreeNode, ...] | None = None, reuse: Lineage | None = None,
            spectra: Iterable[tuple[int, int]] = (),
            evals: dict[int, list[Eval]] | None = None) -> Lineage:  # fmt: skip
    """The run's lineage on one axis: its checkpoints' accuracies, the loss, where runs start, the rotation.

    `reuse`: the same lineage read before; its loss curve is kept (new values come by `_more_loss`) and of its
    spectra only the (run, step) pairs in `spectra` are read again, so a new checkpoint costs its own rows only.
    `evals`: evaluations already read, by run (the others are read here, in one query)."""
    from healer.evals import by_step, default_protocol, find_peaks

    segs = segments(reader.chain(run_id))
    shape = tuple((s.run.id, s.run.name, s.offset) for s in segs)
    if reuse is not None and reuse.runs != shape:
        reuse = None  # the chain itself changed
    if reuse is None:
        loss = [(m.lineage_step, m.value) for m in reader.lineage_metrics(run_id, "loss", evals=False)
                if m.value is not None]  # fmt: skip
    else:
        loss = list(reuse.loss)
    known = evals or {}
    chain_evals = {**reader.evals_of([s.run.id for s in segs if s.run.id not in known]), **known}
    accuracies: dict[int, dict[str, Accuracy]] = {}
    where: dict[int, tuple[int, int]] = {}
    picks: dict[tuple[int, int], list[str]] = {}
    for seg in segs:
        run_evals = chain_evals.get(seg.run.id, [])
        protocol = default_protocol(run_evals)
        for step, splits in by_step(run_evals, protocol).items():
            if seg.holds(step):
                at = seg.offset + step
                where[at] = (seg.run.id, step)
                for split, e in splits.items():
                    accuracies.setdefault(at, {})[split] = Accuracy(e.accuracy, e.ci_low, e.ci_high, e.correct, e.n)
        for name, peak in find_peaks(run_evals, protocol).items():
            if name != "last":
                picks.setdefault((seg.run.id, peak.step), []).append(name)
    for run, checkpoints in reader.checkpoints([s.run.id for s in segs]).items():
        for c in checkpoints:
            if c.pruned_at:
                picks.setdefault((run, c.step), []).append("pruned")
            elif c.protected:
                picks.setdefault((run, c.step), []).append("kept")
    loss_at = dict(loss)
    points = tuple(
        Point(s, *where[s], splits.get("id"), splits.get("ood"), loss_at.get(s), tuple(picks.get(where[s], ())))
        for s, splits in sorted(accuracies.items())
    )
    ood = [(p.ood.correct / p.ood.n, -p.lineage_step) for p in points if p.ood is not None and p.ood.n]
    peak_ood = -max(ood)[1] if ood else None
    starts = [Start(seg.offset, seg.run.id, seg.run.name, seg.run.method) for seg in segs[1:]]
    last = segs[-1]
    for child in _children(tuple(reader.tree(run_id)) if tree is None else tree, run_id):
        if child.parent_step is not None:
            starts.append(Start(last.offset + child.parent_step, child.id, child.name, child.method))
    if reuse is None:
        rotation = {seg.run.id: tuple(reader.spectra(seg.run.id, angles=False)) for seg in segs}
    else:
        rotation = dict(reuse.rotation)
        for run, step in dict.fromkeys(spectra):
            if run in rotation:
                kept = tuple(r for r in rotation[run] if r.step != step)
                fresh = tuple(reader.spectra(run, angles=False, step=step))
                rotation[run] = tuple(sorted((*kept, *fresh), key=lambda r: (r.step, r.layer, r.module, r.side)))
    return Lineage(run=run_id, runs=shape, points=points, loss=tuple(loss),
                   starts=tuple(sorted(starts, key=lambda s: (s.lineage_step, s.run))), peak_ood=peak_ood,
                   rotation=rotation, evals={run: tuple(chain_evals[run]) for run, _, _ in shape})  # fmt: skip


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
