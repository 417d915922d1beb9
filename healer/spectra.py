"""Spectra of checkpoints: which reference a checkpoint is read against, measuring it (healer.spectral, torch, in
this process) and storing the rows, and the readings `healer spectra show` draws. Imports no torch itself."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

from healer import paths
from healer.errors import HealerError
from healer.presets import RunSpec, SpectraSpec, build_spec
from healer.refs import CheckpointRef, resolve_checkpoint
from healer.runner import holder_run
from healer.spectral import MODULES, parse_modules
from healer.store import Run, Spectrum, Store

JSON_FIELDS = (
    "param", "layer", "module", "side", "k", "n", "mean_angle_deg", "median_angle_deg", "max_angle_deg", "chordal",
    "chordal_norm", "forced_zero", "sigma_rel_drift", "energy_diag", "energy_rotation", "energy_outside", "gap_rel",
    "method", "error_deg",
)  # fmt: skip


def resolve_reference(store: Store, target: CheckpointRef, text: str) -> CheckpointRef:
    """base: the first model of the target's lineage; start: the model its run started from; parent@SELECTOR: a
    checkpoint of the run its run started from; anything else as a checkpoint reference (RUN@STEP, a directory)."""
    text = text.strip()
    run = target.run
    if text in ("base", "start") or text.startswith("parent@"):
        if run is None:
            raise HealerError(f"--ref {text} needs a run's checkpoint; {target.path} belongs to no run: give --ref "
                              "RUN@STEP or a directory")  # fmt: skip
        if text == "start":
            return CheckpointRef(run, 0, run.model_path or "")
        if text == "base":
            root = store.chain(run.id)[0]
            return CheckpointRef(root, 0, root.model_path or "")
        if run.parent_run is None:
            raise HealerError(f"--ref {text}: run {run.id} did not start from another run's checkpoint")
        selector = text.split("@", 1)[1]
        return resolve_checkpoint(store, f"{run.parent_run}@{selector}")
    return resolve_checkpoint(store, text)


def label(ref: CheckpointRef) -> str:
    return f"{ref.run.id}@{ref.step}" if ref.run else ref.path


def settings_of(spectra: SpectraSpec, **changes: Any) -> Any:
    """The analysis settings of a spectra section, with CLI changes (k, modules, method, device)."""
    from healer.spectral.analyze import Settings

    values = {"k": spectra.k, "modules": spectra.modules, "method": spectra.method, "device": spectra.device}
    values.update({k: v for k, v in changes.items() if v is not None})
    return Settings(**{**values, "modules": parse_modules(values["modules"])})


def spectra_overrides(**changes: Any) -> list[str]:
    """`healer spectra measure`'s --ref, --k, --modules, --method and --device as `--set spectra.KEY=...` overrides
    (what a queued spectra job runs with)."""
    if isinstance(changes.get("modules"), str):
        changes["modules"] = changes["modules"].split(",")
    return [f"spectra.{key}={json.dumps(value)}" for key, value in changes.items() if value is not None]


def measure(store: Store, target: CheckpointRef, reference: CheckpointRef, settings: Any,
            say: Callable[[str], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Measure a checkpoint against a reference and store the rows under the checkpoint's run and step (a bare
    directory gets a holder run, as its evaluations do)."""
    from healer.spectral.analyze import analyse, cache_for

    rows = list(analyse(target.path, reference.path, settings, cache_for(paths.home()), say))
    holder = target.run or holder_run(store, target.path, RunSpec())
    recorded = {"k": settings.k, "modules": list(settings.modules), "method": settings.method,
                "reference_path": reference.path}  # fmt: skip
    store.record_spectra(holder.id, target.step, label(reference), reference.run.id if reference.run else None,
                         reference.step if reference.run else None, recorded, rows)  # fmt: skip
    return rows


def measure_in_run(store: Store, run: Run, step: int, spec: RunSpec, say: Callable[[str], None] = print) -> None:
    """spectra.every_checkpoint: one checkpoint of a run against the run's spectra.ref (inline, or as a job)."""
    target = resolve_checkpoint(store, f"{run.id}@{step}")
    reference = resolve_reference(store, target, spec.spectra.ref)
    if reference.path == target.path:
        return  # the checkpoint is its own reference: nothing to measure
    rows = measure(store, target, reference, settings_of(spec.spectra))
    u = [r for r in rows if r["side"] == "u"]
    mean = sum(r["mean_angle_deg"] for r in u) / len(u)
    drift = sum(r["sigma_rel_drift"] for r in u) / len(u)
    say(f"healer: spectra step {step} against {label(reference)}: {len(u)} matrices, mean angle {mean:.2f}° (u), "
        f"mean singular-value drift {100 * drift:.2f} %")  # fmt: skip


def run_spectra_job(job: Run, store: Store) -> None:
    assert job.parent_run is not None and job.parent_step is not None
    parent = store.run(job.parent_run)
    spec = build_spec(job.spec_dict, source=f"run {job.id}")  # the parent's, unless `spectra measure --queue` set some
    measure_in_run(store, parent, job.parent_step, spec)


def json_row(row: dict[str, Any], full: bool) -> dict[str, Any]:
    """One row of `healer spectra --json`; with full, the sorted angles and the singular-value drifts."""
    fields = (*JSON_FIELDS, "angles_deg", "sigma_drift") if full else JSON_FIELDS
    return {name: row[name] for name in fields}


