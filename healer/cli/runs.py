"""`healer run`, `healer runs ls|show` and `healer metrics`: start runs and read what they recorded."""

import dataclasses
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

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
from healer.cli.evaluate import print_accuracy
from healer.errors import HealerError
from healer.presets import Preset, load_preset, renamed, starting_from
from healer.refs import check_startable, resolve_checkpoint
from healer.runner import create_run, launch, run_foreground
from healer.store import Run, Status, Store
from healer.store.views import RunDetail, TreeNode, curve, start_label, to_plain
from healer.text import flatten, progress

app = App(help="Runs and their lineage: ls, show, tree, keep, prune, rm.")

EXIT_CODES = {Status.DONE: 0, Status.FAILED: 1, Status.CANCELLED: 130}
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
RunArgument = Annotated[str, typer.Argument(help="run id or name")]


def run(
    preset: Annotated[str, typer.Argument(help="preset file (presets/tiny-sft.toml) or name (tiny-sft)")],
    overrides: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="override a preset key, e.g. --set train.lr=1e-4")
    ] = None,
    name: Annotated[str | None, typer.Option(help="run name (default: the preset's)")] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="start from RUN@STEP, RUN@last, RUN@peak-ood or a directory"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="do not echo the run's log")] = False,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            "-d",
            help="start it in the background and return: it outlives the terminal (`healer queue "
            "logs RUN -f` follows it, `healer queue cancel RUN` stops it)",
        ),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Run a preset now, in its own subprocess, and wait for it. Ctrl-C, SIGTERM and SIGHUP (a closed terminal,
    `timeout`, a scheduler) cancel the run; --detach hands it to the background instead."""
    loaded = renamed(load_preset(preset, overrides or []), name)
    store = open_store()
    created = start_run(store, loaded, start)
    if detach:
        process = launch(store, created)
        err.print(f"run {created.id} ({created.name}) started in the background, pid {process.pid}; it goes on after "
                  f"this terminal closes. Follow it: healer queue logs {created.id} -f; stop it: healer queue cancel "
                  f"{created.id}", markup=False)  # fmt: skip
        if json_out:
            print_json(open_reader().run_detail(created.id))
        return
    err.print(f"run {created.id} ({created.name}) started; log: {created.log_path}", markup=False)
    finished = run_foreground(store, created, echo=None if quiet else sys.stderr)
    if json_out:
        print_json(open_reader().run_detail(finished.id))
    else:
        print_run_summary(store, finished)
    raise typer.Exit(EXIT_CODES.get(Status(finished.status), 1))


def start_run(store: Store, preset: Preset, start: str | None) -> Run:
    """Create the run; with a start reference, from that checkpoint, with the lineage recorded."""
    if start is None:
        return create_run(store, preset)
    ref = resolve_checkpoint(store, start)
    check_startable(ref)
    preset = dataclasses.replace(preset, spec=starting_from(preset.spec, ref.path))
    return create_run(store, preset, parent_run=ref.run.id if ref.run else None, parent_step=ref.step)


def print_run_summary(store: Store, run: Run) -> None:
    """Status, the loss curve and the checkpoints of a finished run, in a few lines."""
    out.print(f"run {run.id} {run.name}: {run.status}" + (f" ({run.reason})" if run.reason else ""), markup=False)
    loss = curve([(m.step, m.value) for m in store.metrics(run.id, "loss")])
    if loss:
        (s0, v0), (s1, v1), (sm, vm) = loss.first, loss.last, loss.min
        out.print(f"  loss {v0:.3f} (step {s0}) -> {v1:.3f} (step {s1}); lowest {vm:.3f} at step {sm}")
        out.print(f"  {loss.sparkline}")
    checkpoints = store.checkpoints(run.id)
    if checkpoints:
        steps = ", ".join(str(c.step) for c in checkpoints)
        out.print(f"  {len(checkpoints)} checkpoints (steps {steps}) in {run.out_dir}", markup=False)
    pruned = len(store.checkpoints(run.id, pruned=True)) - len(checkpoints)
    if pruned:
        out.print(f"  {pruned} older checkpoints pruned (train.keep = {run.spec_dict['train'].get('keep')!r})")


@app.command("ls")
def ls(
    show_all: Annotated[bool, typer.Option("--all", help="evaluation jobs too (`healer queue ls` has them)")] = False,
    wide: WideOption = False,
    json_out: JsonOption = False,
) -> None:
    """List runs, oldest first."""
    show_wide(wide)
    rows = open_reader().runs(jobs=show_all)
    if json_out:
        print_json(rows)
        return
    if not rows:
        err.print("no runs yet; start one with `healer run PRESET` or `healer demo`", markup=False)
        return
    columns = [Column("id", justify="right"), Column("name", cut=True), Column("kind", drop=3), Column("status"),
               Column("step", justify="right"), Column("loss", drop=1, justify="right"),
               Column("reward", drop=2, justify="right"), Column("from", drop=1),
               Column("created", drop=4)]  # fmt: skip
    print_table(
        columns,
        [[r.id, r.name, r.kind, _status(r.status, r.alive), progress(r.step, r.total_steps), fmt(r.loss),
          fmt(r.reward), r.start, _when(r.created_at)] for r in rows],
    )  # fmt: skip


def _status(status: str, alive: bool | None) -> str:
    """A running run whose process is gone reads `running (dead)` until a write records it as failed."""
    return f"{status} (dead)" if alive is False else status


def _when(timestamp: str | None) -> str:
    """An ISO time as `2026-12-03 09:35` (UTC, as stored; --json has the full value)."""
    return (timestamp or "")[:16].replace("T", " ")


@app.command("show")
def show(
    ref: RunArgument,
    spec: Annotated[bool, typer.Option("--spec", help="also the full resolved spec, one key per line")] = False,
    wide: WideOption = False,
    json_out: JsonOption = False,
) -> None:
    """Show one run: status, lineage, checkpoints, accuracy per checkpoint and last metrics (--spec: its spec)."""
    show_wide(wide)
    detail = open_reader().run_detail(ref)
    if json_out:
        print_json(detail)
        return
    _print_detail(detail, with_spec=spec)


DETAIL_FIELDS = ("status", "kind", "method", "reason", "model_path", "created_at", "started_at", "finished_at",
                 "exit_code", "host", "slurm_job", "slurm_state", "node", "out_dir", "log_path", "preset_path",
                 "healer_version", "git_commit")  # fmt: skip


def _print_detail(view: RunDetail, with_spec: bool = False) -> None:
    d = to_plain(view)
    if view.alive is False:
        d["status"] = _status(view.status, view.alive)
    out.print(f"run {d['id']}  {d['name']}", style="bold", markup=False)
    print_table([Column(""), Column("", fold=True)], [[k, d[k]] for k in DETAIL_FIELDS if d.get(k) is not None])
    if d["lineage"]:
        start = view.start
        chain = [f"run {a['id']} {a['name']}" + (f"@{a['step']}" if a["step"] is not None else "")
                 for a in d["lineage"]]  # fmt: skip
        if d["parent_step"] is None and start:
            chain[-1] = f"run {start}"
        out.print(f"lineage: {' -> '.join(chain)} -> run {d['id']}", markup=False)
    for child in d["children"]:
        start = start_label(d["id"], child["parent_step"], child["start_ref"])
        waiting = f", waiting for {child['waiting_for']}" if child["waiting_for"] else ""
        out.print(f"child: run {child['id']} {child['name']} from {start}{waiting} ({child['status']})", markup=False)
    if d["checkpoints"]:
        out.print()
        print_table(
            [Column("step", justify="right"), Column("path", fold=True), Column("kept", drop=1),
             Column("pruned", drop=2)],
            [[c["step"], c["path"], "by hand" if c["protected"] else "", _when(c["pruned_at"])]
             for c in d["checkpoints"]],
            title="checkpoints",
        )  # fmt: skip
    if d["last_metrics"]:
        out.print()
        print_table(
            ["metric", Column("step", justify="right"), Column("value", justify="right")],
            [[k, v["step"], fmt(v["value"])] for k, v in d["last_metrics"].items()],
            title="last metrics",
        )
    print_accuracy(d)
    if with_spec:
        out.print()
        print_table(["spec", Column("", fold=True)], [[k, repr(v)] for k, v in flatten(d["spec"])])
    loss = view.loss_curve
    if loss:
        out.print(f"\nloss {loss.sparkline}  {loss.first[1]:.3f} -> {loss.last[1]:.3f}")


def metrics(
    ref: RunArgument,
    name: Annotated[str | None, typer.Option("--name", "-n", help="only this metric, e.g. loss")] = None,
    with_lineage: Annotated[
        bool,
        typer.Option(
            "--lineage",
            help="the run's ancestors too, on one axis (lineage_step: parent steps, then this run's after its start), "
            "eval accuracies included as eval/SPLIT/accuracy",
        ),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Print a run's metrics: one row per (step, name), the trainer's names kept."""
    reader = open_reader()
    run = reader.find_run(ref)
    if with_lineage:
        lineage = reader.lineage_metrics(run.id, name)
        if json_out:
            print_json(lineage)
        elif lineage:
            print_table(["lineage step", "run", "step", "name", "value"],
                        [[r.lineage_step, r.run, r.step, r.name, fmt(r.value, 6)] for r in lineage])  # fmt: skip
        rows: Sequence[Any] = lineage
    else:
        rows = reader.metrics(run.id, name)
        if json_out:
            print_json(rows)
        elif rows:
            print_table(["step", "name", "value"], [[r.step, r.name, fmt(r.value, 6)] for r in rows])
    if not rows and not json_out:
        err.print(f"run {run.id} has no metrics" + (f" named {name!r}" if name else ""), markup=False)


