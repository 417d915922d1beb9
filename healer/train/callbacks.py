"""TrainerCallbacks: the only way metrics and checkpoints leave a trainer for the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from healer.presets import RunSpec
from healer.retention import prune
from healer.store import Eval, Run, Store


class StoreCallback(TrainerCallback):
    """Streams every log into the metrics table and registers every checkpoint as it is saved."""

    def __init__(self, store: Store, run_id: int) -> None:
        self.store = store
        self.run_id = run_id

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
            self.store.log_metrics(self.run_id, state.global_step, numbers)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.store.add_checkpoint(self.run_id, state.global_step, str(path.resolve()))
            prune(self.store, self.run_id)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:  # fmt: skip
        if state.is_world_process_zero:
            prune(self.store, self.run_id)  # the last inline evaluation may have moved the peak


class EvalCallback(TrainerCallback):
    """Evaluates the starting model (step 0) and every checkpoint as it is saved: in this process (`inline`), or
    by queueing an evaluation job per checkpoint for a worker (`queue`), so that training never waits for it."""

    def __init__(self, store: Store, run: Run, spec: RunSpec, tokenizer: Any) -> None:
        self.store = store
        self.run = run
        self.spec = spec
        self.tokenizer = tokenizer
        self.queue_jobs = queue_evaluations(run, spec)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, **kwargs: Any) -> None:  # fmt: skip
        if state.global_step == 0 and state.is_world_process_zero:
            self._evaluate(0, self.spec.model.path, model)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None,
                **kwargs: Any) -> None:  # fmt: skip
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self._evaluate(state.global_step, str(path.resolve()), model)

    def _evaluate(self, step: int, path: str, model: Any) -> None:
        if self.queue_jobs:
            from healer.queue import enqueue_eval

            job = enqueue_eval(self.store, self.store.run(self.run.id), step, path)
            if job is not None:
                print(f"healer: step {step}: queued its evaluation as job {job.id}", flush=True)
            return
        from healer.train.evaluate import evaluate

        for e in evaluate(self.store, run_id=self.run.id, step=step, checkpoint_path=path, model=model,
                          tokenizer=self.tokenizer, spec=self.spec):  # fmt: skip
            print(describe_eval(e), flush=True)


def queue_evaluations(run: Run, spec: RunSpec) -> bool:
    """eval.jobs: `queue`, `inline`, or `auto` = queue when a worker runs the run (it was queued)."""
    return spec.eval.jobs == "queue" or (spec.eval.jobs == "auto" and bool(run.queued))


def describe_eval(e: Eval) -> str:
    return (f"healer: eval step {e.step} {e.split}: {e.correct}/{e.n} = {e.accuracy:.3f} [{e.ci_low:.3f}, "
            f"{e.ci_high:.3f}] loss {e.loss if e.loss is None else round(e.loss, 4)} ({e.seconds:.1f} s)")  # fmt: skip
