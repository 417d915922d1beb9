"""The queue: runs added for a worker, what each waits for, and how a worker takes one.

A queued run is a row of `runs` with `queued = 1` and status `queued`. It may wait for another run to finish
(`--after RUN`) and for the checkpoint it starts from (`--from RUN@STEP` waits for that checkpoint to exist;
`--from RUN@peak-ood`, `@best-id`, `@loss-pick` and `@last` wait until RUN is done, then pick). A run whose
dependency failed or was cancelled fails too, with the reason named, as pueue does.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healer.errors import HealerError
from healer.presets import Preset, spec_dict_starting_from
from healer.refs import NAMED, CheckpointRef, check_startable, resolve_checkpoint
from healer.runner import CANCEL_GRACE_S, create_run, reap_dead, stop_process_group
from healer.store import FINISHED, Kind, Run, Status, Store, pid_alive

PAUSED = "queue.paused"


@dataclass(frozen=True)
class Wait:
    """Why a queued run cannot start yet (`fatal`: and never will)."""

    reason: str
    fatal: bool = False
    on: int | None = None  # the run whose finish (or checkpoint at `step`) may end the wait
    step: int | None = None


def add(store: Store, preset: Preset, *, start: str | None = None, after: str | None = None, priority: int = 0,
        gpus: int | None = None) -> Run:  # fmt: skip
    """Queue a run; every reference is checked now, so a typo is refused here and not at 3 a.m."""
    if gpus is not None and gpus < 0:
        raise HealerError("--gpus must be 0 or more")
    after_run = store.find_run(after).id if after else None
    start_ref = check_start_ref(store, start) if start else None
    parent_run, parent_step = _parent_of(start_ref)
    return create_run(store, preset, parent_run=parent_run, parent_step=parent_step, queued=1, priority=priority,
                      gpus=gpus, after_run=after_run, start_ref=start_ref)  # fmt: skip


def check_start_ref(store: Store, text: str) -> str:
    """A --from reference as it will be resolved later: its run must exist and its selector be known."""
    if "@" not in text:
        ref = resolve_checkpoint(store, text)  # a directory, or a run's last checkpoint, now
        check_startable(ref)
        return ref.path if ref.run is None else f"{ref.run.id}@{ref.step}"
    run_text, selector = text.rsplit("@", 1)
    run = store.find_run(run_text)
    if not selector.isdigit() and selector not in NAMED:
        raise HealerError(f"--from {text}: use RUN@STEP or RUN@{'|'.join(NAMED)}")
    if selector.isdigit() or run.status in FINISHED:
        ready = wait_for_start(store, f"{run.id}@{selector}")
        if ready is not None and ready.fatal:
            raise HealerError(f"--from {text}: {ready.reason}")
    return f"{run.id}@{selector}"


def _parent_of(start_ref: str | None) -> tuple[int | None, int | None]:
    """The checkpoint a queued run starts from, as far as it is known now: RUN@STEP names both; RUN@peak-ood names
    the run only (the step is picked once it is done)."""
    if start_ref is None or "@" not in start_ref:
        return None, None
    run, selector = start_ref.split("@", 1)
    return int(run), int(selector) if selector.isdigit() else None


def ready_runs(store: Store, fail: Callable[[Run, str], None]) -> Iterator[Run]:
    """Queued runs whose dependencies are met, in the order workers take them, read lazily; `fail(run, reason)`
    gets each run that can never start (its dependency failed, its checkpoint is gone)."""
    for run in store.iter_queued(unblocked=True):
        waiting = wait_for(store, run)
        if waiting is None:
            yield run
        elif waiting.fatal:
            fail(run, f"cannot start: {waiting.reason}")
        elif waiting.on is not None:
            store.block(run.id, waiting.on, waiting.step)  # out of the claims until that run finishes or saves


def wait_for(store: Store, run: Run) -> Wait | None:
    """What a queued run waits for, or None when a worker may start it now."""
    if run.after_run is not None:
        dep = store.run(run.after_run)
        if dep.status in (Status.FAILED, Status.CANCELLED):
            return Wait(f"run {dep.id}, which it runs after, {dep.status}", fatal=True)
        if dep.status != Status.DONE:
            return Wait(f"run {dep.id} to finish (--after)", on=dep.id)
    if run.start_ref:
        return wait_for_start(store, run.start_ref)
    return None


def wait_for_start(store: Store, start_ref: str) -> Wait | None:
    if "@" not in start_ref:
        return None if Path(start_ref).is_dir() else Wait(f"{start_ref} is gone", fatal=True)
    run_text, selector = start_ref.rsplit("@", 1)
    run = store.run(int(run_text))
    if selector.isdigit():
        step = int(selector)
        if step == 0 or step in {c.step for c in store.checkpoints(run.id)}:
            return _startable(store, start_ref)
        if run.status in FINISHED:
            return Wait(f"run {run.id} {run.status} without a checkpoint at step {step}", fatal=True)
        return Wait(f"run {run.id} to save step {step}", on=run.id, step=step)
    if run.status in (Status.FAILED, Status.CANCELLED):
        return Wait(f"run {run.id}, whose {selector} it starts from, {run.status}", fatal=True)
    if run.status != Status.DONE:
        return Wait(f"run {run.id} to finish (its {selector} is picked then)", on=run.id)
    pending = store.pending_eval_jobs(run.id) if selector != "last" else 0
    if pending:
        return Wait(f"the evaluations of run {run.id} ({pending} left; its {selector} is picked then)")
    return _startable(store, start_ref)


def _startable(store: Store, start_ref: str) -> Wait | None:
    try:
        check_startable(resolve_checkpoint(store, start_ref))
    except HealerError as exc:
        return Wait(str(exc), fatal=True)
    return None


def resolved_start(store: Store, run: Run) -> dict[str, Any]:
    """The columns a claimed run gets from its --from reference, picked now (the peak of a finished run, ...)."""
    if not run.start_ref:
        return {}
    ref: CheckpointRef = resolve_checkpoint(store, run.start_ref)
    check_startable(ref)
    spec = spec_dict_starting_from(run.spec_dict, ref.path)
    return {"spec": json.dumps(spec, sort_keys=True), "model_path": ref.path,
            "parent_run": ref.run.id if ref.run else None, "parent_step": ref.step if ref.run else None}  # fmt: skip


def enqueue_job(store: Store, run: Run, step: int, path: str, kind: str = "eval",
                spec: dict[str, Any] | None = None, priority: int | None = None) -> Run | None:  # fmt: skip
    """Queue a job on one of a run's checkpoints for a worker: its ID/OOD evaluation (kind `eval`) or its spectra
    (kind `spectra`); None when one is pending already.

    The job is a `runs` row whose parent is the checkpoint (parent_run, parent_step); it writes its results under
    the training run, so they read exactly as if the training process had made them. Its settings are its own
    spec (the run's, unless `spec` changes them: another split, protocol, reference or k)."""
    if pending_job(store, run.id, step, kind) is not None:
        return None
    out_dir = Path(run.out_dir or store.path.parent / "runs" / f"{run.id:05d}") / "jobs"
    return store.create_run(kind=kind, method=kind, name=f"{kind} {run.id}@{step}", spec=spec or run.spec_dict,
                            model_path=path, parent_run=run.id, parent_step=step, queued=1,
                            priority=run.priority if priority is None else priority, out_dir=str(out_dir),
                            log_path=str(out_dir / f"{kind}-{step}.log"))  # fmt: skip


def queue_checkpoint_job(store: Store, target: CheckpointRef, kind: str, overrides: list[str],
                         priority: int = 0) -> Run:  # fmt: skip
    """`healer eval RUN@STEP --queue` and `healer spectra measure RUN@STEP --queue` (and the TUI's `e` and `s`): one
    job for a worker on a run's checkpoint, with the run's settings changed by `overrides` (checked now)."""
    from healer.presets import build_spec, with_overrides

    run = target.run
    if run is None or run.kind in (Kind.EVAL, Kind.SPECTRA):
        raise HealerError(f"{target.label}: --queue takes a checkpoint of a healer run (RUN@STEP); evaluate a "
                          "directory now, without --queue")  # fmt: skip
    check_startable(target)
    spec = with_overrides(build_spec(run.spec_dict, source=f"run {run.id}"), overrides, source="--set")
    pending = pending_job(store, run.id, target.step, kind)
    if pending is not None:
        raise HealerError(f"a {kind} job on {run.id}@{target.step} is {pending.status} already (run {pending.id}); "
                          f"wait for it, or `healer queue cancel {pending.id}` first")  # fmt: skip
    job = enqueue_job(store, run, target.step, target.path, kind, spec=spec.to_dict(), priority=priority)
    if job is None:  # another process queued one between the check and the insert
        raise HealerError(f"a {kind} job on {run.id}@{target.step} was queued a moment ago; `healer queue ls`")
    return job


def pending_job(store: Store, run: int, step: int, kind: str) -> Run | None:
    """The job of this kind on RUN@STEP that is queued or running, if one is."""
    waiting = (Status.QUEUED, Status.RUNNING)
    jobs = store.checkpoint_jobs(run)
    return next((j for j in jobs if j.kind == kind and j.parent_step == step and j.status in waiting), None)


def paused(store: Store) -> bool:
    return store.setting(PAUSED, "0") == "1"


def cancel_run(store: Store, run: Run, grace: float = CANCEL_GRACE_S,
               on_kill: Callable[[], None] | None = None) -> str:  # fmt: skip
    """Cancel a waiting run, or stop a running one (SIGTERM to its process group, SIGKILL after `grace`); returns
    what happened, in one line. The CLI's `queue cancel` and the TUI's `c` both come here."""
    if run.status in FINISHED:
        raise HealerError(f"run {run.id} already {run.status}; nothing to cancel")
    if run.status == Status.QUEUED or (run.is_checkpoint_job and run.started_at is None):
        # a checkpoint job claimed into a batch but not begun: its process skips it
        store.cancel(run.id, "cancelled before it started")
        return f"run {run.id} cancelled before it started"
    if run.executor == "slurm" and run.slurm_job:
        from healer.slurm import cancel_job

        cancel_job(run)  # Slurm signals the job wherever it runs; the worker ingests what it wrote before it ended
        store.cancel(run.id, f"cancelled (healer queue cancel: scancel {run.slurm_job})")
        return f"run {run.id} {store.run(run.id).status} (scancel {run.slurm_job})"
    if run.host and run.host != socket.gethostname():
        raise HealerError(f"run {run.id} runs on {run.host}; cancel it there (signals do not cross machines)")
    if run.pid is None or not pid_alive(run.pid):
        reap_dead(store)
        run = store.run(run.id)
        if run.status in FINISHED:
            return f"run {run.id} had already ended: {run.status}"
        raise HealerError(f"run {run.id} is starting; try again in a moment")
    stop_process_group(run.pid, grace, on_kill=on_kill)
    store.cancel(run.id, "cancelled (healer queue cancel)")
    return f"run {run.id} {store.run(run.id).status}"


def retry_run(store: Store, run: Run) -> str:
    """Queue a failed or cancelled run again under the same id; it resumes from its newest checkpoint that holds the
    trainer's state. Returns what will happen, in one line."""
    from healer.retention import resume_point

    reap_dead(store)
    run = store.run(run.id)
    if run.status not in (Status.FAILED, Status.CANCELLED):
        raise HealerError(f"run {run.id} is {run.status}; only failed or cancelled runs can be retried")
    store.requeue(run.id)
    point = resume_point(store, run.id)
    resume = (f"; it resumes from step {point.step} ({Path(point.path).name})" if point
              else "; it has no checkpoint to resume from, so it starts over")  # fmt: skip
    return f"run {run.id} queued again{resume}"


def set_priority(store: Store, run: Run, priority: int) -> str:
    """Give a waiting run a new priority (higher first, ties oldest first); returns what happened, in one line."""
    if run.status != Status.QUEUED or not store.set_priority(run.id, priority):
        raise HealerError(f"run {run.id} is {run.status}; only a waiting run's priority can change")
    return f"run {run.id} priority {priority}"
