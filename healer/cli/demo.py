"""`healer demo`: the whole loop on a CPU with the tiny model healer builds itself."""

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from healer import paths
from healer.cli.common import App, err, open_store, out
from healer.cli.runs import EXIT_CODES, print_run_summary
from healer.presets import load_preset
from healer.runner import create_run, run_foreground
from healer.store import Status

DEMO_PRESET = "tiny-sft"


def demo(
    home: Annotated[Path | None, typer.Option(help="use this directory as $HEALER_HOME for the demo")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="do not echo the training log")] = False,
) -> None:
    """Build the offline tiny model, fine-tune it on CPU, and show what landed in the database."""
    if home is not None:
        os.environ["HEALER_HOME"] = str(home.expanduser().resolve())
        os.environ.pop("HEALER_DB", None)
    preset = load_preset(DEMO_PRESET)
    store = open_store()
    err.print(
        f"healer demo: SFT of the tiny model ({preset.spec.model.path}) on the {preset.spec.task.name} task",
        markup=False,
    )
    run = create_run(store, preset)
    finished = run_foreground(store, run, echo=None if quiet else sys.stderr)
    out.print()
    print_run_summary(store, finished)
    out.print(f"\ndatabase: {paths.db_path()}", markup=False)
    out.print(
        f"next: healer runs show {run.id}  |  healer metrics {run.id} --name loss  |  "
        f'healer sql "SELECT name, COUNT(*) FROM metrics WHERE run_id = {run.id} GROUP BY name"',
        markup=False,
    )
    raise typer.Exit(EXIT_CODES.get(Status(finished.status), 1))


def register(root: App) -> None:
    root.command("demo")(demo)