@app.command("tree")
def tree(
    ref: Annotated[str | None, typer.Argument(help="run id or name: show the tree it belongs to")] = None,
    wide: WideOption = False,
    json_out: JsonOption = False,
) -> None:
    """Runs and the runs started from their checkpoints (RL from SFT), with the step each started from."""
    show_wide(wide)
    nodes = open_reader().tree(ref)
    if json_out:
        print_json(nodes)
        return
    if not nodes:
        err.print("no runs yet; start one with `healer run PRESET`", markup=False)
        return
    columns = [Column("run", cut=True, min_width=20), Column("method", drop=2), Column("status"),
               Column("step", justify="right", drop=3), Column("ID %", justify="right"),
               Column("OOD %", justify="right"), Column("at", justify="right", drop=1),
               Column("OOD peak", drop=1)]  # fmt: skip
    print_table(columns, [row for node in nodes for row in _tree_rows(node, "", "")])
    err.print("ID %, OOD %: at the run's last evaluated step (at); OOD peak: its best OOD, @step", markup=False)


def _tree_rows(node: TreeNode, lead: str, indent: str) -> list[list[str]]:
    """The node's row, its run drawn under its parent with the checkpoint it starts from, then its children's."""
    start = f"@{node.parent_step} " if node.parent_step is not None else ""
    if node.parent_step is None and node.start_ref and "@" in node.start_ref:
        start = f"@{node.start_ref.rsplit('@', 1)[1]} "
    last, peak = node.last_eval or {}, node.peak_ood
    row = [f"{lead}{start if lead else ''}{node.id} {node.name}", node.method, node.status,
           progress(node.step, node.total_steps), _pct(last.get("id")), _pct(last.get("ood")),
           f"@{last['step']}" if last else "", f"{100 * peak['ood']:.1f} @{peak['step']}" if peak else ""]  # fmt: skip
    rows = [row]
    children = node.children
    for i, child in enumerate(children):
        end = i == len(children) - 1
        rows += _tree_rows(child, indent + ("└─ " if end else "├─ "), indent + ("   " if end else "│  "))
    return rows


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


