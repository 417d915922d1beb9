"""The paper's spectral surgery: a checkpoint whose matrices take the reference's singular vectors (and, if asked,
values) at chosen ranks, the compared checkpoint's everywhere else, written as a new model directory.

With W_t = U_t Σ_t V_tᵀ and W_b = U_b Σ_b V_bᵀ (full SVDs, float64), ranks R: U' = U_t with columns R from U_b,
V' likewise, Σ' = Σ_t (or Σ_b on R), W' = U' Σ' V'ᵀ. Columns taken from two different SVDs are not an orthonormal
basis, so U' Σ' V'ᵀ is not an SVD of W'. When R covers the whole rank and values are restored, W' = W_b: a full reset
of that matrix.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from healer.errors import HealerError
from healer.spectral import MODULES
from healer.spectral.weights import PARAM, Weights

TRAINER_FILES = ("optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin")


@dataclass(frozen=True)
class Plan:
    restore: Literal["vectors", "vectors+values"]
    top: int | None = None
    top_frac: float | None = None
    bottom: int | None = None
    layers: frozenset[int] | None = None  # None: every layer
    modules: tuple[str, ...] = MODULES

    def ranks(self, rank: int) -> list[int]:
        """The rank indices (0 = largest singular value) this plan swaps in a matrix of this rank."""
        chosen: set[int] = set()
        top = self.top if self.top is not None else (math.ceil(self.top_frac * rank) if self.top_frac else 0)
        chosen.update(range(min(top, rank)))
        chosen.update(range(max(0, rank - (self.bottom or 0)), rank))
        return sorted(chosen)

    def applies(self, layer: int, module: str) -> bool:
        return module in self.modules and (self.layers is None or layer in self.layers)


def parse_layers(text: str | None) -> frozenset[int] | None:
    """`0-9`, `0,3,5-7`; None (not given) for every layer, "" for none, which `write` refuses."""
    if text is None:
        return None
    if not text.strip():
        return frozenset()
    layers: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise HealerError(f"--layers {text!r}: give layer numbers and ranges such as 0-9 or 0,3,5-7")
        low, high = int(first), int(last or first)
        if high < low:
            raise HealerError(f"--layers {text!r}: the range {part} runs backwards")
        layers.update(range(low, high + 1))
    return frozenset(layers)


def check_layers(plan: Plan, count: int) -> None:
    """--layers must choose some of the model's layers and none past its last."""
    if plan.layers is None or not count or (plan.layers and max(plan.layers) < count):
        return  # no count: no projection matrices at all, which write reports as nothing matching
    chosen = f"reaches layer {max(plan.layers)}" if plan.layers else "'' selects no layer"
    raise HealerError(f"--layers {chosen}: the model has {count} layers (0-{count - 1})")


def edit_matrix(w_t: torch.Tensor, w_b: torch.Tensor, ranks: list[int], values: bool) -> torch.Tensor:
    """W' for one matrix (float64, on the GPU when there is one), back on the CPU."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    u_t, s_t, vh_t = torch.linalg.svd(w_t.to(device, torch.float64), full_matrices=False)
    u_b, s_b, vh_b = torch.linalg.svd(w_b.to(device, torch.float64), full_matrices=False)
    index = torch.tensor(ranks, dtype=torch.long, device=device)
    u, s, vh = u_t.clone(), s_t.clone(), vh_t.clone()
    u[:, index], vh[index, :] = u_b[:, index], vh_b[index, :]
    if values:
        s[index] = s_b[index]
    return ((u * s) @ vh).cpu()


def write(checkpoint: str, reference: str, plan: Plan, out_dir: Path,
          say: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Write the edited checkpoint to out_dir (which must not exist or be empty); what was done, for the record."""
    if out_dir.exists() and not out_dir.is_dir():
        raise HealerError(f"-o {out_dir} is a file; give a new directory (nothing was written)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise HealerError(f"-o {out_dir} is not empty; give a new directory (nothing was written)")
    with Weights(checkpoint) as ckpt, Weights(reference) as ref:
        if ckpt.base is not None:
            raise HealerError(f"{ckpt.path} is a LoRA adapter; merge it into its base model before editing")
        matrices = ckpt.matrices()
        check_layers(plan, 1 + max((m.layer for m in matrices), default=-1))
        targets = [m for m in matrices if plan.applies(m.layer, m.module)]
        if not targets:
            raise HealerError("the --layers and --modules chosen match no matrix of the checkpoint")
        missing = [m.param for m in targets if not ref.has(m.param)]
        if missing:
            raise HealerError(f"the reference {ref.path} has no {missing[0]}: the two are not the same architecture")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HealerError(f"-o {out_dir}: {exc.strerror or exc}; give a new directory") from None
        try:
            done = _write(ckpt, ref, plan, {m.param for m in targets}, out_dir)
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)  # a half-written checkpoint is worse than none
            raise
    partial = [p for p, d in done.items() if 0 < d["swapped"] < d["rank"]]
    full = [p for p, d in done.items() if d["swapped"] == d["rank"]]
    restored = "vectors and values" if plan.restore == "vectors+values" else "vectors"
    say(f"healer: edited {len(done)} matrices of {ckpt.path} with the singular {restored} of {ref.path} -> {out_dir}")
    if full:
        what = "a full reset of the matrix to the reference" if plan.restore == "vectors+values" else (
            "the reference's vectors with the checkpoint's singular values")  # fmt: skip
        say(
            f"healer: in {len(full)} matrices the swap covers the whole rank: that is {what}, not a partial edit "
            "(embeddings, norms and unselected matrices stay the checkpoint's)"
        )
    if partial:
        say(
            f"healer: in {len(partial)} matrices the swapped columns and the kept ones come from two SVDs, so "
            "together they are not an orthonormal basis: the edited matrix is U' Σ' V'ᵀ as written, not its SVD"
        )
    return {"matrices": done, "full_rank_swaps": full, "partial_swaps": len(partial)}


def _write(ckpt: Weights, ref: Weights, plan: Plan, targets: set[str], out_dir: Path) -> dict[str, dict[str, int]]:
    from safetensors import safe_open
    from safetensors.torch import save_file

    for item in ckpt.path.iterdir():
        trainer_state = item.name in TRAINER_FILES or item.name.startswith("rng_state")
        if item.is_file() and item.suffix != ".safetensors" and not trainer_state:
            shutil.copy2(item, out_dir / item.name)
    done: dict[str, dict[str, int]] = {}
    for name in ckpt.files():
        with safe_open(str(ckpt.path / name), framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
            metadata = f.metadata()
        for key, w_t in tensors.items():
            if key not in targets:
                continue
            w_b = ref.get(key)
            if w_b.shape != w_t.shape:
                raise HealerError(f"{key}: {tuple(w_t.shape)} in the checkpoint, {tuple(w_b.shape)} in the reference")
            rank = min(w_t.shape)
            ranks = plan.ranks(rank)
            if ranks:
                tensors[key] = edit_matrix(w_t, w_b, ranks, plan.restore == "vectors+values").to(w_t.dtype)
            done[key] = {"layer": int(PARAM.search(key).group(1)), "rank": rank, "swapped": len(ranks)}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / name),
                  metadata=metadata or {"format": "pt"})  # fmt: skip
    return done
