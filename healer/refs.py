"""Checkpoint references: `RUN@STEP`, `RUN@last`, `RUN@peak-ood`, `RUN@best-id`, `RUN@0` or a directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from healer.errors import HealerError
from healer.evals import PEAK_RULES, find_peaks
from healer.store import Run, Store

NAMED = tuple(dict.fromkeys(("last", *PEAK_RULES)))


@dataclass(frozen=True)
class CheckpointRef:
    """A model to read: a run's checkpoint (step 0 = the model the run started from) or a bare directory."""

    run: Run | None
    step: int
    path: str

    @property
    def label(self) -> str:
        return f"run {self.run.id}@{self.step}" if self.run else self.path


def resolve_checkpoint(store: Store, text: str) -> CheckpointRef:
    if "@" in text:
        run_text, selector = text.rsplit("@", 1)
        return _select(store, store.find_run(run_text), selector)
    directory = Path(text).expanduser()
    if directory.is_dir():
        return _directory(store, directory.resolve())
    if text.startswith((".", "/", "~")) or "/" in text:
        raise HealerError(f"no checkpoint directory at {directory}; give a directory or RUN@STEP")
    run = store.find_run(text)
    return _select(store, run, "last")


def _directory(store: Store, directory: Path) -> CheckpointRef:
    checkpoint = store.checkpoint_at(str(directory))
    if checkpoint is not None:
        return CheckpointRef(store.run(checkpoint.run_id), checkpoint.step, checkpoint.path)
    if not (directory / "config.json").exists() and not (directory / "adapter_config.json").exists():
        raise HealerError(f"{directory} is not a model directory (no config.json or adapter_config.json)")
    return CheckpointRef(None, 0, str(directory))


def _select(store: Store, run: Run, selector: str) -> CheckpointRef:
    checkpoints = {c.step: c for c in store.checkpoints(run.id)}
    if selector.isdigit():
        step = int(selector)
        if step == 0:
            return CheckpointRef(run, 0, run.model_path or "")
        if step not in checkpoints:
            _refuse_pruned(store, run, step)
            have = ", ".join(map(str, sorted(checkpoints))) or "none yet"
            raise HealerError(f"run {run.id} has no checkpoint at step {step}; its checkpoints: {have}")
        return _on_disk(CheckpointRef(run, step, checkpoints[step].path))
    if selector not in NAMED:
        raise HealerError(f"{run.id}@{selector}: use a step number or one of {', '.join(NAMED)}")
    if selector == "last":
        if not checkpoints:
            raise HealerError(f"run {run.id} has no checkpoints yet")
        step = max(checkpoints)
    else:
        pending = store.pending_eval_jobs(run.id)
        if pending:
            raise HealerError(
                f"run {run.id}@{selector}: {pending} evaluation jobs of run {run.id} are not done yet "
                f"(`healer queue ls`); the {selector} is picked over all its checkpoints once they are"
            )
        peak = find_peaks(store.evals(run.id)).get(selector)
        if peak is None:
            raise HealerError(f"run {run.id}@{selector}: no evaluations to pick from yet; run `healer eval {run.id}`")
        step = peak.step
    if step not in checkpoints:
        _refuse_pruned(store, run, step)
        raise HealerError(f"run {run.id}@{selector} is step {step}, whose checkpoint is not registered any more")
    return _on_disk(CheckpointRef(run, step, checkpoints[step].path))


def _refuse_pruned(store: Store, run: Run, step: int) -> None:
    for c in store.checkpoints(run.id, pruned=True):
        if c.step == step and c.pruned_at:
            raise HealerError(f"run {run.id}@{step} was pruned at {c.pruned_at} (train.keep); "
                              f"`healer runs keep {run.id}@STEP` protects checkpoints you will need")  # fmt: skip


TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")


def check_startable(ref: CheckpointRef) -> None:
    """A run can start from this checkpoint: its weights and a tokenizer are there (an adapter's base may hold it)."""
    directory = Path(ref.path)
    if not directory.is_dir():  # step 0 of a run that started from a hub id
        return
    adapter = directory / "adapter_config.json"
    if not (directory / "config.json").exists() and not adapter.exists():
        raise HealerError(f"{ref.label}: {directory} holds no model (no config.json or adapter_config.json)")
    if any((directory / name).exists() for name in TOKENIZER_FILES):
        return
    if adapter.exists():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path") or ""
        if base and (not Path(base).is_dir() or any((Path(base) / n).exists() for n in TOKENIZER_FILES)):
            return
    raise HealerError(
        f"{ref.label}: the checkpoint at {directory} has no tokenizer (no tokenizer_config.json); "
        "copy the tokenizer files of the model it was trained from into it"
    )


def _on_disk(ref: CheckpointRef) -> CheckpointRef:
    if not Path(ref.path).is_dir():
        raise HealerError(f"{ref.label}: the checkpoint directory {ref.path} is gone (pruned or moved)")
    return ref
