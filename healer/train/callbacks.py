"""TrainerCallbacks: the only way metrics and checkpoints leave a trainer for the store."""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from healer.evals import describe_eval
from healer.presets import RunSpec
from healer.retention import prune
from healer.store import Run, Store

FINAL_ATTEMPTS = 5  # at the end of training, each waits out the busy timeout before the run fails


class StoreCallback(TrainerCallback):
    """Streams every log into the metrics table and registers every checkpoint as it is saved.

    A write the database refuses (another process held its lock past the busy timeout, the disk is full) is kept
    and retried at the next log and at the end, in order, so a passing fault loses no rows and stops no training."""

    def __init__(self, store: Store, run_id: int) -> None:
        self.store = store
        self.run_id = run_id
        self.pending: deque[Callable[[], object]] = deque()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        numbers = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            step, now = state.global_step, time.time()
            self.write(lambda: self.store.log_metrics(self.run_id, step, numbers, wall_time=now))

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            step, path = state.global_step, str((Path(args.output_dir) / f"checkpoint-{state.global_step}").resolve())
            if self.write(lambda: self.store.add_checkpoint(self.run_id, step, path)):
                self.prune()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:  # fmt: skip
        if state.is_world_process_zero:
            for attempt in range(FINAL_ATTEMPTS):
                if self.flush(final=attempt == FINAL_ATTEMPTS - 1):
                    break
                time.sleep(1.0)
            self.prune()  # the last inline evaluation may have moved the peak

    def write(self, operation: Callable[[], object]) -> bool:
        """Do a write now, after any still pending; True when nothing is left pending."""
        self.pending.append(operation)
        return self.flush()

    def flush(self, final: bool = False) -> bool:
        while self.pending:
            try:
                self.pending[0]()
            except sqlite3.OperationalError as exc:
                if final:
                    raise
                print(f"healer: the database refused a write ({exc}); {len(self.pending)} writes kept to retry",
                      flush=True)  # fmt: skip
                return False
            self.pending.popleft()
        return True

    def prune(self) -> None:
        try:
            prune(self.store, self.run_id)
        except sqlite3.OperationalError as exc:  # retention runs again at the next save, and after the run
            print(f"healer: checkpoint retention skipped this time ({exc})", flush=True)


class CheckpointJobs(TrainerCallback):
    """Work on the starting model (step 0) and on every checkpoint as it is saved: in this process (`inline`, the
    run pauses), or queued as a job per checkpoint for a worker (`queue`), so that training never waits for it."""

    kind = ""  # the job kind: eval or spectra
    what = ""  # for the log: "its evaluation"

    def __init__(self, store: Store, run: Run, spec: RunSpec, tokenizer: Any) -> None:
        self.store = store
        self.run = run
        self.spec = spec
        self.tokenizer = tokenizer
        self.queue_jobs = queue_jobs(run, getattr(spec, self.kind).jobs)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, **kwargs: Any) -> None:  # fmt: skip
        if state.global_step > 0 or not state.is_world_process_zero:
            return  # resumed: the start was measured by the attempt that saved the checkpoint
        if self.measured(0):  # a retry that starts over: the start is the same model as the first time
            print(f"healer: step 0: {self.what} is in the store from an earlier attempt", flush=True)
            return
        self._dispatch(0, self.spec.model.path, model)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None,
                **kwargs: Any) -> None:  # fmt: skip
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self._dispatch(state.global_step, str(path.resolve()), model)

    def _dispatch(self, step: int, path: str, model: Any) -> None:
        if not self.queue_jobs:
            self.inline(step, path, model)
            return
        from healer.queue import enqueue_job

        job = enqueue_job(self.store, self.store.run(self.run.id), step, path, self.kind)
        if job is not None:
            print(f"healer: step {step}: queued {self.what} as job {job.id}", flush=True)

    def inline(self, step: int, path: str, model: Any) -> None:
        raise NotImplementedError

    def measured(self, step: int) -> bool:
        """Whether the store holds this work's results for a step of the run already."""
        raise NotImplementedError


class EvalCallback(CheckpointJobs):
    """ID and OOD evaluation of every checkpoint (eval.every_checkpoint)."""

    kind, what = "eval", "its evaluation"

    def inline(self, step: int, path: str, model: Any) -> None:
        from healer.train.evaluate import evaluate

        for e in evaluate(self.store, run_id=self.run.id, step=step, checkpoint_path=path, model=model,
                          tokenizer=self.tokenizer, spec=self.spec):  # fmt: skip
            print(describe_eval(e), flush=True)

    def measured(self, step: int) -> bool:
        return set(self.spec.eval.splits) <= {e.split for e in self.store.evals(self.run.id) if e.step == step}


class SpectraCallback(CheckpointJobs):
    """Singular-vector rotation of every checkpoint against spectra.ref (spectra.every_checkpoint), read from the
    checkpoint as saved."""

    kind, what = "spectra", "its spectra"

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, **kwargs: Any) -> None:  # fmt: skip
        if self.spec.spectra.ref != "start":  # the start against itself is nothing to measure
            super().on_train_begin(args, state, control, model=model, **kwargs)

    def inline(self, step: int, path: str, model: Any) -> None:
        from healer.spectra import measure_in_run

        measure_in_run(self.store, self.store.run(self.run.id), step, self.spec,
                       say=lambda line: print(line, flush=True))  # fmt: skip

    def measured(self, step: int) -> bool:
        return bool(self.store.spectra(self.run.id, step=step))


def queue_jobs(run: Run, jobs: str) -> bool:
    """eval.jobs / spectra.jobs: `queue`, `inline`, or `auto` = queue when a worker runs the run (it was queued)
    on its own machine; a run in a Slurm job measures its checkpoints inline, on the node that holds them."""
    return jobs == "queue" or (jobs == "auto" and bool(run.queued) and run.executor != "slurm")
