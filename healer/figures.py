"""Figures for a two-column paper (`healer export figure`): accuracy along a lineage, rotation heatmaps, angle versus
singular-value drift, and the heal sweep. Each returns where its numbers came from; matplotlib is imported only here,
inside the functions, so `healer --help` never loads it."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from healer import __version__
from healer.errors import HealerError
from healer.spectra import Grid, by_step, layer_by_module, layer_by_step
from healer.spectral import MODULES
from healer.store import Spectrum
from healer.store.views import HealRow, LineageMetric, Reader, segments

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WIDTHS = {"single": 3.3, "double": 7.0}  # inches: one and two columns of a two-column paper
ASPECT = 0.62  # height / width
FORMATS = {".pdf": "pdf", ".png": "png", ".svg": "svg"}
# Okabe-Ito, most distinct first (yellow last: it barely shows on white)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
FORCED_COLOUR = "0.82"  # cells whose angles are all 0 by dimension (k >= n): grey and hatched, not "no rotation"
STYLE = {
    "font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.frameon": False, "lines.linewidth": 1.2, "lines.markersize": 3.5,
    "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6, "axes.spines.top": False,
    "axes.spines.right": False, "pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "healer",
    "hatch.linewidth": 0.5, "savefig.dpi": 300,
}  # fmt: skip
# no dates or versions in the file: the same numbers give the same bytes (golden files)
METADATA = {"pdf": {"CreationDate": None, "Producer": None}, "svg": {"Date": None}, "png": {"Software": None}}


# -- accuracy ------------------------------------------------------------------------------------------------


def accuracy(reader: Reader, runs: list[int], path: Path, width: str = "single") -> dict[str, Any]:
    """ID and OOD accuracy (%) of each run's lineage on the lineage step axis, Wilson 95 % bands, where each run
    continued another (dotted, labelled with its method) and a star at each lineage's OOD peak. A lineage starts at
    the earliest run asked for (an RL run brings its SFT parent, the curve it heals): `accuracy SFT RL...` leaves out
    the pretraining the SFT run started from; ask for that run too to draw it."""
    if not runs:
        raise HealerError("give at least one run to draw")
    chains, lineages = {}, {}
    asked = [reader.find_run(ref) for ref in runs]
    wanted = {r.id for r in asked} | {r.parent_run for r in asked if r.kind.value == "rl" and r.parent_run}
    for ref in runs:
        run = reader.find_run(ref)
        chain = reader.chain(run.id)
        first = next(i for i, r in enumerate(chain) if r.id in wanted)  # ancestors nobody asked for are left out
        shift = segments(chain)[first].offset  # so the axis starts at the first asked-for run's step 0
        kept = {r.id for r in chain[first:]}
        measured = reader.lineage_metrics(run.id, metrics=False)
        rows = [dataclasses.replace(m, lineage_step=m.lineage_step - shift)
                for m in measured if m.value is not None and m.run in kept]  # fmt: skip
        root = chain[first]
        if first > 0 and not any(m.run == root.id and m.step == 0 for m in rows):  # its step 0, once its parent's
            rows = _start_points(reader, root) + rows
        if not any(m.run == run.id for m in rows):
            raise HealerError(f"run {run.id} has no evaluations yet; `healer eval {run.id}` first")
        chains[run.id], lineages[run.id] = chain[first:], rows
    curves = _curves(lineages, chains)
    sources = list(dict.fromkeys(run for run, _ in curves))
    by_run = len(sources) > 1  # one colour per run; a lone run gets one colour per split instead

    def colour(run: int, split: str) -> str:
        return PALETTE[sources.index(run) if by_run else int(split == "ood")]

    names = {r.id: r.name for chain in chains.values() for r in chain}
    with _figure(width, path) as fig:
        ax = fig.add_subplot()
        for (run, split), points in curves.items():
            _accuracy_curve(ax, points, colour(run, split), split)
        _starts(ax, [r for chain in chains.values() for r in segments(chain)[1:]])
        for peak in dict.fromkeys(p for p in map(_peak, lineages.values()) if p is not None):  # each once, in order
            ax.plot(peak.lineage_step, 100 * (peak.value or 0), marker="*", markersize=9, color=colour(peak.run, "ood"),
                    markeredgecolor="black", markeredgewidth=0.5, linestyle="none", zorder=5)  # fmt: skip
        continued = any(len(chain) > 1 for chain in chains.values())
        ax.set_xlabel("lineage step (parent, then RL)" if continued else "training step")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(bottom=0)
        runs_key = [(colour(r, "id"), names[r]) for r in sources] if by_run else []
        splits_key = ("black", "black") if by_run else (colour(sources[0], "id"), colour(sources[0], "ood"))
        longest = max((len(name) for _, name in runs_key), default=0)
        columns = (2 if longest > 12 else 3) if width == "single" else (4 if longest > 20 else 6)
        _accuracy_legend(fig, runs_key, *splits_key, columns=columns)
    drawn = {(m.run, m.step, m.name): m for points in curves.values() for m in points}
    checkpoints = [_checkpoint(m.run, m.step, _split(m), m.protocol, m.n) for m in drawn.values()]
    return _provenance(reader, "accuracy", list(chains), checkpoints, WIDTHS[width])


def _start_points(reader: Reader, run: Any) -> list[LineageMetric]:
    """A run's own evaluation of the model it started from, as points at step 0 of the axis (on a longer lineage
    they stand for the parent's checkpoint, which the figure leaves out)."""
    from healer.evals import by_step, default_protocol

    evals = reader.evals(run.id)
    at_start = by_step(evals, default_protocol(evals)).get(0, {})
    return [LineageMetric(run.id, run.name, run.kind.value, 0, 0, f"eval/{split}/accuracy", e.accuracy, None, e.n,
                          e.correct, e.ci_low, e.ci_high, e.protocol)
            for split, e in sorted(at_start.items())]  # fmt: skip