@app.command("keep")
def keep(
    ref: Annotated[str, typer.Argument(help="a checkpoint: RUN@STEP, RUN@peak-ood, ...")],
    release: Annotated[bool, typer.Option(help="undo: train.keep may prune it again")] = False,
) -> None:
    """Protect a checkpoint from pruning (train.keep = "last:N", `healer runs prune`)."""
    store = open_store()
    target = resolve_checkpoint(store, ref)
    if target.run is None or target.step == 0 or not store.protect_checkpoint(target.run.id, target.step, not release):
        raise HealerError(f"{ref} is not a checkpoint a healer run saved; only those are ever pruned")
    state = "released: train.keep may prune it" if release else "kept: it is never pruned"
    out.print(f"run {target.run.id}@{target.step} {state}", markup=False)


@app.command("prune")
def prune(
    ref: RunArgument,
    keep: Annotated[str | None, typer.Option(help="last:N (default: the run's train.keep)")] = None,
    dry_run: Annotated[bool, typer.Option(help="only say which checkpoints would be deleted")] = False,
) -> None:
    """Delete a run's older checkpoints now; protected ones stay (the OOD peak and other picks, the starts of runs
    from this one, checkpoints not evaluated yet or kept by hand), and their rows stay, marked pruned."""
    from healer.retention import prune as prune_run

    store = open_store(read_only=dry_run)
    run = store.find_run(ref)
    steps = prune_run(store, run.id, keep, dry_run=dry_run)
    if not steps:
        out.print(f"run {run.id}: nothing to prune", markup=False)
    elif dry_run:
        out.print(f"run {run.id}: would delete checkpoints {', '.join(map(str, steps))}", markup=False)


@app.command("rm")
def rm(
    ref: RunArgument,
    keep_files: Annotated[
        bool, typer.Option("--keep-files", help="remove the records only; its folder (checkpoints, log) stays")
    ] = False,
) -> None:
    """Delete a finished run: its metrics, checkpoints, evaluations and spectra, and the folder healer made for it.
    Never a running or queued run, nor one that other runs started from or wait for."""
    from healer.retention import delete_run

    store = open_store()
    out.print(delete_run(store, store.find_run(ref), files=not keep_files), markup=False)


def register(root: App) -> None:
    root.command("run")(run)
    root.command("metrics")(metrics)
    root.add_typer(app, name="runs")
