"""Analyse one checkpoint against a reference, matrix by matrix: the rows `healer spectra` prints and stores."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from healer.errors import HealerError
from healer.spectral import MODULES
from healer.spectral.cache import ReferenceCache, content_key
from healer.spectral.linalg import DTYPE, MatrixReading, Method, compare, exact_top
from healer.spectral.weights import Weights


@dataclass(frozen=True)
class Settings:
    k: int = 768
    modules: tuple[str, ...] = MODULES
    method: Method = "auto"
    device: str = "auto"


def oversampled(k: int, rank: int) -> int:
    """Columns of the reference kept: k and a margin that warm-starts the fast method and measures the gap."""
    return min(rank, k + max(16, math.ceil(k / 4)))  # a margin of 32 and more certified most fine-tuned matrices


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise HealerError("spectra.device = 'cuda', but torch sees no CUDA device")
    return torch.device(device)


def analyse(checkpoint: str, reference: str, settings: Settings, cache: ReferenceCache,
            say: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Two rows (sides u and v) per projection matrix of the checkpoint, read against the same matrix of the
    reference. One matrix of each is in memory at a time; the reference's decomposition comes from the cache."""
    device = resolve_device(settings.device)
    with Weights(checkpoint) as ckpt, Weights(reference) as ref:
        matrices = ckpt.matrices(settings.modules)
        if not matrices:
            raise HealerError(f"{ckpt.path}: no decoder projection matrices ({', '.join(settings.modules)}) found")
        missing = [m.param for m in matrices if not ref.has(m.param)]
        if missing:
            raise HealerError(f"the reference {ref.path} has no {missing[0]}: the two are not the same architecture")
        for index, matrix in enumerate(matrices):
            started = time.perf_counter()
            w_b, w_t = ref.get(matrix.param), ckpt.get(matrix.param)
            if w_b.shape != w_t.shape:
                raise HealerError(f"{matrix.param}: {tuple(w_t.shape)} in the checkpoint, {tuple(w_b.shape)} in "
                                  "the reference")  # fmt: skip
            key = content_key(w_b)
            w_b, w_t = w_b.to(device, DTYPE), w_t.to(device, DTYPE)
            q = oversampled(settings.k, min(w_b.shape))
            top = cache.get(key, q)
            if top is None:
                top = exact_top(w_b, q + 1).head(q)
                cache.put(key, q, top)
            top = dataclasses.replace(top, u=top.u.to(device), s=top.s.to(device), v=top.v.to(device))
            reading = compare(top, w_b, w_t, settings.k, settings.method)
            seconds = time.perf_counter() - started
            if say:
                mean = float(torch.rad2deg(reading.u.angles).mean())
                say(f"{index + 1}/{len(matrices)} {matrix.param}: k {reading.k}, mean angle {mean:.2f}° (u), "
                    f"{reading.method}, {seconds:.2f} s")  # fmt: skip
            yield from rows(matrix.param, matrix.layer, matrix.module, reading, seconds)


def rows(param: str, layer: int, module: str, reading: MatrixReading, seconds: float) -> list[dict[str, Any]]:
    """The two rows of one matrix, in the field names of `healer spectra --json`; angles in degrees."""
    shared = {
        "sigma_rel_drift": reading.sigma_rel_drift, "energy_diag": reading.energy_diag,
        "energy_rotation": reading.energy_rotation, "energy_outside": reading.energy_outside,
        "gap_rel": reading.gap_rel, "method": reading.method, "error_deg": reading.error_deg, "seconds": seconds,
        "sigma_drift": [float(x) for x in reading.sigma_drift],
    }  # fmt: skip
    out = []
    for side_name, side in (("u", reading.u), ("v", reading.v)):
        out.append({
            "param": param, "layer": layer, "module": module, "side": side_name, "k": side.k, "n": side.n,
            "forced_zero": side.forced_zero, **side.summary(), **shared,
            "angles_deg": [float(x) for x in torch.rad2deg(side.angles)],
        })  # fmt: skip
    return out


def cache_for(home: Path) -> ReferenceCache:
    return ReferenceCache(home / "cache" / "spectra")