def _split(m: LineageMetric) -> str:
    return m.name.split("/")[1]


def _curves(lineages: dict[int, list[LineageMetric]], chains: dict[int, list[Any]]) -> dict[tuple[int, str], list]:
    """{(run, split): points} over every lineage, each run's points once, a continued run's curve starting at the
    point it continued from (so the lines join where RL starts)."""
    points: dict[tuple[int, str], dict[int, LineageMetric]] = {}
    for rows in lineages.values():
        for m in rows:
            points.setdefault((m.run, _split(m)), {})[m.lineage_step] = m
    for chain in chains.values():
        for parent, child in itertools.pairwise(segments(chain)):
            for split in ("id", "ood"):
                start = points.get((parent.run.id, split), {}).get(child.offset)
                if start is not None and (child.run.id, split) in points:
                    points[child.run.id, split].setdefault(child.offset, start)
    return {key: [found[s] for s in sorted(found)] for key, found in sorted(points.items())}


def _accuracy_curve(ax: Axes, points: list[LineageMetric], colour: str, split: str) -> None:
    x = [m.lineage_step for m in points]
    ax.fill_between(x, [100 * (m.ci_low or 0) for m in points], [100 * (m.ci_high or 0) for m in points],
                    color=colour, alpha=0.15, linewidth=0)  # fmt: skip
    ax.plot(x, [100 * (m.value or 0) for m in points], color=colour, linestyle="-" if split == "id" else "--",
            marker="o" if split == "id" else "D", markersize=3.5 if split == "id" else 3)  # fmt: skip


def _starts(ax: Axes, starts: list[Any]) -> None:
    """A dotted line where each run of a lineage continued its parent, labelled with its method, once per step."""
    from matplotlib.transforms import blended_transform_factory

    labels: dict[int, list[str]] = {}
    for seg in starts:
        labels.setdefault(seg.offset, [])
        if seg.run.method not in labels[seg.offset]:
            labels[seg.offset].append(seg.run.method)
    where = blended_transform_factory(ax.transData, ax.transAxes)
    for step, methods in labels.items():  # the label above the axes, where no data is
        ax.axvline(step, color="0.35", linestyle=":", linewidth=0.9, zorder=1)
        ax.text(step, 1.01, "/".join(methods), transform=where, ha="center", va="bottom", fontsize=6.5, color="0.25")


def _peak(rows: list[LineageMetric]) -> LineageMetric | None:
    """The highest OOD accuracy of a lineage (the earliest of equals); None when it has no OOD evaluation."""
    ood = [m for m in rows if _split(m) == "ood"]
    return max(ood, key=lambda m: (m.value or 0, -m.lineage_step), default=None)


