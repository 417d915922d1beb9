"""vLLM, where asked for (rl.use_vllm, eval.backend = "vllm") and where it can run: never imported otherwise."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from typing import Any

from healer.errors import HealerError


def require_vllm(key: str) -> None:
    """A clear one-line error when `key` asks for vLLM on a machine that cannot run it."""
    if importlib.util.find_spec("vllm") is None:
        raise HealerError(f"{key} asks for vLLM, which is not installed: `pip install vllm` on a GPU machine, or "
                          f"set {key} back to its default")  # fmt: skip
    import torch

    if not torch.cuda.is_available():
        raise HealerError(f"{key} asks for vLLM, which needs a CUDA GPU, and this process sees none "
                          f"(CUDA_VISIBLE_DEVICES={_visible()}); set {key} back to its default on CPU")  # fmt: skip


def _visible() -> str:
    import os

    return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


@lru_cache(maxsize=1)
def engine(path: str) -> Any:
    """One vLLM engine per checkpoint (the last one is kept: evaluation jobs run a checkpoint's splits in turn)."""
    from vllm import LLM

    return LLM(model=path, gpu_memory_utilization=0.35, enforce_eager=True)


def generate(path: str | None, texts: list[str], max_new_tokens: int, temperature: float, top_p: float) -> list[str]:
    """Completions of already rendered prompts with vLLM, greedy unless temperature > 0 (as transformers' path)."""
    if not path:
        raise HealerError("eval.backend = vllm evaluates a checkpoint directory, and this model has none")
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p if temperature else 1.0)
    outputs = engine(path).generate(texts, params, use_tqdm=False)
    return [o.outputs[0].text.strip() for o in outputs]
