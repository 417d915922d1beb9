"""`healer demo`: the whole loop on a CPU with the tiny model healer builds itself."""

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from healer import paths, report
from healer.cli.common import App, err, open_store, out
from healer.cli.evaluate import print_accuracy
from healer.cli.runs import EXIT_CODES, print_run_summary, start_run
from healer.presets import Preset, load_preset
from healer.runner import run_foreground
from healer.store import Run, Status, Store

STAGE0, STAGE1 = "tiny-pretrain", "tiny-sft"


def demo(
    home: Annotated[Path | None, typer.Option(help="use this directory as $HEALER_HOME for the demo")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="do not echo the training logs")] = False,
) -> None:
    """Teach the offline tiny model to read a rule, fine-tune it on ID data only, and watch OOD accuracy fall."""
    if home is not None:
        os.environ["HEALER_HOME"] = str(home.expanduser().resolve())
        os.environ.pop("HEALER_DB", None)
    store = open_store()
    echo = None if quiet else sys.stderr
    pretrain = load_preset(STAGE0)
    stage0 = cached_stage0(store, pretrain)
    if stage0 is None:
        err.print("stage 0 (about 7 minutes, once): card-sum hands under a mixture of rules, so the model learns to "
                  "read the rule from the prompt", markup=False)  # fmt: skip
        stage0 = run_foreground(store, start_run(store, pretrain, None), echo)
        if stage0.status != Status.DONE:
            _stop(store, stage0)
    else:
        err.print(f"stage 0: reusing run {stage0.id} ({STAGE0}, done {stage0.finished_at})", markup=False)
    err.print(f"stage 1: ID-only SFT from run {stage0.id}@last, ID and OOD evaluated at every checkpoint", markup=False)
    stage1 = run_foreground(store, start_run(store, load_preset(STAGE1), f"{stage0.id}@last"), echo)
    if stage1.status != Status.DONE:
        _stop(store, stage1)
    out.print()
    print_run_summary(store, stage1)
    print_accuracy(report.run_detail(store, stage1))
    out.print(f"\ndatabase: {paths.db_path()}", markup=False)
    out.print(f"next: healer runs show {stage1.id}  |  healer eval samples {stage1.id}@last --split ood --wrong  |  "
              f"healer runs ls", markup=False)  # fmt: skip


def cached_stage0(store: Store, preset: Preset) -> Run | None:
    """A finished stage-0 run of exactly this preset whose last checkpoint is still on disk."""
    wanted = json.dumps(preset.spec.to_dict(), sort_keys=True)
    for run in reversed(store.runs(status=[Status.DONE])):
        checkpoints = store.checkpoints(run.id)
        same = run.name == STAGE0 and json.dumps(run.spec_dict, sort_keys=True) == wanted
        if same and checkpoints and Path(checkpoints[-1].path).is_dir():
            return run
    return None


def _stop(store: Store, run: Run) -> None:
    print_run_summary(store, run)
    raise typer.Exit(EXIT_CODES.get(Status(run.status), 1))


def register(root: App) -> None:
    root.command("demo")(demo)
