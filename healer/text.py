"""Plain-text pieces the CLI's tables and the TUI's panes both print: durations, progress, where a run starts."""

from __future__ import annotations

from typing import Any

from healer.store.views import QueueRow, start_label

BAR_WIDTH = 6


def duration(seconds: float | None) -> str:
    """`4:05`, `1:02:03`; '' for none."""
    if seconds is None:
        return ""
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"


def progress(step: int | None, total: int | None, bar: bool = False) -> str:
    """`120/300` for a run with a step budget (`120/300 ▰▰▱▱▱▱` with `bar`), the step alone without one (an edit, an
    evaluation holder), '' before the first step."""
    if not total:
        return "" if step is None else str(step)
    text = f"{step or 0}/{total}"
    if not bar:
        return text
    filled = round(max(0.0, min(1.0, (step or 0) / total)) * BAR_WIDTH)
    return f"{text} " + "▰" * filled + "▱" * (BAR_WIDTH - filled)


def starts_from(row: QueueRow) -> str:
    """Where a queued run starts and what it runs after: `1@peak-ood after 3`."""
    start = start_label(row.parent_run, row.parent_step, row.start_ref)
    return " ".join(p for p in (start, f"after {row.after_run}" if row.after_run else "") if p)


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A nested spec as (dotted key, value) pairs, in order."""
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            items.extend(flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items
