"""`healer export`: the paper's tables (LaTeX, Markdown, CSV, JSON) and figures (PDF, PNG, SVG), and a copy of
the store, each carrying where its numbers came from."""

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from healer import paths
from healer.cli.common import App, err, open_reader
from healer.errors import HealerError

if TYPE_CHECKING:
    from healer.export import Table

app = App(help="Tables and figures for papers, every number traceable to its checkpoint; a consistent copy of the "
          "store.")  # fmt: skip

FIGURES = ("accuracy", "rotation", "drift", "sweep")
FIGURE_SUFFIXES = (".pdf", ".png", ".svg")

FormatOption = Annotated[
    str | None, typer.Option("--format", help="latex, markdown, csv or json (default: from -o's suffix, else latex)")
]
OutOption = Annotated[Path | None, typer.Option("--output", "-o", help="write here (default: standard output)")]
CiOption = Annotated[
    str, typer.Option("--ci", help="intervals: brackets ([low, high]), pm (± half the interval's width) or none")
]
CommentOption = Annotated[
    bool | None,
    typer.Option(
        "--provenance/--no-provenance", help="the provenance block (default: on, except CSV's `#` lines: opt-in)"
    ),
]


def _command() -> str:
    return shlex.join(["healer", *sys.argv[1:]])


def _format(fmt: str | None, out: Path | None) -> str:
    from healer.export import FORMAT_SUFFIXES, FORMATS

    if fmt is None:
        by_suffix = {suffix: name for name, suffix in FORMAT_SUFFIXES.items()}
        return by_suffix.get(out.suffix.lower(), "latex") if out is not None else "latex"
    if fmt not in FORMATS:
        raise HealerError(f"--format {fmt!r}: give one of {', '.join(FORMATS)}")
    return fmt


def _emit(table: "Table", fmt: str | None, out: Path | None, ci: str, comment: bool | None) -> None:
    from healer.export import CI_STYLES, Provenance, check_output, export_to, render

    check_output(out)
    fmt = _format(fmt, out)
    if ci not in CI_STYLES:
        raise HealerError(f"--ci {ci!r}: give one of {', '.join(CI_STYLES)}")
    provenance = Provenance(str(paths.db_path()), _command())
    if out is None:
        sys.stdout.write(render(table, fmt, provenance, ci, comment=comment if comment is not None else fmt != "csv"))
        return
    export_to(table, fmt, out, provenance, ci, comment)
    err.print(f"wrote {out} ({fmt})", markup=False)


@app.command("table")
def table(
    runs: Annotated[list[str], typer.Argument(help="SFT runs (a row per RL run started from each) or RL runs")],
    fmt: FormatOption = None,
    stages: Annotated[str, typer.Option(help="columns: base, peak-ood, sft-end, rl-end, control")] = (
        "base,peak-ood,sft-end,rl-end"
    ),
    split: Annotated[str, typer.Option(help="splits: id, ood")] = "id,ood",
    ci: CiOption = "brackets",
    group_by: Annotated[
        str, typer.Option(help="seed (runs that differ only by seed: mean ± std), model (per base model) or none")
    ] = "seed",
    output: OutOption = None,
    comment: CommentOption = None,
) -> None:
    """The paper's table: a row per SFT lineage, ID and OOD accuracy at the base model, at SFT's OOD peak, at the end
    of SFT and after RL, with the recovered share. LaTeX uses booktabs, bolds each column's best and ends with a
    caption stub; a comment block names every number's checkpoint."""
    from healer.export import GROUPS, STAGES, heal_table, parse_list

    if group_by not in GROUPS:
        raise HealerError(f"--group-by {group_by!r}: give one of {', '.join(GROUPS)}")
    built = heal_table(open_reader(), runs, parse_list(stages, STAGES, "--stages"),
                       parse_list(split, ("id", "ood"), "--split"), group_by)  # fmt: skip
    _emit(built, fmt, output, ci, comment)