def _accuracy_legend(fig: Figure, runs: list[tuple[str, str]], id_colour: str, ood_colour: str, columns: int) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, linewidth=2, label=label) for c, label in runs]
    handles += [
        Line2D([], [], color=id_colour, marker="o", markersize=3.5, label="ID"),
        Line2D([], [], color=ood_colour, linestyle="--", marker="D", markersize=3, label="OOD"),
        Line2D([], [], color="white", marker="*", markersize=8, markerfacecolor="0.6", markeredgecolor="black",
               markeredgewidth=0.5, label="OOD peak"),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="outside upper center", ncols=min(columns, len(handles)) if runs else len(handles),
               handlelength=1.8, columnspacing=1.0, borderaxespad=0.2)  # fmt: skip


# -- spectra -------------------------------------------------------------------------------------------------


def _spectra_rows(reader: Reader, run: int) -> tuple[Any, list[Spectrum]]:
    """A run and its spectra against their first reference, side u (as `healer.spectra.by_step` reads them)."""
    found = reader.find_run(run)
    rows = reader.spectra(found.id, angles=False)
    if not rows:
        raise HealerError(f"run {found.id} has no spectra; `healer spectra measure {found.id}@STEP`")
    return found, [s for s in rows if s.ref == rows[0].ref and s.side == "u"]


def _spectra_checkpoint(run: int, step: int, rows: list[Spectrum]) -> dict[str, Any]:
    """A checkpoint whose spectra a figure drew: no split, protocol or n (no evaluation), but the reference, the side
    and how many matrices its means are over."""
    return {**_checkpoint(run, step, None, None, None), "ref": rows[0].ref, "side": "u", "matrices": len(rows)}


def rotation(reader: Reader, run: int, step: int | None, path: Path, width: str = "single") -> dict[str, Any]:
    """Mean principal angle per layer × module at one checkpoint (default: the last with spectra) beside per layer ×
    checkpoint step (mean over modules), one colour bar; cells at 0 by dimension (k >= n) hatched grey."""
    found, rows = _spectra_rows(reader, run)
    steps = sorted({s.step for s in rows})
    step = steps[-1] if step is None else step
    if step not in steps:
        raise HealerError(f"run {found.id} has no spectra at step {step}; it has them at steps "
                          f"{', '.join(map(str, steps))}, or `healer spectra measure {found.id}@{step}`")  # fmt: skip
    modules = layer_by_module(rows, step, "u")
    over_steps = _mean_over_modules([layer_by_step(rows, m, "u") for m in MODULES if any(s.module == m for s in rows)])
    top = max(modules.top, over_steps.top) or 1.0
    with _figure(width, path) as fig:
        ratio = min(3.0, max(1 / 3, len(over_steps.columns) / max(1, len(modules.columns))))
        left, right = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1, ratio]})
        image = _heatmap(left, modules, top, names=True)
        _heatmap(right, over_steps, top)
        left.set_xlabel(f"module\n(step {step})")
        left.set_ylabel("layer")
        right.set_xlabel("checkpoint step\n(mean over modules)")
        right.tick_params(labelleft=False)
        bar = fig.colorbar(image, ax=[left, right], fraction=0.05, pad=0.02, aspect=25)
        bar.set_label("principal angle (°)")
        bar.outline.set_linewidth(0.5)
        if modules.forced or over_steps.forced:
            _forced_legend(fig)
    checkpoints = [_spectra_checkpoint(found.id, s, [r for r in rows if r.step == s]) for s in steps]
    return {**_provenance(reader, "rotation", [found.id], checkpoints, WIDTHS[width]), "step": step}


def _mean_over_modules(grids: list[Grid]) -> Grid:
    """Per layer × step, the mean over modules of their mean angles, forced cells left out (they say nothing about
    training); a cell forced in every module stays forced."""
    values: dict[tuple[str, str], list[float]] = {}
    forced: dict[tuple[str, str], bool] = {}
    for grid in grids:
        for i, (layer, cells, _) in enumerate(grid.rows):
            for j, (column, value) in enumerate(zip(grid.columns, cells, strict=True)):
                if value is None:
                    continue
                key = (layer, column)
                forced[key] = forced.get(key, True) and grid.is_forced(i, j)
                if not grid.is_forced(i, j):
                    values.setdefault(key, []).append(value)
    layers = sorted({layer for layer, _ in forced}, key=int)
    columns = sorted({column for _, column in forced}, key=int)
    rows = [(layer, [_mean_or_zero(values, (layer, c)) if (layer, c) in forced else None for c in columns], None)
            for layer in layers]  # fmt: skip
    cells = {(i, j) for i, layer in enumerate(layers) for j, c in enumerate(columns) if forced.get((layer, c))}
    return Grid("mean over modules", columns, rows, frozenset(cells))


