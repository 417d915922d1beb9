"""Supervised fine-tuning with TRL's SFTTrainer, the loss on the completion only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from healer.presets import RunSpec
from healer.retention import resume_point
from healer.store import Run, Store
from healer.tasks import make_task


def run(run: Run, spec: RunSpec, store: Store) -> None:
    from trl import SFTTrainer

    from healer.train.loading import ensure_model, load_model, load_tokenizer

    quiet_progress_bars()
    model_path = ensure_model(spec)
    tokenizer = load_tokenizer(model_path, spec)
    model = load_model(model_path, spec)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(spec, run.out_dir or "."),
        train_dataset=sft_dataset(spec),
        processing_class=tokenizer,
        peft_config=lora_config(spec),
        callbacks=training_callbacks(store, run, spec, tokenizer),
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint(store, run))


def resume_checkpoint(store: Store, run: Run) -> str | None:
    """The checkpoint the trainer continues from (`resume_point`: an earlier attempt's newest with trainer state),
    or None to start over. What the lost attempt recorded after that step is rewound first: it is trained again."""
    checkpoint = resume_point(store, run.id)
    step = checkpoint.step if checkpoint else 0
    dropped = describe_rewound(store.rewind(run.id, after_step=step), step)
    if checkpoint is None:
        if dropped:
            print(f"healer: run {run.id} has no checkpoint to resume from; starting over ({dropped})", flush=True)
        return None
    state = describe_trainer_state(Path(checkpoint.path))
    print(f"healer: run {run.id}: resuming from step {step} ({Path(checkpoint.path).name}: {state})"
          + (f"; {dropped}" if dropped else ""), flush=True)  # fmt: skip
    return checkpoint.path


# What HF's Trainer restores on resume besides the weights and trainer_state.json, and the files it reads it from.
RESUMED_STATE = {
    "optimizer": ("optimizer.pt", "optimizer.bin"),
    "scheduler": ("scheduler.pt",),
    "RNG": ("rng_state.pth", "rng_state_0.pth"),
}


def describe_trainer_state(checkpoint: Path) -> str:
    """`optimizer, scheduler and RNG state`, naming what a checkpoint lacks (the trainer starts that part afresh)."""
    have = [name for name, files in RESUMED_STATE.items() if any((checkpoint / f).is_file() for f in files)]
    missing = [name for name in RESUMED_STATE if name not in have]
    text = f"{join_words(have)} state" if have else "weights only"
    return text + (f"; no {join_words(missing)} state, started afresh" if missing else "")


def describe_rewound(rewound: dict[str, int], step: int) -> str:
    """`dropped 12 rows of metrics after step 50 from the lost attempt`, or nothing when nothing was dropped."""
    counts = [f"{n} rows of {table}" for table, n in rewound.items() if n]
    return f"dropped {join_words(counts)} after step {step} from the lost attempt" if counts else ""


def join_words(words: list[str]) -> str:
    return " and ".join(filter(None, [", ".join(words[:-1]), words[-1]])) if words else ""


def training_callbacks(store: Store, run: Run, spec: RunSpec, tokenizer: Any) -> list[Any]:
    """Metrics and checkpoints to the store; evaluation of each checkpoint when the spec asks for it."""
    from healer.train.callbacks import EvalCallback, SpectraCallback, StoreCallback

    callbacks: list[Any] = [StoreCallback(store, run.id)]
    if spec.eval.every_checkpoint:
        callbacks.append(EvalCallback(store, run, spec, tokenizer))
    if spec.spectra.every_checkpoint:
        callbacks.append(SpectraCallback(store, run, spec, tokenizer))
    return callbacks


def sft_config(spec: RunSpec, output_dir: str, **overrides: Any) -> Any:
    """TRL's SFTConfig for a spec; `overrides` are SFTConfig arguments (the benchmark turns saving off)."""
    from trl import SFTConfig

    from healer.train.loading import trainer_device_args

    arguments: dict[str, Any] = dict(
        output_dir=output_dir,
        max_steps=spec.train.max_steps,
        per_device_train_batch_size=spec.train.batch_size,
        gradient_accumulation_steps=spec.train.grad_accum,
        learning_rate=spec.train.lr,
        lr_scheduler_type=spec.train.lr_scheduler,
        warmup_steps=spec.train.warmup_steps,
        weight_decay=spec.train.weight_decay,
        max_grad_norm=spec.train.max_grad_norm,
        max_length=spec.train.max_length,
        completion_only_loss=spec.train.completion_only_loss,
        logging_steps=spec.train.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=spec.train.save_steps,
        seed=spec.seed,
        report_to="none",
        disable_tqdm=True,  # the log gets one plain line per logging step instead of progress bars
        **trainer_device_args(spec),
    )
    return SFTConfig(**{**arguments, **overrides})


def sft_dataset(spec: RunSpec) -> Any:
    """Conversational prompt/completion pairs from the task, so each model's own chat template applies."""
    from datasets import Dataset

    task = make_task(spec.task)
    examples = task.train_examples(spec.task.train_split, spec.task.n_train, spec.task.seed)
    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": e.prompt}],
                "completion": [{"role": "assistant", "content": e.answer}],
            }
            for e in examples
        ]
    )


def lora_config(spec: RunSpec) -> Any:
    if not spec.lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=list(spec.lora.target_modules),
        task_type="CAUSAL_LM",
    )


def quiet_progress_bars() -> None:
    """Progress bars fill a log file with carriage returns; the trainer's log lines say the same."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
