"""`healer spectra RUN@STEP` (measure) and `healer spectra show RUN` (the heatmaps)."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from healer import queue
from healer import spectra as core
from healer.cli.common import (
    App,
    Column,
    WideOption,
    err,
    fmt,
    open_reader,
    open_store,
    out,
    print_json,
    print_table,
    show_wide,
)
from healer.cli.evaluate import print_accuracy, queue_jobs
from healer.errors import HealerError
from healer.presets import SpectraSpec, build_spec
from healer.refs import resolve_checkpoint
from healer.spectral import MODULES, parse_modules
from healer.store.views import to_plain


class MeasureByDefault(TyperGroup):
    """`healer spectra RUN@STEP ...` means `healer spectra measure RUN@STEP ...`; `show` is the other command."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["measure", *args]
        return super().resolve_command(ctx, args)


app = App(cls=MeasureByDefault, help="Singular-vector rotation of checkpoints: `healer spectra RUN@STEP` measures, "
          "`healer spectra show RUN` draws the heatmaps.")  # fmt: skip


@app.command("measure")
def measure(
    target: Annotated[str, typer.Argument(help="the checkpoint: RUN@STEP, RUN@last, RUN@peak-ood, ... or a directory")],
    ref: Annotated[
        str,
        typer.Option(
            help="base (the lineage's first model), start (the model the run started from), "
            "parent@SELECTOR, RUN@STEP or a directory"
        ),
    ] = "base",
    k: Annotated[int | None, typer.Option(help="top-k subspaces (default: the run's spectra.k, 768)")] = None,
    modules: Annotated[str | None, typer.Option(help="comma-separated: q,k,v,o,gate,up,down")] = None,
    method: Annotated[str | None, typer.Option(help="auto, exact or fast")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    full: Annotated[bool, typer.Option(help="--json: every angle (sorted) and singular-value drift too")] = False,
    to_queue: Annotated[bool, typer.Option("--queue", help="queue a spectra job for `healer worker` instead")] = False,
    priority: Annotated[int, typer.Option(help="--queue: the job's priority")] = 0,
    wide: WideOption = False,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON (one object per matrix and side)")] = False,
) -> None:
    """Principal angles between the top-k singular subspaces of the checkpoint and of the reference, per layer,
    module and side, with singular-value drift and the update's energy split; stored in the spectra table."""
    show_wide(wide)
    if method is not None and method not in ("auto", "exact", "fast"):
        raise HealerError(f"--method {method!r}: use auto, exact or fast")
    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise HealerError(f"--device {device!r}: use auto, cpu or cuda")
    if k is not None and k < 1:
        raise HealerError("--k must be at least 1")
    store = open_store()
    checkpoint = resolve_checkpoint(store, target)
    reference = core.resolve_reference(store, checkpoint, ref)
    if to_queue:
        extra = core.spectra_overrides(ref=ref, k=k, modules=modules, method=method, device=device)
        queue_jobs(store, [queue.queue_checkpoint_job(store, checkpoint, "spectra", extra, priority)], json_out)
        return
    section = build_spec(checkpoint.run.spec_dict).spectra if checkpoint.run else SpectraSpec()
    settings = core.settings_of(section, k=k, modules=modules, method=method, device=device)
    say = (lambda line: err.print(line, markup=False)) if sys.stderr.isatty() else None
    rows = core.measure(store, checkpoint, reference, settings, say)
    if json_out:
        print_json([core.json_row(r, full) for r in rows])
        return
    print_matrices(rows, checkpoint.label, core.label(reference))


def print_matrices(rows: list[dict[str, Any]], checkpoint: str, reference: str) -> None:
    pairs: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        pairs.setdefault(r["param"], {})[r["side"]] = r
    print_table(
        [Column("layer", justify="right"), "module", Column("k", justify="right", drop=3),
         Column("u mean°", justify="right"), Column("u max°", justify="right", drop=2),
         Column("v mean°", justify="right"), Column("v max°", justify="right", drop=2),
         Column("forced 0 (u/v)", justify="right", drop=4), Column("σ drift %", justify="right"),
         Column("rotation %", justify="right", drop=1), Column("method", drop=5)],
        [[u["layer"], u["module"], u["k"], fmt(u["mean_angle_deg"], 3), fmt(u["max_angle_deg"], 3),
          fmt(v["mean_angle_deg"], 3), fmt(v["max_angle_deg"], 3), f"{u['forced_zero']}/{v['forced_zero']}",
          fmt(100 * u["sigma_rel_drift"], 3), _pct(u["energy_rotation"]), u["method"]]
         for u, v in ((p["u"], p["v"]) for p in pairs.values())],
        title=f"spectra of {checkpoint} against {reference}",
    )  # fmt: skip
    means = [r["mean_angle_deg"] for r in rows if r["side"] == "u"]
    drifts = [r["sigma_rel_drift"] for r in rows if r["side"] == "u"]
    forced = sum(1 for r in rows if r["forced_zero"])
    out.print(f"{len(means)} matrices: mean angle {sum(means) / len(means):.2f}° (u), singular values drifted "
              f"{100 * sum(drifts) / len(drifts):.2f} % on average"
              + (f"; {forced} sides have angles forced to 0 by dimension (2k > n), not by training" if forced else ""),
              markup=False)  # fmt: skip


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


@app.command("show")
def show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="run id or name")],
    step: Annotated[
        int | None, typer.Option(help="the checkpoint of the layer × module map (default: the last)")
    ] = None,
    module: Annotated[str, typer.Option(help="the module of the layer × checkpoint map")] = "q",
    side: Annotated[str, typer.Option(help="u (left singular vectors) or v (right)")] = "u",
    ref: Annotated[str | None, typer.Option(help="only spectra against this reference (RUN@STEP as stored)")] = None,
) -> None:
    """Terminal heatmaps of the stored spectra: mean angle per layer × module for one checkpoint, and per layer ×
    checkpoint for one module, each with the singular-value drift beside it."""
    if side not in ("u", "v"):
        raise HealerError(f"--side {side!r}: use u or v")
    reader = open_reader()
    run = reader.find_run(run_ref)
    rows = reader.spectra(run.id, ref=ref)
    if not rows:
        raise HealerError(f"run {run.id} has no spectra yet; measure one with `healer spectra {run.id}@last` or set "
                          "spectra.every_checkpoint = true")  # fmt: skip
    refs = sorted({r.ref for r in rows})
    if len(refs) > 1 and ref is None:
        rows = [r for r in rows if r.ref == refs[0]]
        err.print(f"spectra against {', '.join(refs)}; showing {refs[0]} (--ref picks one)", markup=False)
    steps = sorted({r.step for r in rows})
    chosen = steps[-1] if step is None else step
    if chosen not in steps:
        raise HealerError(f"run {run.id} has spectra at steps {', '.join(map(str, steps))}, not {chosen}")
    module = module.removesuffix("_proj")
    out.print(f"run {run.id} {run.name} against {rows[0].ref}", markup=False)
    draw(core.layer_by_module(rows, chosen, side))
    draw(core.layer_by_step(rows, module, side))


