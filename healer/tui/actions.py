"""What the TUI's keys do to the store: each action is the CLI command it stands for, calling the same core
functions in a short write of its own (the poller never writes). Pure of Textual, so each is tested directly."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from healer import paths, queue
from healer.errors import HealerError
from healer.presets import load_rl_preset, renamed
from healer.refs import resolve_checkpoint
from healer.store import Store


@dataclass(frozen=True)
class Action:
    """A write the user confirms: the command it stands for, and how to do it (returns a one-line result)."""

    title: str
    command: str
    do: Callable[[Path], str] = field(compare=False)
    slow: bool = False  # may take seconds (a cancel waits for the process): run it off the UI thread


def queue_rl(preset: str, run: int, step: int, overrides: list[str], priority: int = 0) -> Action:
    """`r`: an RL run queued from the checkpoint RUN@STEP (`healer queue add PRESET --from RUN@STEP`)."""
    parts = ["healer", "queue", "add", preset, "--from", f"{run}@{step}"]
    parts += [x for o in overrides for x in ("--set", o)] + (["--priority", str(priority)] if priority else [])

    def do(db: Path) -> str:
        loaded = load_rl_preset(preset, overrides)
        with Store(db) as store:
            added = queue.add(store, renamed(loaded, f"{loaded.spec.name}-from-{run}@{step}"),
                              start=f"{run}@{step}", priority=priority)  # fmt: skip
        return f"queued run {added.id} ({added.name}) from run {run}@{step}"

    return Action("queue RL from this checkpoint", shlex.join(parts), do)


def keep(run: int, step: int, release: bool) -> Action:
    """`k`: protect the checkpoint from pruning, or release it (`healer runs keep RUN@STEP [--release]`)."""

    def do(db: Path) -> str:
        with Store(db) as store:
            if step == 0 or not store.protect_checkpoint(run, step, not release):
                raise HealerError(f"{run}@{step} is not a checkpoint a healer run saved; only those are ever pruned")
        return f"run {run}@{step} " + ("released: train.keep may prune it" if release else "kept: it is never pruned")

    return Action("release the checkpoint" if release else "keep the checkpoint",
                  shlex.join(["healer", "runs", "keep", f"{run}@{step}", *(["--release"] if release else [])]),
                  do)  # fmt: skip


def pause(paused: bool) -> Action:
    """`P`: pause or resume the queue (`healer queue pause|resume`)."""

    def do(db: Path) -> str:
        with Store(db) as store:
            store.set_setting(queue.PAUSED, "0" if paused else "1")
        return "queue resumed" if paused else "queue paused: workers start nothing new"

    return Action("resume the queue" if paused else "pause the queue",
                  f"healer queue {'resume' if paused else 'pause'}", do)  # fmt: skip


def retry(run: int) -> Action:
    """`R`: queue a failed or cancelled run again (`healer queue retry RUN`)."""

    def do(db: Path) -> str:
        with Store(db) as store:
            return queue.retry_run(store, store.run(run))

    return Action("retry the run", f"healer queue retry {run}", do)


def cancel(run: int) -> Action:
    """`c`: cancel a waiting run or stop a running one, SIGTERM then SIGKILL (`healer queue cancel RUN`)."""

    def do(db: Path) -> str:
        with Store(db) as store:
            return queue.cancel_run(store, store.run(run))

    return Action("cancel the run", f"healer queue cancel {run}", do, slow=True)


def priority(run: int, value: int) -> Action:
    """`+`/`-`: a waiting run's priority up or down by one (`healer queue priority RUN N`)."""

    def do(db: Path) -> str:
        with Store(db) as store:
            return queue.set_priority(store, store.run(run), value)

    return Action("change the priority", f"healer queue priority {run} {value}", do)


