"""`healer demo`: the whole loop on a CPU with the tiny model healer builds itself."""

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from healer import heal as sweep
from healer import paths, report
from healer.cli.common import App, err, open_store, out
from healer.cli.evaluate import print_accuracy
from healer.cli.heal import print_heal_table, run_sweep
from healer.cli.runs import EXIT_CODES, print_run_summary, start_run, tree
from healer.errors import HealerError
from healer.evals import by_step
from healer.presets import Preset, build_spec, load_preset
from healer.runner import run_foreground
from healer.store import Run, Status, Store

STAGE0, STAGE1, STAGE2 = "tiny-pretrain", "tiny-sft", "tiny-grpo"
# The control for stage 2: SFT continued from the same checkpoint at GRPO's learning rate and step count, so that
# "RL healed" can be told apart from "gentler training after aggressive SFT recovers a little".
CONTROL = ["train.lr=1e-4", "train.max_steps=100", "train.save_steps=25", "train.warmup_steps=5", "name='sft-control'"]


def demo(
    home: Annotated[Path | None, typer.Option(help="use this directory as $HEALER_HOME for the demo")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="do not echo the training logs")] = False,
) -> None:
    """Teach the offline tiny model to read a rule, fine-tune it on ID data only and watch OOD accuracy fall, then
    run GRPO from the OOD peak and the last checkpoint (with an SFT control) and see what it recovers."""
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
    err.print(f"stage 2: GRPO on ID prompts from run {stage1.id}@peak-ood and {stage1.id}@last (the heal sweep), and "
              "a control: SFT continued from @last at GRPO's learning rate", markup=False)  # fmt: skip
    starts = sweep.choose_starts(store, stage1, at="peak-ood,last")
    healed = run_sweep(store, stage1, load_preset(STAGE2), starts, echo)
    control = run_foreground(store, start_run(store, load_preset(STAGE1, CONTROL), f"{stage1.id}@last"), echo)
    out.print()
    print_run_summary(store, stage1)
    print_accuracy(report.run_detail(store, stage1))
    out.print()
    print_heal_table(sweep.heal_rows(store, stage1, healed), stage1)
    print_control(store, stage1, control)
    out.print()
    tree(str(stage1.id), json_out=False)
    out.print(f"\ndatabase: {paths.db_path()}", markup=False)
    out.print(f"next: healer runs show {stage1.id}  |  healer heal {stage1.id} --report  |  "
              f"healer metrics {healed[-1].id if healed else stage1.id} --lineage  |  healer eval samples "
              f"{stage1.id}@last --split ood --wrong", markup=False)  # fmt: skip
    failed = [r for r in [*healed, control] if r.status != Status.DONE]
    if failed:
        raise typer.Exit(EXIT_CODES.get(Status(failed[0].status), 1))


def print_control(store: Store, sft: Run, control: Run) -> None:
    """The control's OOD change over the same steps, beside the heal table."""
    table = by_step(store.evals(control.id), "single")
    last = max((s for s in table if s > 0), default=None)
    if control.status != Status.DONE or last is None or 0 not in table:
        out.print(f"control: run {control.id} {control.status}", markup=False)
        return
    start, end = table[0]["ood"], table[last]["ood"]
    out.print(f"control: run {control.id} {control.name}, SFT continued from {sft.id}@{control.parent_step} at lr "
              f"{control.spec_dict['train']['lr']:g} for {last} steps: OOD {100 * start.accuracy:.1f} -> "
              f"{100 * end.accuracy:.1f} ({100 * (end.accuracy - start.accuracy):+.1f} points), ID "
              f"{100 * table[last]['id'].accuracy:.1f}", markup=False)  # fmt: skip


def cached_stage0(store: Store, preset: Preset) -> Run | None:
    """A finished stage-0 run of exactly this preset whose last checkpoint is still on disk."""
    wanted = json.dumps(preset.spec.to_dict(), sort_keys=True)
    for run in reversed(store.runs(status=[Status.DONE])):
        checkpoints = store.checkpoints(run.id)
        same = run.name == STAGE0 and _normalised(run) == wanted
        if same and checkpoints and Path(checkpoints[-1].path).is_dir():
            return run
    return None


def _normalised(run: Run) -> str | None:
    """A stored spec with the defaults of keys added since it was written, so new keys do not void the cache."""
    try:
        return json.dumps(build_spec(run.spec_dict, source=f"run {run.id}").to_dict(), sort_keys=True)
    except HealerError:
        return None


def _stop(store: Store, run: Run) -> None:
    print_run_summary(store, run)
    raise typer.Exit(EXIT_CODES.get(Status(run.status), 1))


def register(root: App) -> None:
    root.command("demo")(demo)
