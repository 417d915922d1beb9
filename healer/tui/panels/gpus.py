"""The GPU panel: one line per GPU with its load bar, memory and the runs holding it; hidden on a CPU box."""

from __future__ import annotations

import re

from rich.text import Text
from textual.app import RenderResult
from textual.widgets import Static

from healer.gpus import GpuStat

BAR_CELLS = 10
EIGHTHS = " ▏▎▍▌▋▊▉█"
VENDOR_WORDS = {"NVIDIA", "GeForce", "Tesla", "Quadro"}
NAME_WIDTH = 10  # the longest short name kept whole
LOAD_STYLES = ((90, "bold red"), (60, "yellow"), (20, "green"), (0, "grey58"))  # percent at least, style


def short_name(name: str) -> str:
    """`NVIDIA H100 80GB HBM3` -> `H100`, `NVIDIA A100-SXM4-80GB` -> `A100`: the model, without vendor, memory size and
    form factor, which the memory column and the machine already say."""
    words = [w.split("-")[0] for w in name.split() if w not in VENDOR_WORDS]
    kept = [w for w in words if w and not re.fullmatch(r"\d+GB|HBM\w*|PCIe|SXM\d*", w, re.IGNORECASE)]
    return " ".join(kept) or name


def load_bar(percent: int | None, cells: int = BAR_CELLS) -> str:
    """`▕████▍    ▏`: the load in eighths of a cell; blank when the driver does not say."""
    eighths = round(max(0, min(100, percent or 0)) / 100 * cells * 8)
    full, part = divmod(eighths, 8)
    inner = "█" * full + (EIGHTHS[part] if part else "")
    return f"▕{inner.ljust(cells)}▏"


def load_style(percent: int | None) -> str:
    """Colour of a load: grey when idle or unknown, through green and yellow to red when saturated."""
    return next((style for floor, style in LOAD_STYLES if (percent or 0) >= floor), "grey58")


def gib(used: int, total: int) -> str:
    """MiB pair as `71.2/139.8 GiB`."""
    return f"{used / 1024:.1f}/{total / 1024:.1f} GiB"


def holder_text(runs: list[tuple[int, str]]) -> str:
    """`idle`, `run 12 sft-gp`, or `runs 12, 14` (names left out: several rarely fit)."""
    if not runs:
        return "idle"
    if len(runs) == 1:
        return f"run {runs[0][0]} {runs[0][1]}"
    return "runs " + ", ".join(str(run_id) for run_id, _ in runs)


def gpu_segments(stats: list[GpuStat], holders: dict[str, list[tuple[int, str]]],
                 width: int) -> list[list[tuple[str, str]]]:  # fmt: skip
    """Each GPU's line as (text, style) pieces, columns aligned across GPUs, the holders cut to fit `width` (pure)."""
    index_width = max((len(s.index) for s in stats), default=1)
    name_width = min(NAME_WIDTH, max((len(short_name(s.name)) for s in stats), default=0))
    mem_width = max((len(gib(s.memory_used, s.memory_total)) for s in stats), default=0)
    lines = []
    for stat in stats:
        name = short_name(stat.name)
        name = name if len(name) <= name_width else name[: name_width - 1] + "…"
        load = "n/a" if stat.utilization is None else f"{stat.utilization}%"
        style = load_style(stat.utilization)
        head = f"GPU {stat.index.ljust(index_width)} {name.ljust(name_width)} "
        memory = f"  mem {gib(stat.memory_used, stat.memory_total).rjust(mem_width)}  "
        runs = holders.get(stat.index, [])
        room = width - len(head) - BAR_CELLS - 2 - 5 - len(memory)
        who = holder_text(runs)
        who = who if len(who) <= room else who[: max(0, room - 1)] + "…" * (room > 0)
        lines.append([(head, "bold"), (load_bar(stat.utilization), style), (load.rjust(5), style), (memory, ""),
                      (who, "dim" if not runs else "cyan")])  # fmt: skip
    return lines


def gpu_lines(stats: list[GpuStat], holders: dict[str, list[tuple[int, str]]], width: int) -> list[str]:
    """The panel as plain text, one line per GPU, none longer than `width` (pure)."""
    return ["".join(text for text, _ in line)[:width] for line in gpu_segments(stats, holders, width)]


class GpuPanel(Static):
    """Load, memory and holders of each GPU nvidia-smi reports; `display` is False while there are none."""

    DEFAULT_CSS = "GpuPanel { height: auto; }"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.stats: list[GpuStat] = []
        self.holders: dict[str, list[tuple[int, str]]] = {}
        self.display = False

    def show(self, stats: list[GpuStat], holders: dict[str, list[tuple[int, str]]]) -> None:
        self.stats, self.holders = stats, holders
        self.display = bool(stats)
        self.refresh(layout=True)

    def render(self) -> RenderResult:
        width = self.size.width or 80
        lines = [Text.assemble(*line, no_wrap=True, overflow="ellipsis")
                 for line in gpu_segments(self.stats, self.holders, width)]  # fmt: skip
        for line in lines:
            line.truncate(width)
        return Text("\n").join(lines)
