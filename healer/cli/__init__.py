"""The `healer` command: one Typer app, one sub-app per noun; commands parse, call the core, print."""

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from healer import __version__
from healer.cli import db, demo, evaluate, export, heal, model, presets, queue, runs, spectra, task, tui
from healer.cli.common import App, fail

PITCH = "Run, measure and steer SFT then RL post-training; every number lands in one SQLite file."
app = App(name="healer", help=PITCH)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"healer {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    db_path: Annotated[
        Path | None, typer.Option("--db", help="database file (default: $HEALER_HOME/healer.db)", envvar="HEALER_DB")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Run, measure and steer SFT then RL post-training; every number lands in one SQLite file."""
    if db_path is not None:
        path = db_path.expanduser().resolve()
        if not path.parent.is_dir():  # a mistyped --db is an error, never a folder made for it
            source = ctx.get_parameter_source("db_path")
            option = "$HEALER_DB" if getattr(source, "name", "") == "ENVIRONMENT" else "--db"
            folder = path.parent
            problem = f"{folder} is not a folder; fix the path" if folder.exists() else (
                f"the folder {folder} does not exist; create it or fix the path")  # fmt: skip
            fail(f"{option} {path}: {problem}")
        os.environ["HEALER_DB"] = str(path)


runs.register(app)
db.register(app)
demo.register(app)
task.register(app)
evaluate.register(app)
heal.register(app)
queue.register(app)
spectra.register(app)
tui.register(app)
export.register(app)
app.add_typer(presets.app, name="presets")
app.add_typer(model.app, name="model")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C in a command that works in this process (a run cancels itself)
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
