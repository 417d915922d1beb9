"""Confirm dialogs for the TUI's actions: each shows the command it stands for, does it on `enter`, and shows the
CLI's one-line error inside the dialog (writing nothing) when the input is bad."""

from __future__ import annotations

import shlex
import sqlite3
import tomllib
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static

from healer.errors import HealerError
from healer.presets import RL_METHODS, available_presets
from healer.tui import actions
from healer.tui.actions import Action


def rl_presets() -> list[str]:
    """The presets an RL run can be queued from (method grpo or rloo), by name."""
    names = []
    for path in available_presets():
        try:
            method = tomllib.loads(path.read_text()).get("method")
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if method in RL_METHODS:
            names.append(path.stem)
    return names


def field(label: str, widget: Input | Select[str]) -> Horizontal:
    """A labelled one-line field: the label names the CLI option the widget fills."""
    return Horizontal(Label(label, classes="field-label"), widget, classes="field")


class ConfirmDialog(ModalScreen[str | None]):
    """`enter` does the action, `escape` leaves; the result line comes back to the app."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_none", "cancel"),
        Binding("enter", "confirm", "confirm", priority=True),
    ]

    def __init__(self, action: Action, db: Path) -> None:
        super().__init__()
        self.action_to_do = action
        self.db = db

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.action_to_do.title, id="dialog-title")
            yield from self.fields()
            yield Static(f"$ {self.action_to_do.command}", id="dialog-command")
            yield Static("", id="dialog-error")
            yield Static("enter: do it · escape: cancel", id="dialog-keys")

    def fields(self) -> ComposeResult:
        yield from ()

    def current(self) -> Action:
        return self.action_to_do

    def refresh_command(self) -> None:
        try:
            self.query_one("#dialog-command", Static).update(f"$ {self.current().command}")
        except HealerError as exc:
            self.query_one("#dialog-error", Static).update(f"error: {exc}")

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    def action_confirm(self) -> None:
        try:
            action = self.current()
        except HealerError as exc:
            self.query_one("#dialog-error", Static).update(f"error: {exc}")
            return
        if action.slow:
            self.query_one("#dialog-error", Static).update("working …")
            self.run_slow(action)
            return
        self.finish(action)

    def finish(self, action: Action) -> None:
        try:
            result = action.do(self.db)
        except (HealerError, sqlite3.Error) as exc:
            self.query_one("#dialog-error", Static).update(f"error: {exc}")
            return
        self.dismiss(result)

    @work(thread=True, exclusive=True, group="action")
    def run_slow(self, action: Action) -> None:
        try:
            result = action.do(self.db)
        except (HealerError, sqlite3.Error) as exc:
            self.app.call_from_thread(self.query_one("#dialog-error", Static).update, f"error: {exc}")
            return
        self.app.call_from_thread(self.dismiss, result)


class ChangingDialog(ConfirmDialog):
    """A dialog with fields: the command shown follows them as they change, and errors clear."""

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self) -> None:
        self.query_one("#dialog-error", Static).update("")
        self.refresh_command()

    def text(self, selector: str) -> str:
        return self.query_one(selector, Input).value.strip()

    def choice(self, selector: str) -> str:
        return str(self.query_one(selector, Select).value)

    def number(self, selector: str, option: str, default: int | None) -> int | None:
        text = self.text(selector)
        if text and not text.lstrip("-").isdigit():
            raise HealerError(f"{option} {text!r}: give a whole number")
        return int(text) if text else default


class RLDialog(ChangingDialog):
    """The fields an RL run takes: a preset, `--set` overrides and a priority."""

    def __init__(self, action: Action, db: Path, presets: list[str]) -> None:
        self.presets = presets
        super().__init__(action, db)

    def rl_fields(self) -> ComposeResult:
        yield field("preset", Select([(p, p) for p in self.presets], value=self.presets[0], allow_blank=False,
                                     id="preset"))  # fmt: skip
        yield field("--set", Input(placeholder="train.lr=1e-6 train.max_steps=200", id="overrides"))
        yield field("priority", Input(placeholder="0", id="priority"))

    def overrides(self) -> list[str]:
        try:
            return shlex.split(self.query_one("#overrides", Input).value)
        except ValueError as exc:
            raise HealerError(f"--set: {exc}") from None


class QueueRLDialog(RLDialog):
    """`r`: pick an RL preset, its `--set` overrides and a priority; the command updates as they change."""

    def __init__(self, db: Path, run: int, step: int, presets: list[str]) -> None:
        self.run, self.step = run, step
        super().__init__(actions.queue_rl(presets[0] if presets else "?", run, step, []), db, presets)

    def fields(self) -> ComposeResult:
        yield Label(f"from the checkpoint run {self.run}@{self.step}")
        yield from self.rl_fields()

    def current(self) -> Action:
        return actions.queue_rl(self.choice("#preset"), self.run, self.step, self.overrides(),
                                self.number("#priority", "--priority", 0) or 0)  # fmt: skip


class HealDialog(RLDialog):
    """`h`: a heal sweep from the run's checkpoints, around the one under the cursor (--count of them) or at picks."""

    def __init__(self, db: Path, run: int, step: int, presets: list[str]) -> None:
        self.run, self.step = run, step
        super().__init__(actions.heal(run, presets[0] if presets else "?", around=step), db, presets)

    def fields(self) -> ComposeResult:
        yield Label(f"RL from checkpoints of run {self.run}")
        picks = [(f"around {self.run}@{self.step}", "around"), ("peak-ood, last", "peak-ood,last"),
                 ("peak-ood", "peak-ood"), ("last", "last")]  # fmt: skip
        yield field("start at", Select(picks, value="around", allow_blank=False, id="where"))
        yield field("count", Input(placeholder="5 (checkpoints around it)", id="count"))
        yield from self.rl_fields()

    def current(self) -> Action:
        where = self.choice("#where")
        count = self.number("#count", "--count", 5) or 5
        around, at = (self.step, None) if where == "around" else (None, where)
        priority = self.number("#priority", "--priority", 0) or 0
        return actions.heal(self.run, self.choice("#preset"), around=around, count=count, at=at,
                            overrides=self.overrides(), priority=priority)  # fmt: skip


