"""Plain-data views of runs (the JSON contract of the CLI) and small summaries of metric curves."""

from __future__ import annotations

import json
from typing import Any

from healer.evals import eval_row, peaks_report
from healer.queue import wait_for
from healer.store import Metric, Run, Store

SPARKS = "▁▂▃▄▅▆▇█"


def run_row(store: Store, run: Run) -> dict[str, Any]:
    """One run as `runs ls --json` prints it: id, name, kind, status, parent_run, parent_step, created_at, ..."""
    return {
        "id": run.id,
        "name": run.name,
        "kind": run.kind,
        "method": run.method,
        "status": run.status,
        "parent_run": run.parent_run,
        "parent_step": run.parent_step,
        "start_ref": run.start_ref,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "exit_code": run.exit_code,
        "step": store.last_step(run.id),
        "total_steps": run.total_steps,
    }


def spectra_summary(store: Store, run: Run) -> list[dict[str, Any]]:
    """Per checkpoint with spectra: the mean angle over matrices (side u), the largest, the mean drift."""
    from healer.spectra import by_step

    rows = store.spectra(run.id)
    return [{"step": step, "ref": rows[0].ref, **values} for step, values in by_step(rows).items()]


def run_detail(store: Store, run: Run) -> dict[str, Any]:
    """`runs show --json`: the row plus model_path, spec, checkpoints, evals and peaks, lineage, the last metrics."""
    evals = store.evals(run.id)
    return {
        **run_row(store, run),
        "model_path": run.model_path,
        "spec": run.spec_dict,
        "checkpoints": [
            {
                "step": c.step,
                "path": c.path,
                "protected": c.protected,
                "created_at": c.created_at,
                "pruned_at": c.pruned_at,
            }
            for c in store.checkpoints(run.id, pruned=True)
        ],
        "evals": [eval_row(e) for e in evals],
        "peaks": peaks_report(evals),
        "spectra": spectra_summary(store, run),
        "params": json.loads(run.params) if run.params else None,
        "last_metrics": {name: {"step": m.step, "value": m.value} for name, m in store.last_metrics(run.id).items()},
        "lineage": lineage(store, run),
        "children": [child_row(store, c) for c in store.children(run.id)],
        "reason": run.reason,
        "out_dir": run.out_dir,
        "log_path": run.log_path,
        "preset_path": run.preset_path,
        "host": run.host,
        "pid": run.pid,
        "healer_version": run.healer_version,
        "git_commit": run.git_commit,
    }


def child_row(store: Store, child: Run) -> dict[str, Any]:
    """A run started (or queued to start) from this run's checkpoints; parent_step is None until a worker picks it."""
    waiting = wait_for(store, child) if child.status == "queued" else None
    return {"id": child.id, "name": child.name, "status": child.status, "parent_step": child.parent_step,
            "start_ref": child.start_ref, "waiting_for": waiting.reason if waiting else None}  # fmt: skip


def start_label(parent_run: int | None, parent_step: int | None, start_ref: str | None) -> str:
    """Where a run starts, for tables: `1@50`, or `1@peak-ood` while a queued run waits for the pick; '' for none."""
    if parent_run is not None and parent_step is not None:
        return f"{parent_run}@{parent_step}"
    return start_ref or ""


def lineage(store: Store, run: Run) -> list[dict[str, Any]]:
    """The chain of ancestors, oldest first: each run with the step its child started from."""
    chain: list[dict[str, Any]] = []
    current, seen = run, {run.id}
    while current.parent_run is not None and current.parent_run not in seen:
        parent = store.run(current.parent_run)
        chain.insert(0, {"id": parent.id, "name": parent.name, "kind": parent.kind, "step": current.parent_step})
        seen.add(parent.id)
        current = parent
    return chain


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A nested spec as (dotted key, value) pairs, in order."""
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            items.extend(flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def metric_row(m: Metric) -> dict[str, Any]:
    return {"step": m.step, "name": m.name, "value": m.value, "wall_time": m.wall_time}


def sparkline(values: list[float], width: int = 40) -> str:
    """A one-line unicode plot of a series, resampled to at most `width` characters."""
    if not values:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - low) / span * len(SPARKS)))] for v in values)


def curve_summary(metrics: list[Metric]) -> dict[str, Any] | None:
    """First, lowest and last value of one metric's curve, with the steps they occurred at."""
    points = [(m.step, m.value) for m in metrics if m.value is not None]
    if not points:
        return None
    low = min(points, key=lambda p: p[1])
    return {
        "first": points[0],
        "min": low,
        "last": points[-1],
        "points": len(points),
        "sparkline": sparkline([v for _, v in points]),
    }
