"""`healer eval`: evaluate checkpoints on the task's ID and OOD splits, and read what the evaluations kept."""

import dataclasses
import json
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from healer import queue
from healer.cli.common import (
    App,
    Column,
    WideOption,
    err,
    fail,
    fmt,
    open_reader,
    open_store,
    out,
    print_json,
    print_table,
    show_wide,
)
from healer.evals import eval_overrides
from healer.presets import RunSpec, build_spec, load_preset, starting_from, with_overrides
from healer.refs import CheckpointRef, resolve_checkpoint
from healer.store import Run, Store
from healer.store.views import eval_row, to_plain


class DefaultCommandGroup(TyperGroup):
    """`healer eval REF ...` means `healer eval run REF ...`; named subcommands (`samples`) still work."""

    default_command = "run"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


app = App(cls=DefaultCommandGroup, help="Evaluate checkpoints on ID and OOD splits (`healer eval RUN@STEP`).")

RefArgument = Annotated[
    str, typer.Argument(help="RUN (every checkpoint and the start), RUN@STEP, RUN@last|peak-ood|best-id or a directory")
]


@app.command("run")
def run_eval(
    ref: RefArgument,
    split: Annotated[str | None, typer.Option(help="comma-separated splits (default: the run's eval.splits)")] = None,
    n: Annotated[int | None, typer.Option(help="episodes per split (default: the run's task.eval_n)")] = None,
    protocol: Annotated[str | None, typer.Option(help="single, or feedback (up to eval.max_attempts tries)")] = None,
    preset: Annotated[str | None, typer.Option(help="task and eval settings for a bare directory")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="override, e.g. eval.temperature=0.7")
    ] = None,
    to_queue: Annotated[
        bool, typer.Option("--queue", help="queue an evaluation job per checkpoint for `healer worker` instead")
    ] = False,
    priority: Annotated[int, typer.Option(help="--queue: the jobs' priority")] = 0,
    wide: WideOption = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the stored evaluations as JSON")] = False,
) -> None:
    """Evaluate checkpoints now, in this process, and store accuracy with Wilson 95 % intervals (or queue them)."""
    show_wide(wide)
    store = open_store()
    targets = _targets(store, ref)
    if to_queue:
        if preset:
            fail("--preset is for a bare directory; --queue takes a run's checkpoints (RUN or RUN@STEP)")
        extra = eval_overrides(overrides or [], split, n, protocol)
        queue_jobs(store, [queue.queue_checkpoint_job(store, t, "eval", extra, priority) for t in targets], json_out)
        return
    spec = _spec(targets[0], preset, overrides or [], split, n, protocol)
    from healer.train.checkpoints import evaluate_checkpoint

    rows = []
    for target in targets:
        err.print(f"evaluating {target.label} ({target.path})", markup=False)
        rows.extend(to_plain(eval_row(e)) for e in evaluate_checkpoint(store, target, spec))
    if json_out:
        print_json(rows)
    else:
        columns = [Column("step", justify="right"), "split", Column("protocol", drop=2),
                   Column("n", justify="right", drop=3), Column("correct", justify="right", drop=3), "% [95% CI]",
                   Column("format err", justify="right", drop=1), Column("reward", justify="right", drop=1),
                   Column("loss", justify="right", drop=1)]  # fmt: skip
        print_table(columns, [_eval_cells(r) for r in rows])


def _targets(store: Store, ref: str) -> list[CheckpointRef]:
    """A run alone means its start (step 0) and every checkpoint; anything else is one checkpoint."""
    if "@" not in ref and not ref.startswith((".", "/", "~")):
        run = store.find_run(ref)
        checkpoints = store.checkpoints(run.id)
        if not checkpoints and not run.model_path:
            fail(f"run {run.id} has no checkpoints to evaluate")
        return [CheckpointRef(run, 0, run.model_path or ""), *(CheckpointRef(run, c.step, c.path) for c in checkpoints)]
    return [resolve_checkpoint(store, ref)]


def _spec(target: CheckpointRef, preset: str | None, overrides: list[str], split: str | None, n: int | None,
          protocol: str | None) -> RunSpec:  # fmt: skip
    if preset:
        spec = load_preset(preset).spec
    elif target.run is not None and target.run.kind != "eval":
        spec = build_spec(target.run.spec_dict, source=f"run {target.run.id}")
    else:
        spec = RunSpec()
    extra = eval_overrides(overrides, split, n, protocol)
    spec = with_overrides(spec, extra, source="healer eval") if extra else spec
    return starting_from(spec, target.path)


