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
from textual.containers import Vertical
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


class QueueRLDialog(ConfirmDialog):
    """`r`: pick an RL preset, its `--set` overrides and a priority; the command updates as they change."""

    def __init__(self, db: Path, run: int, step: int, presets: list[str]) -> None:
        self.run, self.step, self.presets = run, step, presets
        super().__init__(actions.queue_rl(presets[0] if presets else "?", run, step, []), db)

    def fields(self) -> ComposeResult:
        yield Label(f"from the checkpoint run {self.run}@{self.step}; preset:")
        yield Select([(p, p) for p in self.presets], value=self.presets[0], allow_blank=False, id="preset")
        yield Input(placeholder="overrides: train.lr=1e-6 train.max_steps=200", id="overrides")
        yield Input(placeholder="priority (default 0)", id="priority")

    def current(self) -> Action:
        preset = self.query_one("#preset", Select).value
        try:
            overrides = shlex.split(self.query_one("#overrides", Input).value)
        except ValueError as exc:
            raise HealerError(f"--set: {exc}") from None
        text = self.query_one("#priority", Input).value.strip()
        if text and not text.lstrip("-").isdigit():
            raise HealerError(f"--priority {text!r}: give a whole number")
        return actions.queue_rl(str(preset), self.run, self.step, overrides, int(text or 0))

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self) -> None:
        self.query_one("#dialog-error", Static).update("")
        self.refresh_command()