def heal(sft: int, preset: str, *, around: int | None = None, count: int = 5, at: str | None = None,
         overrides: list[str] = (), priority: int = 0) -> Action:  # type: ignore[assignment]  # fmt: skip
    """`h`: a heal sweep queued from the run's checkpoints, around the one under the cursor or at picks such as
    peak-ood,last (`healer heal SFT --preset P --around SFT@STEP --count N --queue`)."""
    from healer import heal as sweep

    around_ref = str(around) if around is not None else None
    picks = None if around_ref else (at or "peak-ood,last")
    where = ["--around", around_ref, "--count", str(count)] if around_ref else ["--at", str(picks)]
    parts = ["healer", "heal", str(sft), "--preset", preset, *where]
    parts += [x for o in overrides for x in ("--set", o)] + (["--priority", str(priority)] if priority else [])

    def do(db: Path) -> str:
        loaded = load_rl_preset(preset, list(overrides))
        with Store(db) as store:
            run = store.run(sft)
            starts = sweep.choose_starts(store, run, at=picks, around=around_ref, count=count)
            queued = sweep.queue_starts(store, run, loaded, starts, priority)
        steps = ", ".join(str(s.step) for s in starts)
        return f"queued runs {', '.join(str(r.id) for r in queued)}: RL from run {sft} at steps {steps}"

    return Action("queue a heal sweep", shlex.join([*parts, "--queue"]), do)


def evaluate(run: int, step: int, split: str = "", protocol: str = "") -> Action:
    """`e`: an evaluation job on the checkpoint for a worker (`healer eval RUN@STEP --split S --protocol P --queue`)."""
    from healer.evals import eval_overrides

    parts = ["healer", "eval", f"{run}@{step}", *(["--split", split] if split else []),
             *(["--protocol", protocol] if protocol else []), "--queue"]  # fmt: skip

    def do(db: Path) -> str:
        with Store(db) as store:
            target = resolve_checkpoint(store, f"{run}@{step}")
            job = queue.queue_checkpoint_job(store, target, "eval", eval_overrides([], split or None, None,
                                                                                   protocol or None))  # fmt: skip
        return f"queued job {job.id} ({job.name}); `healer worker` runs it"

    return Action("evaluate this checkpoint", shlex.join(parts), do)


def spectra(run: int, step: int, ref: str = "base", k: int | None = None) -> Action:
    """`s`: a spectra job on the checkpoint for a worker (`healer spectra measure RUN@STEP --ref R --k K --queue`)."""
    from healer.spectra import spectra_overrides

    parts = ["healer", "spectra", "measure", f"{run}@{step}", "--ref", ref, *(["--k", str(k)] if k else []), "--queue"]

    def do(db: Path) -> str:
        from healer.spectra import resolve_reference

        with Store(db) as store:
            target = resolve_checkpoint(store, f"{run}@{step}")
            resolve_reference(store, target, ref)  # a reference that does not resolve is one line now, not later
            job = queue.queue_checkpoint_job(store, target, "spectra", spectra_overrides(ref=ref, k=k))
        return f"queued job {job.id} ({job.name}); `healer worker` runs it"

    return Action("measure this checkpoint's spectra", shlex.join(parts), do)


def delete(run: int) -> Action:
    """`d`: delete a finished run, its records and its folder (`healer runs rm RUN`)."""
    from healer.retention import delete_run

    def do(db: Path) -> str:
        with Store(db) as store:
            return delete_run(store, store.run(run))

    return Action("delete the run", f"healer runs rm {run}", do)


def export_path(run: int, fmt: str) -> Path:
    """Where `E` writes by default: $HEALER_HOME/exports/table-RUN.SUFFIX."""
    from healer.export import FORMAT_SUFFIXES

    return paths.home() / "exports" / f"table-{run}{FORMAT_SUFFIXES[fmt]}"


def export_table(run: int, fmt: str = "markdown", stages: str = "base,peak-ood,sft-end,rl-end",
                 path: Path | None = None) -> Action:  # fmt: skip
    """`E`: the lineage's table for the paper (`healer export table RUN --format F --stages S -o FILE`)."""
    target = path or export_path(run, fmt)
    parts = ["healer", "export", "table", str(run), "--format", fmt, "--stages", stages, "-o", str(target)]

    def do(db: Path) -> str:
        from healer.export import STAGES, Provenance, export_to, heal_table, parse_list
        from healer.store.views import Reader

        with Reader(db) as reader:
            table = heal_table(reader, [str(run)], parse_list(stages, STAGES, "--stages"))
        if path is None:  # healer's own exports folder; a path the user gave must exist, as on the CLI
            target.parent.mkdir(parents=True, exist_ok=True)
        export_to(table, fmt, target, Provenance(str(db), shlex.join(parts)))
        return f"wrote {target} ({fmt}, {len(table.rows)} rows)"

    return Action("export the lineage's table", shlex.join(parts), do)
