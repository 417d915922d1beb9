"""Loading a checkpoint for reading (full weights or a LoRA adapter) and evaluating it outside training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from healer.presets import RunSpec
from healer.refs import CheckpointRef
from healer.runner import holder_run
from healer.store import Eval, Run, Store


def load_for_inference(path: str, spec: RunSpec, tokenizer_fallback: str | None = None) -> tuple[Any, Any]:
    """Model and tokenizer of a checkpoint directory (an adapter directory loads its base model), on the device."""
    from healer.errors import HealerError
    from healer.train.loading import load_model, load_tokenizer, resolve_device

    directory = Path(path)
    tokenizer_dir = path if (directory / "tokenizer_config.json").exists() else (tokenizer_fallback or path)
    try:
        if (directory / "adapter_config.json").exists():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(path)
            base = json.loads((directory / "adapter_config.json").read_text()).get("base_model_name_or_path")
            tokenizer_dir = tokenizer_dir if tokenizer_dir != path or base is None else base
        else:
            model = load_model(path, spec)
        tokenizer = load_tokenizer(tokenizer_dir, spec)
    except (OSError, ValueError) as exc:
        raise HealerError(f"cannot load the model at {path}: {str(exc).splitlines()[0]}") from None
    return model.to(resolve_device(spec)), tokenizer


def evaluate_checkpoint(store: Store, target: CheckpointRef, spec: RunSpec) -> list[Eval]:
    """Evaluate one checkpoint with a spec's task and eval settings; a bare directory gets an `eval` run."""
    from healer.train.evaluate import evaluate
    from healer.train.sft import quiet_progress_bars

    quiet_progress_bars()
    run = target.run or holder_run(store, target.path, spec)
    fallback = target.run.model_path if target.run else None
    model, tokenizer = load_for_inference(target.path, spec, fallback)
    return evaluate(store, run_id=run.id, step=target.step, checkpoint_path=target.path, model=model,
                    tokenizer=tokenizer, spec=spec)  # fmt: skip


def run_eval_job(job: Run, store: Store) -> None:
    """An evaluation job: evaluate one checkpoint of its parent run with the job's settings (the parent's, unless
    `healer eval --queue` changed them), stored under the parent's id and step, then let retention prune what the new
    evaluation no longer protects."""
    from healer.evals import describe_eval
    from healer.presets import build_spec, starting_from
    from healer.refs import resolve_checkpoint
    from healer.retention import prune

    assert job.parent_run is not None and job.parent_step is not None
    parent = store.run(job.parent_run)
    target = resolve_checkpoint(store, f"{parent.id}@{job.parent_step}")
    spec = starting_from(build_spec(job.spec_dict, source=f"run {job.id}"), target.path)
    print(f"healer: evaluating {target.label} ({target.path})", flush=True)
    for e in evaluate_checkpoint(store, target, spec):
        print(describe_eval(e), flush=True)
    prune(store, parent.id)
