"""Device, precision and the from_pretrained path every model takes, the tiny one included."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healer import models
from healer.errors import HealerError
from healer.presets import RunSpec


def resolve_device(spec: RunSpec) -> str:
    import torch

    if spec.device == "cuda" and not torch.cuda.is_available():
        raise HealerError("device = 'cuda' but no CUDA device is visible; set device = 'auto' or 'cpu'")
    if spec.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec.device


def resolve_precision(spec: RunSpec, device: str) -> str:
    """auto = bf16 on a CUDA device that supports it, fp32 otherwise; half precision needs CUDA."""
    import torch

    if spec.precision == "auto":
        return "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if spec.precision in ("bf16", "fp16") and device != "cuda":
        raise HealerError(f"precision = {spec.precision!r} needs a CUDA device; use 'auto' or 'fp32' on CPU")
    return spec.precision


def trainer_device_args(spec: RunSpec) -> dict[str, Any]:
    """The TrainingArguments that follow from device, precision and gradient checkpointing."""
    device = resolve_device(spec)
    precision = resolve_precision(spec, device)
    checkpointing = {"on": True, "off": False, "auto": device == "cuda"}[spec.train.gradient_checkpointing]
    distributed = {"ddp_find_unused_parameters": False} if int(os.environ.get("WORLD_SIZE", "1")) > 1 else {}
    return {
        **distributed,
        "use_cpu": device == "cpu",
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        checkpointing_argument(): checkpointing,
    }


def checkpointing_argument() -> str:
    """transformers 5.24 renamed `gradient_checkpointing` to `activation_checkpointing`; use what this one has."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def ensure_model(spec: RunSpec) -> str:
    """The model path, after building healer's tiny model or converting a named model (smollm2-135m) there if the
    preset asks for it and it is missing."""
    path = spec.model.path
    named = models.named(spec.model.build)
    if named is None and not spec.model.build:
        return path
    with _building(Path(path)):  # the ranks of a multi-process run, or two runs at once: one builds, the rest wait
        if named is not None:
            models.materialise(named, Path(path))
        elif not Path(path).exists():
            from healer.train.tiny import save_tiny

            print(f"healer: building the {spec.model.build} model at {path}", flush=True)
            save_tiny(Path(path), spec.model.build)
    return path


@contextlib.contextmanager
def _building(path: Path) -> Iterator[None]:
    """An exclusive lock (flock) on the folder that holds the model's folder, while it is built: no lock file is
    left beside the models."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def save_from_gguf(gguf: Path, out_dir: Path) -> None:
    """De-quantise a GGUF file to a float32 checkpoint (safetensors) with its tokenizer, chat template and generation
    config, all through save_pretrained, so it loads like any other model directory."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # transformers may keep a GGUF file's weights packed, which save_pretrained refuses to write: ask for dense ones.
    # Versions without GgufConfig always de-quantise.
    gguf_config = getattr(transformers, "GgufConfig", None)
    dense = {"quantization_config": gguf_config(dequantize=True)} if gguf_config else {}
    folder, name = str(gguf.parent), gguf.name
    with contextlib.redirect_stderr(io.StringIO()):  # the de-quantising progress bar has no switch; logs want none
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, **dense)
        tokenizer.model_max_length = model.config.max_position_embeddings  # the GGUF tokenizer leaves it unbounded
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        model.generation_config.save_pretrained(out_dir)


def load_tokenizer(path: str, spec: RunSpec) -> Any:
    from transformers import AutoTokenizer

    models.materialise_if_named(path)
    kwargs = _hub_kwargs(spec)
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, spec: RunSpec) -> Any:
    """Weights in fp32; bf16/fp16 training runs as mixed precision over them."""
    import torch
    from transformers import AutoModelForCausalLM

    models.materialise_if_named(path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **_hub_kwargs(spec))


def load_start_model(path: str, spec: RunSpec) -> Any:
    """The model a run starts from; a LoRA adapter checkpoint is merged into its base model first."""
    if not (Path(path) / "adapter_config.json").exists():
        return load_model(path, spec)
    import torch
    from peft import AutoPeftModelForCausalLM

    print(f"healer: merging the LoRA adapter at {path} into its base model", flush=True)
    model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=torch.float32, **_hub_kwargs(spec))
    return model.merge_and_unload()


def _hub_kwargs(spec: RunSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": spec.model.trust_remote_code}
    if spec.model.revision:
        kwargs["revision"] = spec.model.revision
    return kwargs
