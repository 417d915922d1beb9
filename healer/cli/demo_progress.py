"""The demo's progress: a line when a stage starts, one per evaluated checkpoint, one when it ends, each with the
time the stage has left. The estimate starts from rates measured on 2 CPU cores and takes this machine's own as
soon as a run or a job of the kind has finished."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from healer.evals import by_step
from healer.store import FINISHED, Run, Status, Store
from healer.store.views import elapsed_seconds

# Measured on 2 CPU cores (the tiny model, batch 64): seconds per optimizer step by method, a process's start
# (imports, the model, the dataset), and one checkpoint job (500 ID and 500 OOD prompts; a spectra comparison).
STEP_S = {"sft": 0.2, "grpo": 0.35, "rloo": 0.35}
START_S = 12.0
JOB_S = {"eval": 3.0, "spectra": 0.5}
EVERY_S = 2.0  # how often the store is read


@dataclass
class Stage:
    number: int
    title: str
    runs: list[int]  # its training runs; their checkpoints' jobs belong to it


@dataclass
class Progress:
    """Called by the demo's worker on every poll (`tick`); says lines through `say`."""

    store: Store
    stages: list[Stage]
    say: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    current: int = 0
    started: float | None = None
    seen: set[tuple[int, int]] = field(default_factory=set)
    _read: float = float("-inf")

    def total_estimate(self) -> float:
        return sum(self.stage_left(s) for s in self.stages)

    def tick(self) -> None:
        now = self.clock()
        if now - self._read < EVERY_S:
            return
        self._read = now
        while self.current < len(self.stages):
            stage = self.stages[self.current]
            runs = [self.store.run(r) for r in stage.runs]
            if self.started is None:
                self.started = now
                ids = ", ".join(str(r.id) for r in runs)
                names = f"run {runs[0].id} {runs[0].name}" if len(runs) == 1 else f"runs {ids}"
                self.say(f"stage {stage.number}: {stage.title} ({names}); about {minutes(self.stage_left(stage))}")
            self._checkpoints(stage, runs)
            if not all(r.status in FINISHED for r in runs) or self._jobs_left(stage):
                return
            failed = [f"run {r.id} {r.status}" for r in runs if r.status != Status.DONE]
            took = minutes(now - self.started, about=False)
            self.say(f"stage {stage.number} done in {took}" + (f" ({', '.join(failed)})" if failed else ""))
            self.current, self.started = self.current + 1, None

    def _checkpoints(self, stage: Stage, runs: list[Run]) -> None:
        """A line per newly evaluated checkpoint: its ID and OOD accuracy, and the time the stage has left."""
        for run in runs:
            for step, splits in by_step(self.store.evals(run.id), "single").items():
                if (run.id, step) in self.seen or not {"id", "ood"} <= splits.keys():
                    continue
                self.seen.add((run.id, step))
                where = f"{run.id}@{step}" + (f"/{run.total_steps}" if run.total_steps else "")
                self.say(f"  {where}: ID {100 * splits['id'].accuracy:.1f}, OOD {100 * splits['ood'].accuracy:.1f}"
                         f"; stage {stage.number} has about {minutes(self.stage_left(stage))} left")  # fmt: skip

    def stage_left(self, stage: Stage) -> float:
        """Seconds the stage still needs: its runs' steps left and their checkpoints' jobs not yet done."""
        left = 0.0
        for run in (self.store.run(r) for r in stage.runs):
            if run.status in FINISHED:
                continue
            rate = self._step_s(run.method)
            if run.status == Status.RUNNING:
                step = self.store.last_step(run.id) or 0
                left += max(0, (run.total_steps or 0) - step) * rate
            else:
                left += START_S + (run.total_steps or 0) * rate
        jobs = self._jobs_left(stage)
        return left + sum(n * self._job_s(kind) for kind, n in jobs.items()) + (START_S if jobs else 0.0)

    def _jobs_left(self, stage: Stage) -> dict[str, int]:
        """Checkpoint jobs of the stage's runs still to do, by kind: those queued or running, and those of
        checkpoints not saved yet (every checkpoint gets an evaluation, and spectra when the run asks for them)."""
        left: dict[str, int] = {}
        for run in (self.store.run(r) for r in stage.runs):
            jobs = self.store.checkpoint_jobs(run.id)
            for kind, wanted in _expected_jobs(run).items():
                done = sum(1 for j in jobs if j.kind == kind and j.status in FINISHED)
                count = 0 if run.status in FINISHED and not _pending(jobs, kind) else max(0, wanted - done)
                if count:
                    left[kind] = count
        return left

    def _step_s(self, method: str) -> float:
        """Seconds per step of this method: the demo's own finished runs of it, else the 2-core figure."""
        rates = [
            (elapsed - START_S) / run.total_steps
            for run in self.store.runs(status=[Status.DONE])
            if run.method == method and run.total_steps and (elapsed := elapsed_seconds(run)) and elapsed > START_S
        ]
        return rates[-1] if rates else STEP_S.get(method, STEP_S["sft"])

    def _job_s(self, kind: str) -> float:
        times = [
            t
            for job in self.store.runs(status=[Status.DONE])
            if job.kind == kind and (t := elapsed_seconds(job)) is not None
        ]
        return sum(times) / len(times) if times else JOB_S.get(kind, JOB_S["eval"])


def _expected_jobs(run: Run) -> dict[str, int]:
    """The checkpoint jobs a queued training run makes: an evaluation of its start and of every checkpoint, and
    spectra of every checkpoint when asked."""
    spec = run.spec_dict
    if spec.get("eval", {}).get("jobs") == "inline":
        return {}
    save, total = spec.get("train", {}).get("save_steps") or 0, run.total_steps or 0
    checkpoints = total // save if save else 0
    jobs = {"eval": checkpoints + 1} if spec.get("eval", {}).get("every_checkpoint", True) else {}
    if spec.get("spectra", {}).get("every_checkpoint") and spec.get("spectra", {}).get("jobs") != "inline":
        jobs["spectra"] = checkpoints
    return jobs


def _pending(jobs: list[Run], kind: str) -> bool:
    return any(j.kind == kind and j.status not in FINISHED for j in jobs)


def minutes(seconds: float, about: bool = True) -> str:
    """`40 s`, `3 min`, `2 min 05 s` (without `about`)."""
    if seconds < 60:
        return f"{max(5, round(seconds / 5) * 5) if about else round(seconds)} s"
    if about:
        return f"{round(seconds / 60)} min"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"