@dataclasses.dataclass(frozen=True)
class Grid:
    """Mean angles as rows × columns, for the terminal heatmap, with the singular-value drift per row.

    `forced` holds the (row, column) indices of cells whose every angle is 0 by dimension alone (forced_zero >= k,
    i.e. k >= n: the top-k subspace is the whole space); their value is 0 but it says nothing about training, so
    they are drawn as FORCED_GLYPH, not as "no rotation", and left out of the colour scale (`top`)."""

    title: str
    columns: list[str]
    rows: list[tuple[str, list[float | None], float | None]]
    forced: frozenset[tuple[int, int]] = frozenset()

    def is_forced(self, row: int, column: int) -> bool:
        return (row, column) in self.forced

    @property
    def top(self) -> float:
        """The largest mean angle of the map, forced cells aside (the top of the colour scale); 0 when none."""
        return max(
            (v for i, (_, cells, _) in enumerate(self.rows) for j, v in enumerate(cells)
             if v is not None and (i, j) not in self.forced),
            default=0.0,
        )  # fmt: skip


def all_forced(spectrum: Spectrum) -> bool:
    """Every angle of this side is 0 by dimension alone (2k - n >= k, i.e. k >= n), not by training."""
    return spectrum.forced_zero >= spectrum.k


def layer_by_module(spectra: list[Spectrum] | tuple[Spectrum, ...], step: int, side: str) -> Grid:
    """One checkpoint: a row per layer, a column per module."""
    cells = {(s.layer, s.module): s for s in spectra if s.step == step and s.side == side}
    modules = [m for m in MODULES if any(mod == m for _, mod in cells)]
    layers = sorted({layer for layer, _ in cells})
    rows = []
    forced = set()
    for i, layer in enumerate(layers):
        found = [cells.get((layer, m)) for m in modules]
        drifts = [c.sigma_rel_drift for c in found if c is not None]
        rows.append((str(layer), [c.mean_angle_deg if c else None for c in found], _mean(drifts)))
        forced |= {(i, j) for j, c in enumerate(found) if c is not None and all_forced(c)}
    return Grid(f"step {step}: mean principal angle (°, side {side}) per layer × module", modules, rows,
                frozenset(forced))  # fmt: skip


def layer_by_step(spectra: list[Spectrum] | tuple[Spectrum, ...], module: str, side: str) -> Grid:
    """One module: a row per layer, a column per checkpoint."""
    cells = {(s.layer, s.step): s for s in spectra if s.module == module and s.side == side}
    steps = sorted({step for _, step in cells})
    layers = sorted({layer for layer, _ in cells})
    rows = []
    forced = set()
    for i, layer in enumerate(layers):
        found = [cells.get((layer, step)) for step in steps]
        last = next((c for c in reversed(found) if c is not None), None)
        rows.append(
            (str(layer), [c.mean_angle_deg if c else None for c in found], last.sigma_rel_drift if last else None)
        )
        forced |= {(i, j) for j, c in enumerate(found) if c is not None and all_forced(c)}
    title = f"module {module}: mean principal angle (°, side {side}) per layer × checkpoint step"
    return Grid(title, [str(s) for s in steps], rows, frozenset(forced))


def by_step(spectra: list[Spectrum], side: str = "u") -> dict[int, dict[str, float]]:
    """Per checkpoint, over its matrices: the mean of their mean angles, the largest angle, the mean singular-value
    drift, and how many matrices (one reference: the first stored)."""
    if not spectra:
        return {}
    ref = spectra[0].ref
    table: dict[int, dict[str, float]] = {}
    for step in sorted({s.step for s in spectra if s.ref == ref}):
        rows = [s for s in spectra if s.step == step and s.ref == ref and s.side == side]
        table[step] = {"mean_angle_deg": sum(r.mean_angle_deg for r in rows) / len(rows),
                       "max_angle_deg": max(r.max_angle_deg for r in rows), "matrices": len(rows),
                       "sigma_rel_drift": sum(r.sigma_rel_drift for r in rows) / len(rows)}  # fmt: skip
    return table


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


ANGLE_STYLES = ("grey50", "cyan", "green", "yellow", "dark_orange", "bold red")  # cool to hot


def angle_bucket(angle: float, top: float, buckets: int = len(ANGLE_STYLES)) -> int:
    """Which of `buckets` equal bands of [0, top] an angle falls in (the heatmap's colour); 0 for a zero scale."""
    if top <= 0 or angle <= 0:
        return 0
    return min(buckets - 1, int(buckets * angle / top))


def angle_style(angle: float, top: float) -> str:
    return ANGLE_STYLES[angle_bucket(angle, top)]


# One glyph per colour bucket, so the map still reads without colour (NO_COLOR): blank for the coldest band, then a
# dot and the shades ░▒▓█ up to the hottest. FORCED_GLYPH marks a cell whose angles are all 0 by dimension (k >= n).
ANGLE_GLYPHS = (" ", "·", "░", "▒", "▓", "█")
FORCED_GLYPH = "="
FORCED_STYLE = "dim"
FORCED_LEGEND = "= all angles 0 by dimension (k ≥ n), not by training"


def angle_glyph(angle: float, top: float) -> str:
    return ANGLE_GLYPHS[angle_bucket(angle, top)]


def legend(top: float) -> list[tuple[str, str]]:
    """The colour scale of a map whose largest angle is `top`: per bucket, its lower bound in degrees and its style
    (coolest first). A zero scale has one bucket, 0°."""
    if top <= 0:
        return [("0°", ANGLE_STYLES[0])]
    width = top / len(ANGLE_STYLES)
    decimals = max(0, min(4, 1 - math.floor(math.log10(width))))
    return [(f"{i * width:.{decimals}f}°" if i else "0°", style) for i, style in enumerate(ANGLE_STYLES)]
