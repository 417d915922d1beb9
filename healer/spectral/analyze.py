"""Analyse one checkpoint against a reference, matrix by matrix: the rows `healer spectra` prints and stores."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from healer.errors import HealerError
from healer.spectral import MODULES
from healer.spectral.cache import KeyBook, ReferenceCache
from healer.spectral.linalg import MatrixReading, Method, block_size, compare, exact_top
from healer.spectral.weights import Matrix, Weights

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Settings:
    k: int = 768
    modules: tuple[str, ...] = MODULES
    method: Method = "auto"
    device: str = "auto"


def oversampled(k: int, rank: int) -> int:
    """Columns of the reference kept: k and a margin, the block the fast method starts from (linalg.block_size)."""
    return block_size(k, rank)


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
        book = cache.keys(weight_files(ref))
        try:
            yield from _readings(ckpt, ref, matrices, book, settings, cache, device, say)
        finally:
            book.save()


def weight_files(weights: Weights) -> list[Path]:
    """The files a matrix of `weights` is read from: its own, and its base model's for an adapter."""
    own = [weights.path / name for name in weights.files()]
    return own + (weight_files(weights.base) if weights.base is not None else [])


def _readings(ckpt: Weights, ref: Weights, matrices: list[Matrix], book: KeyBook, settings: Settings,
              cache: ReferenceCache, device: torch.device,
              say: Callable[[str], None] | None) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The rows of every matrix, in order. On a CPU, several matrices at a time, each read and computed by its own
    thread with torch single-threaded. On 2 cores (SmolLM2, k = 64): one matrix at a time on two BLAS threads took
    2.1 to 2.7 s, a reader thread beside it 4 to 5 s (the two fight over the cores), one single-threaded matrix at
    a time 2.2 s, two at a time 1.5 s, three 1.3 s, four 1.4 s (paired runs)."""

    def read_and_compare(matrix: Matrix) -> tuple[MatrixReading, float, list[dict[str, Any]]]:
        w_b, w_t = ref.get(matrix.param), ckpt.get(matrix.param)
        started = time.perf_counter()
        if w_b.shape != w_t.shape:
            raise HealerError(f"{matrix.param}: {tuple(w_t.shape)} in the checkpoint, {tuple(w_b.shape)} in "
                              "the reference")  # fmt: skip
        key = book.key(matrix.param, w_b)
        w_b, w_t = w_b.to(device), w_t.to(device)  # as stored; the methods choose their precision
        q = oversampled(settings.k, min(w_b.shape))
        top = cache.get(key, q)
        if top is None:
            top = exact_top(w_b, q + 1).head(q)
            cache.put(key, q, top)
        top = dataclasses.replace(top, u=top.u.to(device), s=top.s.to(device), v=top.v.to(device))
        reading = compare(top, w_b, w_t, settings.k, settings.method)
        seconds = time.perf_counter() - started
        return reading, seconds, rows(matrix.param, matrix.layer, matrix.module, reading, seconds)

    with sharing_cores(device, len(matrices)) as workers:
        readings = in_order(read_and_compare, matrices, workers)
        for index, (matrix, (reading, seconds, matrix_rows)) in enumerate(zip(matrices, readings, strict=True)):
            if say:
                mean = float(torch.rad2deg(reading.u.angles).mean())
                say(f"{index + 1}/{len(matrices)} {matrix.param}: k {reading.k}, mean angle {mean:.2f}° (u), "
                    f"{reading.method}, {seconds:.2f} s")  # fmt: skip
            yield from matrix_rows


@contextlib.contextmanager
def sharing_cores(device: torch.device, items: int) -> Iterator[int]:
    """How many matrices run at once, with torch's threads shared among them until the block ends. On a CPU, one
    more than there are cores: while one thread holds the GIL between torch calls the cores stay busy; at most 4
    matrices (and their differences) in memory at once. On a GPU, one."""
    threads = torch.get_num_threads()
    workers = 1 if device.type != "cpu" else max(1, min(threads + 1, items, 4))
    if workers > 1:
        torch.set_num_threads(max(1, threads // workers))
    try:
        yield workers
    finally:
        torch.set_num_threads(threads)


def in_order(work: Callable[[T], R], items: list[T], workers: int) -> Iterator[R]:
    """work(item) for each item, yielded in order, `workers` items at a time on as many threads (torch and
    safetensors release the GIL); at most 2 × workers results wait ahead of the consumer. An error is raised at
    its item, after the threads have stopped."""
    if workers <= 1:
        yield from map(work, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="healer-spectra") as pool:
        ahead = 2 * workers
        pending = deque(pool.submit(work, item) for item in items[:ahead])
        for item in items[ahead:]:
            done = pending.popleft()
            pending.append(pool.submit(work, item))
            yield done.result()
        while pending:
            yield pending.popleft().result()


def rows(param: str, layer: int, module: str, reading: MatrixReading, seconds: float) -> list[dict[str, Any]]:
    """The two rows of one matrix, in the field names of `healer spectra --json`; angles in degrees."""
    shared = {
        "sigma_rel_drift": reading.sigma_rel_drift, "energy_diag": reading.energy_diag,
        "energy_rotation": reading.energy_rotation, "energy_outside": reading.energy_outside,
        "gap_rel": reading.gap_rel, "method": reading.method, "error_deg": reading.error_deg, "seconds": seconds,
        "sigma_drift": reading.sigma_drift.tolist(),  # a list of floats at once; per element costs 0.3 s a model
    }  # fmt: skip
    out = []
    for side_name, side in (("u", reading.u), ("v", reading.v)):
        out.append({
            "param": param, "layer": layer, "module": module, "side": side_name, "k": side.k, "n": side.n,
            "forced_zero": side.forced_zero, **side.summary(), **shared,
            "angles_deg": torch.rad2deg(side.angles).tolist(),
        })  # fmt: skip
    return out


def cache_for(home: Path) -> ReferenceCache:
    return ReferenceCache(home / "cache" / "spectra")
