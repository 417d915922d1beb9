"""Checkpoint retention: `train.keep = "last:N"` deletes older checkpoints, never a protected one.

Protected: checkpoints marked by hand (`healer runs keep RUN@STEP`), the evaluation picks (OOD peak, best ID,
loss pick), the start points of runs started or queued from this run, checkpoints not evaluated yet (the peak is not
known before they are) and checkpoints an evaluation job is reading. A pruned checkpoint keeps its row, marked with
`pruned_at`, so lineage and evaluations still name it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from healer.evals import find_peaks
from healer.presets import build_spec, keep_last
from healer.store import Run, Status, Store

ACTIVE = (Status.QUEUED, Status.RUNNING)


def protected(store: Store, run: Run) -> dict[int, str]:
    """Steps of a run's checkpoints that must stay on disk, each with the reason."""
    spec = build_spec(run.spec_dict, source=f"run {run.id}")
    checkpoints = store.checkpoints(run.id)
    reasons: dict[int, str] = {c.step: "kept by hand" for c in checkpoints if c.protected}
    run_evals = store.evals(run.id)
    for name, peak in find_peaks(run_evals).items():
        reasons.setdefault(peak.step, name)
    for child in store.children(run.id):
        if child.parent_step is not None:
            reasons.setdefault(child.parent_step, f"start of run {child.id}")
    for waiting in store.queued_runs():
        if waiting.start_ref and waiting.start_ref.startswith(f"{run.id}@"):
            selector = waiting.start_ref.split("@", 1)[1]
            if selector.isdigit():
                reasons.setdefault(int(selector), f"start of queued run {waiting.id}")
    for job in store.eval_jobs(run.id):
        if job.status in ACTIVE and job.parent_step is not None:
            reasons.setdefault(job.parent_step, f"read by evaluation job {job.id}")
    if spec.eval.every_checkpoint:
        wanted = set(spec.eval.splits)
        evaluated: dict[int, set[str]] = {}
        for e in run_evals:
            evaluated.setdefault(e.step, set()).add(e.split)
        for c in checkpoints:
            if not wanted <= evaluated.get(c.step, set()):
                reasons.setdefault(c.step, "not evaluated yet")
    return reasons


def prune(store: Store, run_id: int) -> list[int]:
    """Delete the run's checkpoints beyond its train.keep that nothing protects; returns the pruned steps."""
    run = store.run(run_id)
    keep = keep_last(run.spec_dict.get("train", {}).get("keep", "all"), source=f"run {run.id}")
    if keep is None:
        return []
    checkpoints = store.checkpoints(run.id)
    older = checkpoints[:-keep] if keep else checkpoints
    if not older:
        return []
    safe = protected(store, run)
    pruned = []
    for checkpoint in older:
        if checkpoint.step in safe:
            continue
        shutil.rmtree(Path(checkpoint.path), ignore_errors=True)
        store.mark_pruned(run.id, checkpoint.step)
        pruned.append(checkpoint.step)
    if pruned:
        print(f"healer: pruned checkpoints {', '.join(map(str, pruned))} of run {run.id} (train.keep = last:{keep})",
              flush=True)  # fmt: skip
    return pruned
