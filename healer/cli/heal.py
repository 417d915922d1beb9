"""`healer heal`: RL from several checkpoints of one SFT run, and the table of what each recovered."""

import sys
from typing import Annotated, Any, TextIO

import typer

from healer import heal as sweep
from healer.cli.common import (
    App,
    Column,
    WideOption,
    err,
    open_reader,
    open_store,
    out,
    print_json,
    print_table,
    show_wide,
)
from healer.cli.runs import start_run
from healer.errors import HealerError
from healer.presets import Preset, load_rl_preset
from healer.refs import check_startable
from healer.runner import run_foreground
from healer.store import Run, Status, Store
from healer.store.views import HealSweep, to_plain


def heal(
    sft_run: Annotated[str, typer.Argument(help="the SFT run (id or name) whose checkpoints RL starts from")],
    preset: Annotated[str | None, typer.Option("--preset", "-p", help="the RL preset (method grpo or rloo)")] = None,
    at: Annotated[
        str | None, typer.Option(help="start points, comma-separated: peak-ood, best-id, loss-pick, last, or steps")
    ] = None,
    around: Annotated[str | None, typer.Option(help="start from --count checkpoints centred on this one")] = None,
    count: Annotated[int, typer.Option(help="how many checkpoints --around takes")] = 5,
    steps: Annotated[str | None, typer.Option(help="start from these steps, e.g. 100,200,300")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="override a key of the RL preset, e.g. --set train.lr=1e-4")
    ] = None,
    report_only: Annotated[
        bool, typer.Option("--report", help="run nothing: print the table for the RL runs already started from it")
    ] = False,
    to_queue: Annotated[
        bool, typer.Option("--queue", help="queue the RL runs for `healer worker` instead of running them now")
    ] = False,
    priority: Annotated[int, typer.Option(help="--queue: the runs' priority")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="echo each RL run's log")] = False,
    wide: WideOption = False,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Start RL from chosen checkpoints of an SFT run, one after another, and report how much OOD each recovered.

    The default start points are the SFT run's OOD peak and its last checkpoint (--at peak-ood,last).
    """
    show_wide(wide)
    if report_only:
        print_heal_table(open_reader().heal_sweep(sft_run), json_out)
        return
    store = open_store()
    sft = store.find_run(sft_run)
    if preset is None:
        raise HealerError("heal needs the RL preset: --preset presets/tiny-grpo.toml (or --report to only read)")
    loaded = load_rl_preset(preset, overrides or [])
    starts = sweep.choose_starts(store, sft, at=at, around=around, count=count, steps=steps)
    if to_queue:
        queued = sweep.queue_starts(store, sft, loaded, starts, priority)
        if json_out:
            rows = {r.id: r for r in open_reader().queue()}
            print_json([rows[r.id] for r in queued])
        else:
            out.print(f"queued runs {', '.join(str(r.id) for r in queued)}; `healer heal {sft.id} --report` "
                      "prints the table once they are done", markup=False)  # fmt: skip
        return
    finished = run_sweep(store, sft, loaded, starts, echo=sys.stderr if verbose else None)
    print_heal_table(open_reader().heal_sweep(sft.id, [r.id for r in finished]), json_out)
    statuses = {Status(r.status) for r in finished}
    code = 130 if Status.CANCELLED in statuses else (0 if statuses <= {Status.DONE} else 1)
    raise typer.Exit(code)


def run_sweep(store: Store, sft: Run, preset: Preset, starts: list[sweep.Start], echo: TextIO | None) -> list[Run]:
    """RL from each start point, one after another in the foreground; Ctrl-C cancels the current one and stops."""
    for start in starts:
        check_startable(start.ref)  # every start point is checked before the first run begins
    finished: list[Run] = []
    for i, start in enumerate(starts, 1):
        labels = f" ({', '.join(start.labels)})" if start.labels else ""
        created = start_run(store, sweep.named(preset, start), f"{sft.id}@{start.step}")
        err.print(f"heal {i}/{len(starts)}: run {created.id} {created.name} from run {sft.id}@{start.step}{labels}; "
                  f"log: {created.log_path}", markup=False)  # fmt: skip
        run = run_foreground(store, created, echo=echo)
        finished.append(run)
        err.print(f"heal {i}/{len(starts)}: run {run.id} {run.status}" + (f" ({run.reason})" if run.reason else ""),
                  markup=False)  # fmt: skip
        if run.status == Status.CANCELLED:
            err.print("heal: cancelled; the remaining start points were not run", markup=False)
            break
    return finished


def print_heal_table(view: HealSweep, json_out: bool = False) -> None:
    if json_out:
        print_json(view.rows)
        return
    rows = to_plain(view.rows)
    if not rows:
        err.print(f"no RL runs started from run {view.sft_run} yet; run `healer heal {view.sft_run} --preset PRESET`",
                  markup=False)  # fmt: skip
        return
    peak = view.ood_peak
    title = f"heal: RL from checkpoints of run {view.sft_run} {view.sft_name}"
    if peak:
        where = "the model it started from" if peak["step"] == 0 else f"step {peak['step']}"
        title += f"; its OOD peak: {100 * peak['ood']:.1f} at {where}"
    columns = [
        Column("start", fold=True, min_width=12),
        Column("id", justify="right", drop=5),
        Column("ood", justify="right"),
        Column("run", justify="right"),
        Column("status", drop=2),
        Column("id after", justify="right", drop=5),
        Column("ood after", justify="right"),
        Column("Δ id", justify="right", drop=4),
        Column("Δ ood", justify="right"),
        Column("ood flips", justify="right", drop=3),
        Column("recovered", justify="right", drop=1),
    ]
    print_table(
        columns,
        [[" ".join([f"{r['start']['run']}@{r['start']['step']}", *r["start"]["labels"]]), _pct(r["start"], "id"),
          _pct(r["start"], "ood"), r["rl_run"], r["status"], _pct(r["after"], "id"), _pct(r["after"], "ood"),
          _points(r["delta_id"]), _points(r["delta_ood"]), _flips(r["flips_ood"]), _recovered(r)] for r in rows],
        title=title,
    )  # fmt: skip
    out.print("Accuracies in %, `after` = the RL run's last evaluated checkpoint; Δ in points; flips = OOD items "
              "wrong→right / right→wrong; recovered = Δ ood / (OOD peak − start ood).", markup=False)  # fmt: skip


def _pct(side: dict[str, Any] | None, split: str) -> str:
    if not side or split not in side:
        return ""
    e = side[split]
    return f"{100 * e['accuracy']:.1f} [{100 * e['ci_low']:.1f}, {100 * e['ci_high']:.1f}]"


def _points(delta: float | None) -> str:
    return "" if delta is None else f"{100 * delta:+.1f}"


def _flips(f: dict[str, int] | None) -> str:
    return "" if f is None else f"+{f['gained']}/−{f['lost']}"


def _recovered(row: dict[str, Any]) -> str:
    if row["recovered"] is not None:
        return f"{100 * row['recovered']:.0f} %"
    return "nothing lost" if row["lost"] is not None and row["lost"] <= 0 else ""


def register(root: App) -> None:
    root.command("heal")(heal)
