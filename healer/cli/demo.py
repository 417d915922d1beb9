"""`healer demo`: the whole loop on a CPU with the tiny model healer builds itself."""

import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TextIO

import typer

from healer import paths, queue
from healer.cli.common import App, err, open_reader, open_store, out
from healer.cli.demo_progress import Progress, Stage, minutes
from healer.cli.evaluate import print_accuracy
from healer.cli.heal import print_heal_table
from healer.cli.runs import EXIT_CODES, print_run_summary, tree
from healer.errors import HealerError
from healer.evals import by_step
from healer.presets import Preset, build_spec, load_preset, renamed
from healer.runner import reap, stop
from healer.store import Run, Status, Store
from healer.store.views import to_plain
from healer.verdicts import of_lineage

STAGE0, STAGE1, STAGE2 = "tiny-pretrain", "tiny-sft", "tiny-grpo"
# The control for stage 2: SFT continued from the same checkpoint at GRPO's learning rate and step count, so that
# "RL healed" can be told apart from "gentler training after aggressive SFT recovers a little".
PICKS = ("peak-ood", "last")  # stage 2 starts GRPO from these checkpoints of stage 1
CONTROL = ["train.lr=1e-4", "train.max_steps=100", "train.save_steps=25", "train.warmup_steps=5", "name='sft-control'"]
# `--quick`: the same stages on fewer hands and checkpoints, each checkpoint evaluated in its training process.
QUICK_EVAL = ["task.eval_n=200", "eval.jobs='inline'", "spectra.jobs='inline'"]
QUICK = {
    STAGE0: ["train.max_steps=800", "train.save_steps=800", "train.warmup_steps=30", *QUICK_EVAL],
    STAGE1: ["train.max_steps=150", "train.save_steps=50", *QUICK_EVAL],
    STAGE2: ["train.max_steps=40", "train.save_steps=20", "train.warmup_steps=2", *QUICK_EVAL],
    "control": ["train.max_steps=40", "train.save_steps=20", "train.warmup_steps=2", *QUICK_EVAL],
}
QUICK_HELP = ("a first look in under 3 minutes once stage 0 is built: 200 hands per split instead of 500 (wider "
              "intervals), fewer steps and checkpoints, the same stages and verdicts")  # fmt: skip