def _mean_or_zero(values: dict[tuple[str, str], list[float]], key: tuple[str, str]) -> float:
    found = values.get(key, [])
    return sum(found) / len(found) if found else 0.0


def _heatmap(ax: Axes, grid: Grid, top: float, names: bool = False) -> Any:
    """A grid as an image, layer 0 at the bottom; missing cells blank, forced cells grey and hatched."""
    import numpy as np
    from matplotlib.patches import Rectangle

    data = np.array([[np.nan if v is None else v for v in cells] for _, cells, _ in grid.rows], dtype=float)
    for i, j in grid.forced:
        data[i, j] = np.nan
    image = ax.imshow(np.ma.masked_invalid(data), cmap="cividis", vmin=0, vmax=top, origin="lower", aspect="auto",
                      interpolation="nearest")  # fmt: skip
    for i, j in grid.forced:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=FORCED_COLOUR, edgecolor="0.45", hatch="////",
                               linewidth=0))  # fmt: skip
    if names:  # every module named, upright while they are single letters
        ax.set_xticks(range(len(grid.columns)), grid.columns, rotation=90 if max(map(len, grid.columns)) > 2 else 0)
    else:
        _ticks(ax.set_xticks, grid.columns, 10 if len(grid.columns[-1]) < 3 else 6)
    _ticks(ax.set_yticks, [label for label, _, _ in grid.rows], 8)
    ax.tick_params(length=2)
    for spine in ax.spines.values():
        spine.set_visible(True)
    return image


def _ticks(set_ticks: Any, labels: Sequence[str], most: int) -> None:
    """Label every k-th cell so at most `most` labels show (the last always), so labels never overlap."""
    every = max(1, -(-len(labels) // most))
    shown = sorted({*range(0, len(labels), every), len(labels) - 1})
    if len(shown) > 1 and shown[-1] - shown[-2] < every:
        shown.pop(-2)
    set_ticks(shown, [labels[i] for i in shown])


def _forced_legend(fig: Figure) -> None:
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(facecolor=FORCED_COLOUR, edgecolor="0.45", hatch="////", linewidth=0,
                              label="0° by dimension (k ≥ n), not by training")],
               loc="outside lower center", handlelength=1.4, borderaxespad=0.1)  # fmt: skip


def drift(reader: Reader, run: int, path: Path, width: str = "single") -> dict[str, Any]:
    """Over checkpoint steps, the mean principal angle (°, left axis) beside the mean relative singular-value drift
    (%, right axis) on one numeric range from 0, so the figure shows what the numbers say: the subspaces rotate by
    degrees while the singular values move by a fraction of a percent (two scales fitted apart would draw both
    alike)."""
    found, rows = _spectra_rows(reader, run)
    table = by_step(rows)
    steps = list(table)
    with _figure(width, path) as fig:
        ax = fig.add_subplot()
        angle, sigma = PALETTE[0], PALETTE[1]
        ax.plot(steps, [table[s]["mean_angle_deg"] for s in steps], color=angle, marker="o", label="principal angle")
        ax.set_ylabel("mean principal angle (°)", color=angle)
        ax.tick_params(axis="y", colors=angle)
        right = ax.twinx()
        right.spines["right"].set_visible(True)
        right.plot(steps, [100 * table[s]["sigma_rel_drift"] for s in steps], color=sigma, linestyle="--",
                   marker="s", markersize=3, label="singular-value drift")  # fmt: skip
        right.set_ylabel("mean singular-value drift (%)", color=sigma)
        right.tick_params(axis="y", colors=sigma)
        top = max(ax.get_ylim()[1], right.get_ylim()[1], 1e-3)
        for axis in (ax, right):  # one range for both: a degree of rotation drawn as tall as a percent of drift
            axis.set_ylim(0, top)
        ax.set_xlabel("checkpoint step")
        fig.legend(handles=[*ax.get_lines(), *right.get_lines()], loc="outside upper center", ncols=2)
    checkpoints = [_spectra_checkpoint(found.id, s, [r for r in rows if r.step == s]) for s in steps]
    return _provenance(reader, "drift", [found.id], checkpoints, WIDTHS[width])


# -- heal sweep ----------------------------------------------------------------------------------------------