def draw(grid: core.Grid) -> None:
    from rich.table import Table
    from rich.text import Text

    top = grid.top
    table = Table("layer", *grid.columns, "σ drift %", title=grid.title, title_justify="left", box=None,
                  header_style="bold", pad_edge=False)  # fmt: skip
    for i, (name, cells, drift) in enumerate(grid.rows):
        shown = [
            Text(core.FORCED_GLYPH, style=core.FORCED_STYLE, justify="right") if grid.is_forced(i, j)
            else Text(f"{v:5.2f}", style=core.angle_style(v, top)) if v is not None else Text("")
            for j, v in enumerate(cells)
        ]  # fmt: skip
        table.add_row(name, *shown, "" if drift is None else f"{100 * drift:.2f}")
    out.print(table)
    scale = Text("colour scale (from): ")
    for label, style in core.legend(top):
        scale.append(label, style=style).append(" ")
    scale.append(f"up to {top:.2f}°, the largest mean angle in the map")
    if grid.forced:
        scale.append(f"; {core.FORCED_LEGEND}")
    out.print(scale)


def edit(
    target: Annotated[str, typer.Argument(metavar="CKPT", help="the checkpoint to edit: RUN@STEP, ... or a directory")],
    ref: Annotated[str, typer.Option(help="the checkpoint whose singular vectors go in (RUN@STEP, base, start, ...)")],
    restore: Annotated[str, typer.Option(help="vectors, or vectors+values")],
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="a new directory for the edited checkpoint")],
    top: Annotated[int | None, typer.Option(help="swap the top K ranks")] = None,
    top_frac: Annotated[float | None, typer.Option(help="swap the top fraction F of each matrix's rank")] = None,
    bottom: Annotated[int | None, typer.Option(help="swap the bottom K ranks (with or without --top)")] = None,
    layers: Annotated[str | None, typer.Option(help="only these layers, e.g. 0-9 or 0,3,5-7")] = None,
    modules: Annotated[str, typer.Option(help="comma-separated: q,k,v,o,gate,up,down")] = ",".join(MODULES),
    evaluate: Annotated[bool, typer.Option(help="evaluate the edited checkpoint on ID and OOD")] = True,
    wide: WideOption = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the edit run as JSON")] = False,
) -> None:
    """Write a checkpoint whose matrices take the reference's singular vectors (and values) at the chosen ranks,
    register it as an `edit` run with its parameters and lineage, and evaluate it."""
    show_wide(wide)
    from healer import edits
    from healer.spectral.edit import Plan, parse_layers

    if restore not in ("vectors", "vectors+values"):
        raise HealerError(f"--restore {restore!r}: use vectors or vectors+values")
    if top is not None and top_frac is not None:
        raise HealerError("give --top or --top-frac, not both")
    if top is None and top_frac is None and bottom is None:
        raise HealerError("say which ranks to swap: --top K, --top-frac F and/or --bottom K")
    if any(v is not None and v < 1 for v in (top, bottom)) or (top_frac is not None and not 0 < top_frac <= 1):
        raise HealerError("--top and --bottom must be at least 1, --top-frac in (0, 1]")
    plan = Plan(restore, top, top_frac, bottom, parse_layers(layers), parse_modules(modules))  # type: ignore[arg-type]
    store = open_store()
    checkpoint = resolve_checkpoint(store, target)
    reference = core.resolve_reference(store, checkpoint, ref)
    run = edits.edit_checkpoint(store, checkpoint, reference, plan, out_dir.expanduser().resolve(),
                                say=lambda line: err.print(line, markup=False))  # fmt: skip
    if evaluate:
        from healer.evals import describe_eval

        for e in edits.evaluate_edit(store, run):
            err.print(describe_eval(e), markup=False)
    if json_out:
        print_json(open_reader().run_detail(run.id))
        return
    out.print(f"edit run {run.id} ({run.name}): {run.model_path}", markup=False)
    if evaluate:
        print_accuracy(to_plain(open_reader().run_detail(run.id)))


def register(root: App) -> None:
    root.add_typer(app, name="spectra")
    root.command("edit")(edit)
