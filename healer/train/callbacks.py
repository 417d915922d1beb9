"""TrainerCallbacks: the only way metrics and checkpoints leave a trainer for the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from healer.presets import RunSpec
from healer.store import Store


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


class EvalCallback(TrainerCallback):
    """Evaluates the starting model (step 0) and every checkpoint as it is saved, in this process."""

    def __init__(self, store: Store, run_id: int, spec: RunSpec, tokenizer: Any) -> None:
        self.store = store
        self.run_id = run_id
        self.spec = spec
        self.tokenizer = tokenizer

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
        from healer.train.evaluate import evaluate

        for e in evaluate(self.store, run_id=self.run_id, step=step, checkpoint_path=path, model=model,
                          tokenizer=self.tokenizer, spec=self.spec):  # fmt: skip
            print(f"healer: eval step {step} {e.split}: {e.correct}/{e.n} = {e.accuracy:.3f} "
                  f"[{e.ci_low:.3f}, {e.ci_high:.3f}] loss {e.loss if e.loss is None else round(e.loss, 4)} "
                  f"({e.seconds:.1f} s)", flush=True)  # fmt: skip