def sweep(reader: Reader, sft_run: int, path: Path, width: str = "single") -> dict[str, Any]:
    """The heal sweep of an SFT run: the share of lost OOD accuracy each RL run recovered, by start step and method
    (left), and its OOD accuracy at the start and after RL with Wilson 95 % bars, against the SFT run's OOD peak."""
    heal = reader.heal_sweep(sft_run)
    if not heal.rows:
        raise HealerError(f"run {heal.sft_run} has no RL runs started from its checkpoints; "
                          f"`healer heal {heal.sft_run} --preset ...`")  # fmt: skip
    rows = [r for r in heal.rows if "ood" in r.start and r.after and "ood" in r.after]
    if not rows:
        ids = ", ".join(str(r.rl_run) for r in heal.rows)
        raise HealerError(f"the RL runs of run {heal.sft_run} ({ids}) have no OOD evaluations at their start and "
                          "end yet; `healer eval RUN` each")  # fmt: skip
    methods = list(dict.fromkeys(r.method for r in rows))
    steps = [r.start["step"] for r in rows]
    room = _room(steps)
    x, slot = _dodged(steps, room)
    with _figure(width, path) as fig:
        left, right = fig.subplots(1, 2, sharex=True)
        _recovered(left, rows, x, methods)
        _before_after(right, rows, x, slot, methods, heal.ood_peak)
        for ax in (left, right):
            ax.set_xlabel("RL start step")
            ax.set_xticks(sorted(set(steps)))
            ax.set_xlim(min(steps) - 1.5 * room, max(steps) + 1.5 * room)
        _sweep_legend(fig, methods, heal.ood_peak is not None, width)
    measured_at_start = {c for c, evals in reader.evals_at([(r.rl_run, 0) for r in rows]).items()
                         if any(e.protocol == "single" for e in evals)}  # fmt: skip
    checkpoints = _sweep_checkpoints(heal.sft_run, rows, heal.ood_peak, measured_at_start)
    return _provenance(reader, "sweep", [heal.sft_run, *(r.rl_run for r in rows)], checkpoints, WIDTHS[width])


def _dodged(steps: list[int], room: float) -> tuple[list[float], list[float]]:
    """The x of each RL run, its start step, runs from the same step side by side in slots sharing `room`, and the
    width of each one's slot."""
    x, slots = [], []
    for i, step in enumerate(steps):
        same = [j for j, s in enumerate(steps) if s == step]
        slots.append(0.8 * room / len(same))
        x.append(step + slots[-1] * (same.index(i) - (len(same) - 1) / 2))
    return x, slots


def _room(steps: list[int]) -> float:
    """The room one start step has on the axis: the smallest gap between start steps, at most a tenth of the span
    (10 steps for a single start)."""
    distinct = sorted(set(steps))
    gaps = [b - a for a, b in itertools.pairwise(distinct)]
    return min([*gaps, 0.1 * (distinct[-1] - distinct[0])]) if len(distinct) > 1 else 10.0


def _marker(methods: list[str], method: str) -> tuple[str, str]:
    i = methods.index(method)
    return PALETTE[i % len(PALETTE)], "osD^v<>"[i % 7]


def _recovered(ax: Axes, rows: list[HealRow], x: list[float], methods: list[str]) -> None:
    from matplotlib.transforms import blended_transform_factory

    ax.axhline(0, color="0.5", linewidth=0.6)
    ax.axhline(100, color="0.5", linewidth=0.6, linestyle=":")
    shown = [100.0]
    for row, at in zip(rows, x, strict=True):
        colour, marker = _marker(methods, row.method)
        if row.recovered is None:  # nothing lost at this start: no share to draw
            where = blended_transform_factory(ax.transData, ax.transAxes)
            ax.text(at, 0.5, "nothing lost", transform=where, rotation=90, ha="center", va="center", fontsize=6.5,
                    color="0.35")  # fmt: skip
            continue
        shown.append(100 * row.recovered)
        ax.plot(at, 100 * row.recovered, marker=marker, color=colour, linestyle="none", markersize=4.5)
    ax.set_ylim(min(-10.0, min(shown) - 10), max(shown) + 10)
    ax.set_ylabel("lost OOD accuracy recovered (%)")


