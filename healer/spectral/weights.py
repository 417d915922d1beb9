"""A checkpoint's projection matrices, read one at a time from safetensors: full weights, or a LoRA adapter over
its base model (W + scale · B A), so memory stays near one matrix, not one model."""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from healer.errors import HealerError
from healer.models import materialise_if_named
from healer.spectral import MODULES

PARAM = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj\.weight$")
INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class Matrix:
    param: str  # the state-dict key, e.g. model.layers.3.self_attn.q_proj.weight
    layer: int
    module: str  # q, k, v, o, gate, up or down


def model_directory(path: str) -> Path:
    """A model's directory: the path itself, or a hub id found in the local cache (nothing is downloaded)."""
    directory = Path(path).expanduser()
    materialise_if_named(str(directory))  # a named model's directory (smollm2-135m) is converted on first read
    if directory.is_dir():
        return directory.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, local_files_only=True))
    except Exception:
        raise HealerError(f"{path} is neither a directory nor a model in the local hub cache; download it first "
                          "(healer never downloads during an analysis)") from None  # fmt: skip


class Weights:
    """The weight files of one checkpoint directory; use as a context manager (it keeps the files open)."""

    def __init__(self, path: str | Path) -> None:
        self.path = model_directory(str(path))
        self._stack = ExitStack()
        self._files: dict[str, Any] = {}
        self.base: Weights | None = None
        self.scale = 1.0
        adapter = self.path / "adapter_config.json"
        if adapter.exists():
            config = json.loads(adapter.read_text())
            self.base = Weights(config.get("base_model_name_or_path") or "")
            r = config.get("r") or 1
            self.scale = (config.get("lora_alpha") or r) / (r**0.5 if config.get("use_rslora") else r)
            self._map = self._weight_map("adapter_model.safetensors")
        else:
            self._map = self._weight_map("model.safetensors")

    def _weight_map(self, single: str) -> dict[str, str]:
        index = self.path / INDEX
        if index.exists():
            return json.loads(index.read_text())["weight_map"]
        if not (self.path / single).exists():
            raise HealerError(f"{self.path} has no {single}; spectra read safetensors (save_pretrained writes them)")
        from safetensors import safe_open

        with safe_open(str(self.path / single), framework="pt") as f:
            return {key: single for key in f.keys()}  # noqa: SIM118 - safe_open has no __iter__

    def __enter__(self) -> Weights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()
        if self.base is not None:
            self.base.close()

    def _tensor(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        name = self._map[key]
        if name not in self._files:
            self._files[name] = self._stack.enter_context(safe_open(str(self.path / name), framework="pt"))
        return self._files[name].get_tensor(key)

    def matrices(self, modules: tuple[str, ...] = MODULES) -> list[Matrix]:
        """The projection matrices of every decoder layer, by layer, then in MODULES order."""
        keys = self.base._map if self.base is not None else self._map
        found = []
        for key in keys:
            match = PARAM.search(key)
            if match and match.group(2) in modules:
                found.append(Matrix(key, int(match.group(1)), match.group(2)))
        return sorted(found, key=lambda m: (m.layer, MODULES.index(m.module)))

    def has(self, param: str) -> bool:
        return param in (self.base._map if self.base is not None else self._map)

    def get(self, param: str) -> torch.Tensor:
        """One matrix as stored (its own dtype); for an adapter, the base matrix plus scale · B A."""
        if self.base is None:
            return self._tensor(param)
        weight = self.base.get(param)
        stem = param.removesuffix(".weight")
        a = next((k for k in self._map if k.endswith(f"{stem}.lora_A.weight")), None)
        b = next((k for k in self._map if k.endswith(f"{stem}.lora_B.weight")), None)
        if a is None or b is None:
            return weight
        delta = self._tensor(b).to(torch.float64) @ self._tensor(a).to(torch.float64)
        return (weight.to(torch.float64) + self.scale * delta).to(weight.dtype)

    def files(self) -> list[str]:
        """The safetensors files of this directory (one, or the shards its index names)."""
        return sorted(set(self._map.values()))
