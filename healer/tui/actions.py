"""What the TUI's keys do to the store: each action is the CLI command it stands for, calling the same core
functions in a short write of its own (the poller never writes). Pure of Textual, so each is tested directly."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from healer import queue
from healer.errors import HealerError
from healer.presets import RL_METHODS, load_preset, renamed
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
        loaded = load_preset(preset, overrides)
        if loaded.spec.method not in RL_METHODS:
            raise HealerError(f"{loaded.path}: method = {loaded.spec.method!r}; RL from a checkpoint needs a preset "
                              f"with method = {' or '.join(map(repr, RL_METHODS))}")  # fmt: skip
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