class EvalDialog(ChangingDialog):
    """`e`: evaluate the checkpoint again, on some splits and under a protocol (a job for a worker)."""

    def __init__(self, db: Path, run: int, step: int) -> None:
        self.run, self.step = run, step
        super().__init__(actions.evaluate(run, step), db)

    def fields(self) -> ComposeResult:
        yield Label(f"the checkpoint run {self.run}@{self.step}, as a job for `healer worker`")
        yield field("splits", Select([("the run's splits", ""), ("id", "id"), ("ood", "ood"), ("id and ood", "id,ood")],
                                     value="", allow_blank=False, id="split"))  # fmt: skip
        yield field("protocol", Select([("the run's protocol", ""), ("single attempt", "single"),
                                        ("feedback (the paper's)", "feedback")], value="", allow_blank=False,
                                       id="protocol"))  # fmt: skip

    def current(self) -> Action:
        return actions.evaluate(self.run, self.step, self.choice("#split"), self.choice("#protocol"))


class SpectraDialog(ChangingDialog):
    """`s`: measure the checkpoint's singular-vector rotation against a reference (a job for a worker)."""

    def __init__(self, db: Path, run: int, step: int) -> None:
        self.run, self.step = run, step
        super().__init__(actions.spectra(run, step), db)

    def fields(self) -> ComposeResult:
        yield Label(f"the checkpoint run {self.run}@{self.step}, as a job for `healer worker`")
        yield field("reference", Select([("base (the lineage's first model)", "base"),
                                         ("start (where its run started)", "start"),
                                         ("parent@peak-ood (the paper's)", "parent@peak-ood")], value="base",
                                        allow_blank=False, id="ref"))  # fmt: skip
        yield field("k", Input(placeholder="the run's spectra.k (top-k subspaces)", id="k"))

    def current(self) -> Action:
        k = self.number("#k", "--k", None)
        if k is not None and k < 1:
            raise HealerError("--k must be at least 1")
        return actions.spectra(self.run, self.step, self.choice("#ref"), k)


class ExportDialog(ChangingDialog):
    """`E`: the lineage's table for the paper, in a format, with its stages, to a file (`healer export table`)."""

    def __init__(self, db: Path, run: int, stages: str) -> None:
        self.run, self.stages = run, stages
        super().__init__(actions.export_table(run, "markdown", stages), db)

    def fields(self) -> ComposeResult:
        yield Label(f"the table of run {self.run}'s lineage, every number with its checkpoint")
        yield field("format", Select([("Markdown", "markdown"), ("LaTeX (booktabs)", "latex"), ("CSV", "csv"),
                                      ("JSON", "json")], value="markdown", allow_blank=False, id="format"))  # fmt: skip
        yield field("stages", Input(value=self.stages, id="stages"))
        yield field("-o", Input(placeholder=str(actions.export_path(self.run, "markdown")), id="path"))

    def current(self) -> Action:
        fmt = self.choice("#format")
        path = self.text("#path")
        self.query_one("#path", Input).placeholder = str(actions.export_path(self.run, fmt))
        return actions.export_table(self.run, fmt, self.text("#stages"), Path(path).expanduser() if path else None)
