"""`healer tui`: the live dashboard over SSH (Textual), or its first screen as text (--once)."""

from typing import Annotated

import typer

from healer import paths
from healer.cli.common import App
from healer.errors import HealerError


def tui(
    read_only: Annotated[
        bool,
        typer.Option(
            "--read-only",
            help="open the file as an immutable copy: nothing is written, not even a WAL file (for a copied or "
            "read-only store; changes in a -wal file are not seen). The default never writes either",
        ),
    ] = False,
    first_screen: Annotated[
        bool, typer.Option("--once", help="print the first screen as text and exit (scripts, CI)")
    ] = False,
    width: Annotated[int, typer.Option(help="--once: the screen's width")] = 100,
    height: Annotated[int, typer.Option(help="--once: the screen's height")] = 30,
) -> None:
    """Watch runs live: the lineage tree, ID/OOD accuracy across SFT and RL with intervals, rotation heatmaps and a
    checkpoint cursor. Keys: ←/→ checkpoint, / filter, 1-3 panes, 4 queue, enter detail, ? keys, q quit."""
    from healer.store.views import Reader

    db = paths.db_path()
    if not db.exists():
        raise HealerError(f"no database at {db}; run `healer demo` or `healer run PRESET` first, or pass --db")
    with Reader(db, immutable=read_only) as reader:
        reader.seq()  # not a healer database, or another schema: one line now, not a traceback in the app
    if width < 40 or height < 12:
        raise HealerError("--width must be at least 40 and --height at least 12")
    from healer.tui.app import HealerApp, once

    if first_screen:
        typer.echo(once(db, width, height, immutable=read_only))
        return
    HealerApp(db, immutable=read_only).run()


def register(root: App) -> None:
    root.command("tui")(tui)