def _before_after(ax: Axes, rows: list[HealRow], x: list[float], slots: list[float], methods: list[str],
                  peak: dict[str, Any] | None) -> None:  # fmt: skip
    if peak is not None:
        ax.axhline(100 * peak["ood"], color="0.4", linestyle="--", linewidth=0.8)
    for row, at, slot in zip(rows, x, slots, strict=True):
        pair = 0.5 * slot  # start on the left of its slot, after on the right: their bars never hide each other
        colour, marker = _marker(methods, row.method)
        start, after = row.start["ood"], row.after["ood"] if row.after else {}
        for value, fill, where in ((start, "white", at - pair / 2), (after, colour, at + pair / 2)):
            low, high = value["accuracy"] - value["ci_low"], value["ci_high"] - value["accuracy"]
            ax.errorbar(where, 100 * value["accuracy"], yerr=[[100 * low], [100 * high]], color=colour,
                        marker=marker, markerfacecolor=fill, markersize=4.5, elinewidth=0.6, capsize=1.5,
                        linestyle="none")  # fmt: skip
        ax.plot([at - pair / 2, at + pair / 2], [100 * start["accuracy"], 100 * after["accuracy"]], color=colour,
                linewidth=0.8)  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.set_ylabel("OOD accuracy (%)")


def _sweep_legend(fig: Figure, methods: list[str], peak: bool, width: str) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker=m, linestyle="none", markersize=4.5, label=method)
               for method in methods for c, m in [_marker(methods, method)]]  # fmt: skip
    handles += [
        Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="none", label="at start"),
        Line2D([], [], color="0.3", marker="o", linestyle="none", label="after RL"),
    ]
    if peak:
        handles.append(Line2D([], [], color="0.4", linestyle="--", linewidth=0.8, label="SFT OOD peak"))
    columns = len(handles) if width == "double" or len(handles) <= 4 else -(-len(handles) // 2)
    fig.legend(handles=handles, loc="outside upper center", ncols=columns, handletextpad=0.3, columnspacing=1.0,
               handlelength=1.5)  # fmt: skip


def _sweep_checkpoints(sft: int, rows: list[HealRow], peak: dict[str, Any] | None,
                      measured_at_start: set[tuple[int, int]]) -> list[dict[str, Any]]:  # fmt: skip
    """The start and after OOD evaluations of each RL run (protocol `single`, as the heal table reads them) and the
    SFT peak. A start is the RL run's own step 0 where it evaluated one (`measured_at_start`), else the SFT run's
    evaluation of that checkpoint, as `healer.heal` chooses."""
    found = []
    for row in rows:
        assert row.after is not None
        start = (row.rl_run, 0) if (row.rl_run, 0) in measured_at_start else (sft, row.start["step"])
        found.append(_checkpoint(*start, "ood", "single", row.start["ood"]["n"]))
        found.append(_checkpoint(row.rl_run, row.after["step"], "ood", "single", row.after["ood"]["n"]))
    if peak is not None:
        found.append(_checkpoint(sft, peak["step"], "ood", "single", rows[0].start["ood"]["n"]))
    return found


# -- drawing and saving ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _figure(width: str, path: Path) -> Iterator[Figure]:
    """A figure of a paper's column width (and ASPECT × that high) under the paper style, saved to `path` when the
    block ends without an error."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if width not in WIDTHS:
        raise HealerError(f"unknown width {width!r}; give {' or '.join(WIDTHS)}")
    kind = FORMATS.get(Path(path).suffix.lower())
    if kind is None:
        raise HealerError(f"{path}: a figure is saved as .pdf, .png or .svg; give a path ending in one of those")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(WIDTHS[width], ASPECT * WIDTHS[width]), layout="constrained")
        FigureCanvasAgg(fig)
        yield fig
        _save(fig, Path(path), kind)


def _save(fig: Figure, path: Path, kind: str) -> None:
    """Save through a temporary file in the same folder (same suffix), then rename it into place."""
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    try:
        fig.savefig(scratch, format=kind, dpi=300, metadata=METADATA[kind])
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def _checkpoint(run: int, step: int, split: str | None, protocol: str | None, n: int | None) -> dict[str, Any]:
    return {"run": run, "step": step, "split": split, "protocol": protocol, "n": n}


def _provenance(reader: Reader, kind: str, runs: list[int], checkpoints: list[dict[str, Any]],
                width: float) -> dict[str, Any]:  # fmt: skip
    ordered = sorted(checkpoints, key=lambda c: (c["run"], c["step"], c["split"] or ""))
    unique = list({(c["run"], c["step"], c["split"]): c for c in ordered}.values())
    return {"healer": __version__, "database": str(reader.path), "figure": kind, "runs": list(dict.fromkeys(runs)),
            "checkpoints": unique, "width_in": width}  # fmt: skip
