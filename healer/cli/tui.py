"""`healer tui`: the live dashboard over SSH (Textual), or its first screen as text (--once)."""

import os
from pathlib import Path
from typing import Annotated

import typer

from healer import paths
from healer.cli.common import App, err
from healer.errors import HealerError


def tui(
    run: Annotated[
        str | None,
        typer.Argument(
            help="the run to open on (default: one training now, else the SFT "
            "run with the most RL runs started from it)"
        ),
    ] = None,
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
    alarm_drop: Annotated[
        float | None,
        typer.Option(
            help="flag a run whose OOD accuracy fell this many points below its peak (beyond both "
            "intervals) while its ID accuracy rose (default: alarm_drop in tui.toml, else 5)"
        ),
    ] = None,
    theme: Annotated[
        str | None,
        typer.Option(help="a Textual theme for this session (default: tui.toml's; the palette's picker keeps one)"),
    ] = None,
    svg: Annotated[Path | None, typer.Option(help="--once: also save the screen as an SVG screenshot here")] = None,
    db_file: Annotated[
        Path | None, typer.Option("--db", help="the database to open (the same as `healer --db FILE tui`)")
    ] = None,
    web: Annotated[
        bool, typer.Option("--web", help="serve the app to a browser on 127.0.0.1 only (reach it by an SSH tunnel)")
    ] = False,
    port: Annotated[int, typer.Option(help="--web: the port on 127.0.0.1")] = 8000,
) -> None:
    """Watch and steer runs live: the lineage tree, ID/OOD accuracy across SFT and RL with intervals, rotation
    heatmaps, GPUs, and a checkpoint cursor to queue RL, heal sweeps, evaluations and spectra from. Keys: ←/→
    checkpoint, r RL from here, h heal sweep, e evaluate, s spectra, space compare, / filter, ? every key, q quit.
    Settings (theme, panes, alarm) persist in $XDG_CONFIG_HOME/healer/tui.toml."""
    import dataclasses

    from healer.store.views import Reader
    from healer.tui import settings as tui_settings

    settings, warnings = tui_settings.load()
    for warning in warnings:
        err.print(f"warning: {warning}", markup=False)
    if theme is not None and theme not in tui_settings.themes():
        raise HealerError(f"--theme {theme!r}: not a Textual theme; one of {', '.join(tui_settings.themes())}")
    alarm_drop = settings.alarm_drop if alarm_drop is None else alarm_drop

    if db_file is not None:
        db_file = db_file.expanduser().resolve()
        if not db_file.exists():
            raise HealerError(f"--db {db_file}: no such file; give a healer database (`healer export db -o FILE` "
                              "makes a copy)")  # fmt: skip
        os.environ["HEALER_DB"] = str(db_file)
    db = paths.db_path()
    if not db.exists():
        raise HealerError(f"no database at {db}; run `healer demo` or `healer run PRESET` first, or pass --db")
    with Reader(db, immutable=read_only) as reader:
        reader.seq()  # not a healer database, or another schema: one line now, not a traceback in the app
        select = reader.find_run(run).id if run is not None else None
    wal = db.with_name(db.name + "-wal")
    if read_only and wal.exists() and wal.stat().st_size > 0:
        err.print(f"warning: --read-only reads {db.name} as it is on disk; the {wal.stat().st_size // 1024} KiB of "
                  f"recent changes in {wal.name} are not shown (leave --read-only off: healer tui never writes)",
                  markup=False)  # fmt: skip
    if not 0 < alarm_drop <= 100:
        raise HealerError(f"--alarm-drop {alarm_drop:g}: give points between 0 and 100, e.g. 5")
    if width < 40 or height < 12:
        raise HealerError("--width must be at least 40 and --height at least 12")
    if web:
        if first_screen:
            raise HealerError("--web serves the live app; leave out --once (or --web)")
        from healer.tui.web import serve

        passed = [*(["--read-only"] if read_only else []), "--alarm-drop", str(alarm_drop),
                  *(["--theme", theme] if theme else [])]  # fmt: skip
        serve(db, port, [*passed, *(["--", run] if run is not None else [])])
        return
    from healer.tui.app import HealerApp, once

    if first_screen:
        if svg is not None and not svg.expanduser().resolve().parent.is_dir():
            raise HealerError(f"--svg {svg}: its folder does not exist")
        typer.echo(once(db, width, height, immutable=read_only, svg=svg.expanduser() if svg else None, select=select,
                        settings=settings))  # fmt: skip
        return
    import shutil

    from healer.gpus import read as read_gpus

    shown = dataclasses.replace(settings, theme=theme) if theme else settings
    app = HealerApp(db, immutable=read_only, select=select, alarm_drop=alarm_drop / 100, settings=shown,
                    save_settings=True, gpus=read_gpus if shutil.which("nvidia-smi") else None)  # fmt: skip
    app.run()


def register(root: App) -> None:
    root.command("tui")(tui)
