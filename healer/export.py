"""Exports of healer's numbers for papers and notes. For now one: a lineage's ID/OOD accuracies as a Markdown table
(the TUI's `E`), each row naming the run, checkpoint, protocol and n it came from, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from healer import __version__
from healer.store.views import LineageMetric, Reader


def lineage_markdown(reader: Reader, run_id: int) -> str:
    """The evaluations along a run's lineage (its ancestors up to where it started, then its own), one row per
    checkpoint: accuracy in percent with its Wilson 95 % interval and correct/n, for every split evaluated."""
    rows = reader.lineage_metrics(run_id, metrics=False)
    run = reader.find_run(run_id)
    splits = sorted({r.name.split("/")[1] for r in rows})
    by_point: dict[tuple[int, int, int], dict[str, LineageMetric]] = {}
    for r in rows:
        by_point.setdefault((r.lineage_step, r.run, r.step), {})[r.name.split("/")[1]] = r
    header = ["lineage step", "checkpoint", "protocol", *(f"{s.upper()} % [95% CI] (correct/n)" for s in splits)]
    lines = [
        f"<!-- healer {__version__}: {reader.path}; lineage of run {run.id} ({run.name}); accuracies with Wilson 95 % "
        "intervals, each row the checkpoint RUN@STEP it was measured on -->",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i == 0 else "---" for i in range(len(header))) + "|",
    ]
    for (lineage_step, run_of, step), cells in sorted(by_point.items()):
        values = [_cell(cells[split]) if split in cells else "" for split in splits]
        protocol = next(iter(cells.values())).protocol
        lines.append(f"| {lineage_step} | {run_of}@{step} | {protocol} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _cell(m: LineageMetric) -> str:
    assert m.value is not None and m.ci_low is not None and m.ci_high is not None
    return f"{100 * m.value:.1f} [{100 * m.ci_low:.1f}, {100 * m.ci_high:.1f}] ({m.correct}/{m.n})"


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename it: a reader never sees half a file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)