def demo(
    home: Annotated[Path | None, typer.Option(help="use this directory as $HEALER_HOME for the demo")] = None,
    quick: Annotated[bool, typer.Option("--quick", help=QUICK_HELP)] = False,
    seed: Annotated[
        int | None,
        typer.Option(help="the training seed of every stage (data order, sampling); the default is the presets' own"),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="print the worker's lines too")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress lines, only the results")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="print the verdicts as JSON on stdout (the tables go to stderr)")
    ] = False,
    open_tui: Annotated[
        bool, typer.Option("--open-tui", help="open `healer tui` on the demo's store at the end")
    ] = False,
) -> None:
    """Teach the offline tiny model to read a rule, fine-tune it on ID data only and watch OOD accuracy fall, then
    run GRPO from the OOD peak and the last checkpoint (with an SFT control) and see what it recovers. Every stage
    goes through the queue: the runs wait for the checkpoints they start from, each checkpoint's evaluation is a
    job, and a worker runs them all, one subprocess each."""
    if home is not None:
        os.environ["HEALER_HOME"] = str(home.expanduser().resolve())
        os.environ.pop("HEALER_DB", None)
    if open_tui and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise HealerError("--open-tui needs a terminal; run `healer tui` on the store once the demo is done")
    if open_tui and json_out:
        raise HealerError("--open-tui and --json do not go together: the TUI takes the terminal that JSON would fill")
    lock = one_demo_at_a_time()  # noqa: F841  (held until the process ends)
    if json_out:
        out.file = sys.stderr  # stdout carries the JSON document only
    store = open_store()
    seeded = [] if seed is None else [f"seed={seed}"]

    def preset(name: str, *extra: str, part: str | None = None) -> Preset:
        return load_preset(name, [*extra, *(QUICK[part or name] if quick else []), *seeded])

    stage0 = cached_stage0(store, load_preset(STAGE0, seeded))
    if stage0 is None and quick:
        stage0 = cached_stage0(store, preset(STAGE0))
    plan, stages = [], []
    if stage0 is None:
        stage0 = queue.add(store, preset(STAGE0))
        plan.append(f"run {stage0.id} {STAGE0} (stage 0, once): card-sum hands under a mixture of rules, so the model "
                    "learns to read the rule from the prompt")  # fmt: skip
        stages.append(Stage(0, "teach the model to read the rule", [stage0.id]))
    else:
        err.print(f"stage 0: reusing run {stage0.id} ({STAGE0}, done {stage0.finished_at})", markup=False)
    stage1 = queue.add(store, preset(STAGE1), start=f"{stage0.id}@last")
    how = "evaluated in the run" if quick else "queued as a job"
    plan.append(f"run {stage1.id} {STAGE1} (stage 1): ID-only SFT from run {stage0.id}@last, each checkpoint's ID "
                f"and OOD evaluation and rotation {how}")  # fmt: skip
    healed = [queue.add(store, _from(preset(STAGE2), pick), start=f"{stage1.id}@{pick}") for pick in PICKS]
    plan += [f"run {r.id} {r.name} (stage 2): GRPO on ID prompts from run {stage1.id}@{pick}, picked once run "
             f"{stage1.id} and its evaluations are done" for r, pick in zip(healed, PICKS, strict=True)]  # fmt: skip
    control = queue.add(store, preset(STAGE1, *CONTROL, part="control"), start=f"{stage1.id}@last")
    plan.append(f"run {control.id} {control.name} (stage 2, the control): SFT continued from run {stage1.id}@last "
                "at GRPO's learning rate for as many steps")  # fmt: skip
    stages += [Stage(1, "ID-only SFT, every checkpoint's ID and OOD accuracy and rotation", [stage1.id]),
               Stage(2, "GRPO from the OOD peak and the last checkpoint, and the SFT control",
                     [*(r.id for r in healed), control.id])]  # fmt: skip
    progress = Progress(store, stages, say=lambda line: None if quiet else _stamped(line))
    err.print("queued:\n  " + "\n  ".join(plan), markup=False)
    if not quiet:
        err.print(f"about {minutes(progress.total_estimate())} on 2 CPU cores"
                  + (" (--quick: 200 hands per split, so wider intervals)" if quick else ""), markup=False)  # fmt: skip
    work_through(store, {stage0.id, stage1.id, *(r.id for r in healed), control.id}, verbose, progress.tick)

    stage0, stage1 = store.run(stage0.id), store.run(stage1.id)
    healed, control = [store.run(r.id) for r in healed], store.run(control.id)
    for run in (stage0, stage1):
        if run.status != Status.DONE:
            _stop(store, run)
    out.print()
    print_run_summary(store, stage1)
    reader = open_reader()
    print_accuracy(to_plain(reader.run_detail(stage1.id)))
    out.print()
    print_heal_table(reader.heal_sweep(stage1.id, [r.id for r in healed]))
    print_control(store, stage1, control)
    edited = surgery(store, stage1)
    out.print()
    tree(str(stage1.id), json_out=False)
    verdicts = of_lineage(open_reader(), stage1.id, [r.id for r in healed], control.id, edited.id)
    items = "200 items per split, --quick: wider intervals" if quick else "500 items per split"
    out.print(f"\nwhat this run showed of the paper's claims (Wilson 95 % intervals, McNemar's test on the same items; "
              f"{items}):", markup=False)  # fmt: skip
    for verdict in verdicts:
        out.print(f"  {verdict.line()}", markup=False)
    if json_out:
        runs = {"stage0": stage0.id, "stage1": stage1.id, "rl": [r.id for r in healed], "control": control.id,
                "edit": edited.id}  # fmt: skip
        sys.stdout.write(json.dumps({"database": str(paths.db_path()), "quick": quick, "runs": runs,
                                     "verdicts": [v.to_json() for v in verdicts]}, indent=2) + "\n")  # fmt: skip
    out.print(f"\ndatabase: {paths.db_path()}", markup=False)
    out.print("watch it: healer tui   (←/→ walk the checkpoints, r RL from here, 4 the queue, ? the keys, q quits)",
              markup=False)  # fmt: skip
    out.print(f"for the paper: healer export table {stage1.id} -o heal.tex  |  healer export sweep {stage1.id} "
              f"--format markdown  |  healer export figure accuracy {stage1.id} -o accuracy.pdf  |  healer export "
              f"spectra {stage1.id}", markup=False)  # fmt: skip
    out.print(f"next: healer queue ls --all  |  healer runs show {stage1.id}  |  healer heal {stage1.id} --report  |  "
              f"healer spectra show {stage1.id}  |  healer runs show {edited.id}  |  healer eval samples "
              f"{stage1.id}@last --split ood --wrong", markup=False)  # fmt: skip
    if open_tui:
        from healer.tui.app import HealerApp
        from healer.tui.settings import load

        HealerApp(paths.db_path(), select=stage1.id, settings=load()[0], save_settings=True).run()
    failed = [r for r in [*healed, control] if r.status != Status.DONE]
    if failed:
        raise typer.Exit(EXIT_CODES.get(Status(failed[0].status), 1))


