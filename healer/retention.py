"""Checkpoint retention: `train.keep = "last:N"` deletes older checkpoints, never a protected one.

Protected: checkpoints marked by hand (`healer runs keep RUN@STEP`), the evaluation picks (OOD peak, best ID,
loss pick), the start points of runs started or queued from this run, checkpoints not evaluated yet (the peak is not
known before they are) and checkpoints an evaluation job is reading. A pruned checkpoint keeps its row, marked with
`pruned_at`, so lineage and evaluations still name it. The newest checkpoint always stays: a retry resumes from it
(`resume_point`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from healer.errors import HealerError
from healer.evals import find_peaks
from healer.presets import build_spec, keep_last
from healer.store import Checkpoint, Run, Status, Store

ACTIVE = (Status.QUEUED, Status.RUNNING)
TRAINER_STATE = "trainer_state.json"  # what a checkpoint needs for the trainer to continue from it


def resume_point(store: Store, run_id: int) -> Checkpoint | None:
    """The checkpoint a run continues from when it executes again, however its earlier attempt ran (`healer run`, a
    worker): its newest registered checkpoint still on disk that holds the trainer's state; None: it starts over."""
    for checkpoint in reversed(store.checkpoints(run_id)):
        if (Path(checkpoint.path) / TRAINER_STATE).is_file():
            return checkpoint
    return None


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
    for waiting in store.waiting_on(run.id):
        selector = (waiting.start_ref or "").partition("@")[2]
        if selector.isdigit():
            reasons.setdefault(int(selector), f"start of queued run {waiting.id}")
    for step in store.spectra_reference_steps(run.id):
        reasons.setdefault(step, "a spectra reference")
    for job in store.checkpoint_jobs(run.id):
        if job.status in ACTIVE and job.parent_step is not None:
            what = "evaluation" if job.kind == "eval" else job.kind
            reasons.setdefault(job.parent_step, f"read by {what} job {job.id}")
    if spec.eval.every_checkpoint:
        wanted = set(spec.eval.splits)
        evaluated: dict[int, set[str]] = {}
        for e in run_evals:
            evaluated.setdefault(e.step, set()).add(e.split)
        for c in checkpoints:
            if not wanted <= evaluated.get(c.step, set()):
                reasons.setdefault(c.step, "not evaluated yet")
    return reasons


def prune(store: Store, run_id: int, keep: str | None = None, *, dry_run: bool = False) -> list[int]:
    """Delete the run's checkpoints beyond `keep` (default: its train.keep) that nothing protects; returns the
    steps pruned (with dry_run, the steps that would be)."""
    run = store.run(run_id)
    text = keep if keep is not None else run.spec_dict.get("train", {}).get("keep", "all")
    last = keep_last(text, "--keep" if keep is not None else f"run {run.id}: train.keep")
    older = store.checkpoints(run.id)[:-last] if last is not None else []
    if not older:
        return []
    safe = protected(store, run)
    doomed = [c for c in older if c.step not in safe]
    steps = [c.step for c in doomed]
    if dry_run:
        return steps
    for checkpoint in doomed:
        shutil.rmtree(Path(checkpoint.path), ignore_errors=True)
        store.mark_pruned(run.id, checkpoint.step)
    if steps:
        print(f"healer: pruned checkpoints {', '.join(map(str, steps))} of run {run.id} (keep = last:{last})",
              flush=True)  # fmt: skip
    return steps


def delete_run(store: Store, run: Run, *, files: bool = True) -> str:
    """`healer runs rm RUN` (and the TUI's `d`): remove a finished run and its records; with files, its folder too
    when healer made it (under the store's runs/ folder). Never a queued or running run, nor one that other runs
    started from or wait for: their lineage would lose its parent. Returns what happened, in one line."""
    if run.status not in (Status.DONE, Status.FAILED, Status.CANCELLED):
        hint = f"`healer queue {'cancel' if run.status == Status.RUNNING else 'rm'} {run.id}` first"
        raise HealerError(f"run {run.id} is {run.status}; only a finished run can be deleted ({hint})")
    if run.is_checkpoint_job:
        raise HealerError(f"run {run.id} is a job on run {run.parent_run}'s checkpoint; it goes with that run")
    started = [r.id for r in store.children(run.id)]
    waiting = [r.id for r in store.waiting_on(run.id)]
    if started or waiting:
        names = ", ".join(map(str, dict.fromkeys(started + waiting)))
        raise HealerError(f"runs {names} started from run {run.id} or wait for it; delete them first (their lineage "
                          "would lose its parent)")  # fmt: skip
    jobs = [j for j in store.checkpoint_jobs(run.id) if j.status in ACTIVE]
    if jobs:
        raise HealerError(f"jobs {', '.join(str(j.id) for j in jobs)} still read run {run.id}'s checkpoints; "
                          "`healer queue cancel` them or wait")  # fmt: skip
    folder = Path(run.out_dir) if run.out_dir else None
    own = folder is not None and folder.resolve().is_relative_to((store.path.parent / "runs").resolve())
    rows = store.delete_finished_run(run.id)
    if files and own and folder is not None and folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
        return f"run {run.id} ({run.name}) deleted: {rows} rows and its folder {folder}"
    kept = f"; its files stay in {folder}" if folder is not None and folder.exists() else ""
    return f"run {run.id} ({run.name}) deleted: {rows} rows{kept}"
