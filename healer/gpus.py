"""GPUs as nvidia-smi reports them (load and memory), and which running run holds each: the TUI's GPU panel and the
worker's free-GPU check read the same query."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

QUERY = ["nvidia-smi", "--query-gpu=index,name,utilization.gpu,memory.used,memory.total",
         "--format=csv,noheader,nounits"]  # fmt: skip
TIMEOUT_S = 10  # a hung driver must not hang a poll


@dataclass(frozen=True)
class GpuStat:
    """One GPU's row of QUERY: index as nvidia-smi numbers it, utilisation in percent (None where the driver does
    not say, such as `[N/A]`), memory in MiB."""

    index: str
    name: str
    utilization: int | None
    memory_used: int
    memory_total: int


class HoldingRow(Protocol):
    """What `holders` needs of a run row (`QueueRow` has it)."""

    id: int
    name: str
    status: str
    assigned_gpus: str | None


def parse(text: str) -> list[GpuStat]:
    """QUERY's CSV as GpuStats; a line that is not one (an error message, a row with memory `[N/A]`) is skipped."""
    stats = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            continue
        index, *name, utilization, used, total = parts  # a name with a comma stays whole
        if not (index.isdigit() and used.isdigit() and total.isdigit()):
            continue
        load = int(utilization) if utilization.isdigit() else None
        stats.append(GpuStat(index, ", ".join(name), load, int(used), int(total)))
    return stats


def query(run: Callable[..., Any] = subprocess.run) -> list[GpuStat]:
    """Every GPU of the machine; [] when nvidia-smi is missing, fails or times out."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        result = run(QUERY, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse(result.stdout) if result.returncode == 0 else []


def read(run: Callable[..., Any] = subprocess.run) -> list[GpuStat]:
    """The GPUs this process may use: those CUDA_VISIBLE_DEVICES lists (none for `-1` or empty), as
    `worker.detect_gpus` counts them; all of them when it is unset."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        allowed = {g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"}
        if not allowed:
            return []  # nvidia-smi is not even asked
    stats = query(run)
    return stats if visible is None else [s for s in stats if s.index in allowed]


def holders(rows: Iterable[HoldingRow]) -> dict[str, list[tuple[int, str]]]:
    """GPU index -> (run id, name) of each running run that was given it, by run id."""
    held: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        if row.status != "running" or not row.assigned_gpus:
            continue
        for gpu in row.assigned_gpus.split(","):
            if gpu.strip():
                held.setdefault(gpu.strip(), []).append((row.id, row.name))
    return {gpu: sorted(runs) for gpu, runs in held.items()}