def queue_jobs(store: Store, jobs: list[Run], json_out: bool) -> None:
    """What `--queue` prints: the jobs as the queue lists them, or a line naming them and the worker."""
    if json_out:
        rows = {r.id: r for r in open_reader().queue()}
        print_json([rows[j.id] for j in jobs])
        return
    names = ", ".join(f"{j.id} ({j.name})" for j in jobs)
    out.print(f"queued {names}; `healer worker` runs {'it' if len(jobs) == 1 else 'them'}, `healer queue ls` "
              "shows where they are", markup=False)  # fmt: skip


def _eval_cells(r: dict[str, Any]) -> list[Any]:
    return [
        r["step"], r["split"], r["protocol"], r["n"], r["correct"], _acc(r), f"{r['format_error_rate']:.1%}",
        fmt(r["mean_reward"], 3), fmt(r["loss"], 4),
    ]  # fmt: skip


@app.command("samples")
def samples(
    ref: Annotated[str, typer.Argument(help="RUN@STEP (or RUN@last, RUN@peak-ood, ...)")],
    split: Annotated[str, typer.Option(help="which split's samples")] = "ood",
    protocol: Annotated[str | None, typer.Option(help="single or feedback (default: whichever was run)")] = None,
    wrong: Annotated[bool, typer.Option("--wrong", help="only the episodes that were not solved")] = False,
    limit: Annotated[int, typer.Option(help="print at most this many")] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show the completions and outcomes an evaluation kept."""
    reader = open_reader()
    target = reader.resolve_checkpoint(ref)
    if target.run is None:
        fail(f"{ref} is not a checkpoint healer has evaluated; use RUN@STEP")
    matching = [e for e in reader.evals(target.run.id) if e.step == target.step and e.split == split]
    matching = [e for e in matching if protocol is None or e.protocol == protocol]
    if not matching:
        fail(f"no {split} evaluation of {target.label}; run `healer eval {target.run.id}@{target.step}`")
    rows = reader.eval_samples(matching[0].id, wrong_only=wrong)[:limit]
    if json_out:
        print_json([{**dataclasses.asdict(s), "meta": json.loads(s.meta)} for s in rows])
        return
    for s in rows:
        out.print(f"#{s.idx} {s.outcome} (reward {fmt(s.reward, 3)}, attempts {s.attempts})", style="bold",
                  markup=False)  # fmt: skip
        out.print(f"  prompt:     {s.prompt[-200:]!r}", markup=False)
        out.print(f"  completion: {s.completion[:300]!r}", markup=False)


def print_accuracy(detail: dict[str, Any]) -> None:
    """Accuracy per checkpoint with intervals, and the named checkpoints side by side (for `runs show`)."""
    peaks = detail["peaks"]
    protocol = peaks.get("protocol", "single")
    marks: dict[int, list[str]] = {}
    for name, entry in peaks.items():
        if isinstance(entry, dict):
            marks.setdefault(entry["step"], []).append(name)
    steps: dict[int, dict[str, Any]] = {}
    for r in sorted(detail["evals"], key=lambda r: (r["step"], r["n"], r["id"])):  # as evals.by_step chooses
        if r["protocol"] == protocol:
            steps.setdefault(r["step"], {})[r["split"]] = r
    if not steps:
        return
    splits = sorted({s for by_split in steps.values() for s in by_split})
    spectra = {r["step"]: r for r in detail.get("spectra") or []}
    rotation = ["angle° (u)", "σ drift %"] if spectra else []
    out.print()
    columns = [Column("step", justify="right"), *(Column(f"{s} % [95% CI]") for s in splits),
               *(Column(f"{s} loss", justify="right", drop=3) for s in splits),
               *(Column(name, justify="right", drop=drop) for name, drop in zip(rotation, (1, 2), strict=False)),
               Column("", fold=True, min_width=8)]  # fmt: skip
    print_table(columns,
                [[step, *(_acc(by_split.get(s)) for s in splits), *(_loss((by_split.get(s) or {}).get("loss"))
                  for s in splits), *(_rotation(spectra.get(step)) if spectra else []), ", ".join(marks.get(step, []))]
                 for step, by_split in steps.items()],
                title=f"evaluations ({protocol})")  # fmt: skip
    if spectra:
        ref = next(iter(spectra.values()))["ref"]
        out.print(f"angle: mean principal angle between the top-k singular subspaces and those of {ref}, over the "
                  "projection matrices; σ drift: mean relative change of their top-k singular values",
                  markup=False)  # fmt: skip


def _rotation(row: dict[str, Any] | None) -> list[str]:
    if row is None:
        return ["", ""]
    return [f"{row['mean_angle_deg']:.2f}", f"{100 * row['sigma_rel_drift']:.2f}"]


def _loss(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _acc(r: dict[str, Any] | None) -> str:
    """Accuracy in percent with its Wilson 95 % interval, as papers print it: 17.5 [13.1, 22.9]."""
    return "" if r is None else f"{100 * r['accuracy']:.1f} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"


def register(root: App) -> None:
    root.add_typer(app, name="eval")
