"""Lineage: runs started from other runs' checkpoints, read as trees and on one continuous step axis.

A run that started from step S of its parent continues the parent's curve: its step t sits at
`offset(parent) + S + t` on the lineage axis, where the root run's offset is 0. So an SFT run of 300 steps and a
GRPO run started from its step 100 read as SFT steps 0..100, then RL steps at 101, 102, ... The parent's points
after S belong to a different branch and are left out; the child's step 0 (the same checkpoint as the parent's
step S) is left out too, so the axis has one point per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from healer.evals import by_step, default_protocol, find_peaks
from healer.store import Run, Store


@dataclass(frozen=True)
class Segment:
    """The part of one run on a lineage axis: its steps `first_step..until` shifted by `offset`."""

    run: Run
    offset: int
    until: int | None  # the step the next run started from; None for the run itself
    first_step: int  # 0 for the root, 1 for runs that continue a parent (their step 0 is the parent's)


def segments(store: Store, run: Run) -> list[Segment]:
    """The chain root -> ... -> run, each with the offset of its steps on the lineage axis."""
    chain: list[tuple[Run, int | None]] = [(run, None)]
    seen = {run.id}
    current = run
    while current.parent_run is not None and current.parent_run not in seen:
        parent = store.run(current.parent_run)
        chain.insert(0, (parent, current.parent_step or 0))
        seen.add(parent.id)
        current = parent
    result, offset = [], 0
    for i, (member, until) in enumerate(chain):
        result.append(Segment(member, offset, until, 0 if i == 0 else 1))
        offset += until or 0
    return result


def lineage_rows(store: Store, run: Run, name: str | None = None, evals: bool = True) -> list[dict[str, Any]]:
    """Metrics (and eval accuracies, as `eval/SPLIT/accuracy`) of a run's lineage on one axis, `lineage_step`."""
    rows: list[dict[str, Any]] = []
    for seg in segments(store, run):
        within = _within(seg)
        base = {"run": seg.run.id, "run_name": seg.run.name, "kind": seg.run.kind}
        for m in store.metrics(seg.run.id, name):
            if within(m.step):
                rows.append({**base, "step": m.step, "lineage_step": seg.offset + m.step, "name": m.name,
                             "value": m.value, "wall_time": m.wall_time})  # fmt: skip
        if not evals:
            continue
        run_evals = store.evals(seg.run.id)
        for step, splits in by_step(run_evals, default_protocol(run_evals)).items():
            if not within(step):
                continue
            for split, e in splits.items():
                metric = f"eval/{split}/accuracy"
                if name is None or name == metric:
                    rows.append({**base, "step": step, "lineage_step": seg.offset + step, "name": metric,
                                 "value": e.accuracy, "wall_time": None, "n": e.n, "correct": e.correct,
                                 "ci_low": e.ci_low, "ci_high": e.ci_high, "protocol": e.protocol})  # fmt: skip
    rows.sort(key=lambda r: (r["lineage_step"], r["name"]))
    return rows


def _within(seg: Segment) -> Any:
    return lambda step: step >= seg.first_step and (seg.until is None or step <= seg.until)


def root_of(store: Store, run: Run) -> Run:
    return segments(store, run)[0].run


def tree(store: Store, root: Run | None = None) -> list[dict[str, Any]]:
    """Runs as nested dicts, each with its children (runs started from its checkpoints) and accuracies."""
    runs = [r for r in store.runs() if r.kind not in ("eval", "spectra")]  # jobs and evaluation holders
    children: dict[int | None, list[Run]] = {}
    for r in runs:
        children.setdefault(r.parent_run if r.parent_run in {x.id for x in runs} else None, []).append(r)

    def node(r: Run, depth: int) -> dict[str, Any]:
        kids = children.get(r.id, []) if depth < 64 else []
        return {**tree_entry(store, r), "children": [node(c, depth + 1) for c in kids]}

    tops = [root] if root is not None else children.get(None, [])
    return [node(r, 0) for r in tops]


def tree_entry(store: Store, run: Run) -> dict[str, Any]:
    """What a tree shows per run: status, progress, accuracy at its last evaluated step and its OOD peak."""
    run_evals = store.evals(run.id)
    protocol = default_protocol(run_evals)
    table = by_step(run_evals, protocol)
    entry: dict[str, Any] = {
        "id": run.id, "name": run.name, "kind": run.kind, "method": run.method, "status": run.status,
        "parent_run": run.parent_run, "parent_step": run.parent_step, "start_ref": run.start_ref,
        "step": store.last_step(run.id),
        "total_steps": run.total_steps, "last_eval": None, "peak_ood": None,
    }  # fmt: skip
    if table:
        step = max(table)
        entry["last_eval"] = {"step": step, **{s: e.accuracy for s, e in table[step].items()}}
    peak = find_peaks(run_evals, protocol).get("peak-ood")
    if peak is not None:
        entry["peak_ood"] = {"step": peak.step, "ood": table[peak.step]["ood"].accuracy}
    return entry