def one_demo_at_a_time() -> TextIO:
    """An exclusive lock on $HEALER_HOME/demo.lock for this process's life (the OS drops it when the process ends, a
    crash included): a second demo in the same home is one line naming the first, not two workers on one queue."""
    path = paths.home() / "demo.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HealerError(f"{path.parent}: cannot create the demo's home ({error.strerror}); give --home a "
                          "directory you can write") from None  # fmt: skip
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise HealerError(f"a demo is already running in {paths.home()} (pid {pid}); wait for it, or stop it with "
                          f"Ctrl-C in its terminal (kill -INT {pid})") from None  # fmt: skip
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def work_through(store: Store, runs: set[int], verbose: bool, tick: Callable[[], None] | None = None) -> None:
    """A worker for the demo's runs and their evaluation jobs (not for other runs in the queue), until all are done;
    its own lines only with `verbose`. Ctrl-C cancels the run in progress."""
    from healer.worker import Worker, parse_gpus

    gpus = parse_gpus("auto")
    say = _stamped if verbose else (lambda line: None)
    worker = Worker(store, gpus, max(1, len(gpus)), exit_when_idle=True, say=say, scope=runs, tick=tick)
    worker.run()
    if not worker.stopping:
        return
    for child in worker.children:  # Ctrl-C: the demo's runs end with it, none is left for a later worker
        stop(child.process)
        for run_id in child.run_ids:
            reap(store, run_id, child.process.returncode, cancelled=True)
    for run in store.queued_runs():
        if worker.in_scope(run):
            store.finish_run(run.id, Status.CANCELLED, exit_code=None, reason="the demo was interrupted")
    err.print("demo interrupted; its runs are cancelled", markup=False)
    raise typer.Exit(130)


def _stamped(line: str) -> None:
    err.print(f"{time.strftime('%H:%M:%S')} {line}", markup=False)


def _from(preset: Preset, pick: str) -> Preset:
    return renamed(preset, f"{preset.spec.name}-from-{pick}")


def surgery(store: Store, sft: Run) -> Run:
    """The paper's edit: the last checkpoint with the OOD peak's top singular vectors put back, evaluated."""
    from healer import edits
    from healer.refs import resolve_checkpoint
    from healer.spectral.edit import Plan

    last, peak = resolve_checkpoint(store, f"{sft.id}@last"), resolve_checkpoint(store, f"{sft.id}@peak-ood")
    top = build_spec(sft.spec_dict, source=f"run {sft.id}").spectra.k
    out_dir = paths.home() / "edits" / f"{sft.id}-last-top{top}-from-{peak.step}"
    shutil.rmtree(out_dir, ignore_errors=True)  # a rerun of the demo writes it again
    run = edits.edit_checkpoint(store, last, peak, Plan("vectors", top=top), out_dir, say=lambda line: None)
    edited = by_step(edits.evaluate_edit(store, run), "single")[0]
    before = by_step(store.evals(sft.id), "single")[last.step]
    out.print(f"edit: run {run.id}, {sft.id}@{last.step} with the top-{top} singular vectors of every projection "
              f"taken from {sft.id}@{peak.step} (the OOD peak): ID {100 * before['id'].accuracy:.1f} -> "
              f"{100 * edited['id'].accuracy:.1f}, OOD {100 * before['ood'].accuracy:.1f} -> "
              f"{100 * edited['ood'].accuracy:.1f}", markup=False)  # fmt: skip
    return run


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