@app.command("sweep")
def sweep(
    sft_run: Annotated[str, typer.Argument(help="the SFT run whose checkpoints RL started from")],
    fmt: FormatOption = None,
    ci: CiOption = "brackets",
    output: OutOption = None,
    comment: CommentOption = None,
) -> None:
    """The heal sweep (`healer heal SFT --report`) as a table: start checkpoint, its ID/OOD, after RL, the change, the
    paired flips, the recovered share and the SFT control."""
    from healer.export import sweep_table

    _emit(sweep_table(open_reader(), sft_run), fmt, output, ci, comment)


@app.command("spectra")
def spectra(
    ref: Annotated[str, typer.Argument(help="RUN@STEP, or RUN (its latest checkpoint with spectra)")],
    fmt: FormatOption = None,
    output: OutOption = None,
    comment: CommentOption = None,
) -> None:
    """The rotation table: layer × module mean principal angle (°) and the singular-value drift (%) of a checkpoint
    against its reference."""
    from healer.export import spectra_table

    _emit(spectra_table(open_reader(), ref), fmt, output, "none", comment)


@app.command("figure")
def figure(
    kind: Annotated[str, typer.Argument(help="accuracy, rotation, drift or sweep")],
    runs: Annotated[list[str], typer.Argument(help="the runs (rotation: RUN or RUN@STEP; sweep: the SFT run)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="FILE.pdf, FILE.png or FILE.svg")] = Path("figure.pdf"),
    width: Annotated[str, typer.Option(help="single (3.3 in, one column) or double (7 in, both columns)")] = "single",
) -> None:
    """A figure for a paper (matplotlib, no display needed), sized for a two-column paper in colour-blind-safe
    colours, with a JSON sidecar (FILE.json) naming the runs and checkpoints it draws and the command that made it."""
    from healer import figures
    from healer.export import check_output, write_atomic

    if kind not in FIGURES:
        raise HealerError(f"{kind!r} is not a figure; give one of {', '.join(FIGURES)}")
    if width not in figures.WIDTHS:
        raise HealerError(f"--width {width!r}: give single or double")
    if output.suffix.lower() not in FIGURE_SUFFIXES:
        raise HealerError(f"-o {output}: give a file ending in {', '.join(FIGURE_SUFFIXES)}")
    check_output(output)
    reader = open_reader()
    path = output.expanduser()
    if kind == "accuracy":
        provenance = figures.accuracy(reader, [reader.find_run(r).id for r in runs], path, width)
    else:
        if len(runs) != 1:
            raise HealerError(f"figure {kind} draws one run; give one")
        if kind == "rotation":
            run_ref, _, step = runs[0].partition("@")
            run = reader.find_run(run_ref)
            at = reader.resolve_checkpoint(runs[0]).step if step else None
            provenance = figures.rotation(reader, run.id, at, path, width)
        elif kind == "drift":
            provenance = figures.drift(reader, reader.find_run(runs[0]).id, path, width)
        else:
            provenance = figures.sweep(reader, reader.find_run(runs[0]).id, path, width)
    sidecar = path.with_name(path.name + ".json")
    write_atomic(sidecar, json.dumps({**provenance, "command": _command()}, indent=2) + "\n")
    err.print(f"wrote {output} and {sidecar.name}", markup=False)


@app.command("db")
def db(
    output: Annotated[Path, typer.Option("--output", "-o", help="the copy's file")],
) -> None:
    """A consistent copy of the store, taken with SQLite's backup API while runs write; open it anywhere with
    `healer --db FILE tui --read-only`."""
    from healer.export import backup_db, check_output

    source = paths.db_path()
    if not source.exists():
        raise HealerError(f"no database at {source}; nothing to copy")
    check_output(output)
    target = output.expanduser().resolve()
    if target == source.resolve():
        raise HealerError(f"-o {output} is the store itself; give another file")
    size = backup_db(source, target)
    err.print(f"wrote {output} ({size / 2**20:.1f} MiB), a copy of {source}", markup=False)


def register(root: App) -> None:
    root.add_typer(app, name="export")
