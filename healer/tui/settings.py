"""The TUI's settings (theme, alarm threshold, shown panes), kept in $XDG_CONFIG_HOME/healer/tui.toml across runs."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tempfile
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PANES = ("runs", "accuracy", "rotation", "gpus")  # the panes a user may hide, in the order the file lists them
HEADER = """\
# Settings of `healer tui`, which rewrites this file (without your comments) when you change the theme or the
# shown panes there. You may edit it by hand: a bad value falls back to its default, with a warning on start.
"""


@dataclass(frozen=True)
class Settings:
    theme: str = "textual-dark"  # a name from Textual's built-in themes
    alarm_drop: float = 5.0  # forgetting alarm: OOD accuracy this many points below its peak, 0 < x <= 100
    panes: tuple[str, ...] = PANES  # the shown panes, always in PANES order

    @property
    def alarm_drop_fraction(self) -> float:
        """The threshold as runs.run_lines takes it (0.05 for 5 points): the file speaks points, the code fractions."""
        return self.alarm_drop / 100

    def shows(self, pane: str) -> bool:
        return pane in self.panes


DEFAULTS = Settings()


def config_path() -> Path:
    """$XDG_CONFIG_HOME/healer/tui.toml; the XDG spec says an unset, empty or relative value means ~/.config."""
    config = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(config) if config and Path(config).is_absolute() else Path.home() / ".config"
    return base / "healer" / "tui.toml"


def themes() -> list[str]:
    """Textual's built-in theme names, imported only when asked, so that importing this module does not load Textual."""
    from textual.theme import BUILTIN_THEMES

    return sorted(BUILTIN_THEMES)


def with_pane(settings: Settings, pane: str, shown: bool) -> Settings:
    """`settings` with `pane` shown or hidden, keeping the panes in their canonical order; hiding the last shown pane
    returns `settings` unchanged, as an empty screen is not a layout (and load would undo it)."""
    if pane not in PANES:
        raise ValueError(f"not a pane: {pane!r} (one of {', '.join(PANES)})")
    wanted = (set(settings.panes) | {pane}) if shown else (set(settings.panes) - {pane})
    if not wanted:
        return settings
    return dataclasses.replace(settings, panes=tuple(p for p in PANES if p in wanted))


def load(path: Path | None = None) -> tuple[Settings, list[str]]:
    """The settings in `path` (default config_path()) and one-line warnings; a bad file never stops the TUI, so
    every problem falls back to a default and is reported instead of raised."""
    path = path or config_path()
    shown = _shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DEFAULTS, []
    except (OSError, UnicodeDecodeError) as exc:
        return DEFAULTS, [f"{shown}: cannot be read ({exc}); using the defaults"]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return DEFAULTS, [f"{shown}: not valid TOML ({exc}); using the defaults"]
    warnings: list[str] = []
    theme = _theme(data.pop("theme", DEFAULTS.theme), warnings)
    alarm_drop = _alarm_drop(data.pop("alarm_drop", DEFAULTS.alarm_drop), warnings)
    panes = _panes(data.pop("panes", {}), warnings)
    for key in data:
        warnings.append(f"unknown key {key!r}{_hint(key, ['theme', 'alarm_drop', '[panes]'])}; ignored")
    return Settings(theme, alarm_drop, panes), [f"{shown}: {warning}" for warning in warnings]


def save(settings: Settings, path: Path | None = None) -> Path:
    """Write `settings` to `path` (default config_path()) atomically, so a crash or a second TUI never leaves half a
    file: a temporary file in the same folder, then os.replace. Returns the path written."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, scratch = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(dumps(settings))
            file.flush()
            os.fsync(file.fileno())
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return path


def dumps(settings: Settings) -> str:
    """The file's text, TOML written by hand (the standard library reads TOML but does not write it)."""
    names = textwrap.wrap(f"one of: {', '.join(themes())}", 100, initial_indent="# ", subsequent_indent="#   ")
    panes = "".join(f"{pane} = {_literal(pane in settings.panes)}\n" for pane in PANES)
    return (
        f"{HEADER}\n"
        "# the colour theme, a Textual built-in theme;\n" + "\n".join(names) + "\n"
        f"theme = {_toml_string(settings.theme)}\n\n"
        "# the forgetting alarm: flag a run whose OOD accuracy fell this many points below its peak (0 < x <= 100)\n"
        f"alarm_drop = {float(settings.alarm_drop)!r}\n\n"
        "# the panes shown: true shows a pane, false hides it\n"
        f"[panes]\n{panes}"
    )


def _theme(value: Any, warnings: list[str]) -> str:
    names = themes()
    if isinstance(value, str) and value in names:
        return value
    hint = _hint(value if isinstance(value, str) else "", names)
    warnings.append(f"theme = {_literal(value)}: not a Textual theme{hint}; using {DEFAULTS.theme}")
    return DEFAULTS.theme


def _alarm_drop(value: Any, warnings: list[str]) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and 0 < value <= 100:
        return float(value)
    default = f"{DEFAULTS.alarm_drop:g}"
    warnings.append(f"alarm_drop = {_literal(value)}: give points between 0 and 100, e.g. {default}; using {default}")
    return DEFAULTS.alarm_drop


def _panes(value: Any, warnings: list[str]) -> tuple[str, ...]:
    if not isinstance(value, dict):
        example = ", ".join(f"{pane} = true" for pane in PANES)
        warnings.append(f"panes = {_literal(value)}: give a table, [panes] with {example}; showing all panes")
        return DEFAULTS.panes
    shown = set(DEFAULTS.panes)
    for key, flag in value.items():
        if key not in PANES:
            warnings.append(f"[panes] unknown pane {key!r}{_hint(key, PANES)}; ignored")
        elif not isinstance(flag, bool):
            warnings.append(f"panes.{key} = {_literal(flag)}: give true or false; using true")
        elif not flag:
            shown.discard(key)
    if not shown:
        warnings.append("[panes] hides every pane; showing all panes")
        return DEFAULTS.panes
    return tuple(pane for pane in PANES if pane in shown)


def _hint(word: str, known: list[str] | tuple[str, ...]) -> str:
    """` (did you mean 'theme'?)` for a likely typo, else the known names, so the user always learns the fix."""
    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"


def _literal(value: Any) -> str:
    """A value as it was written in the file, so a warning quotes the user's own line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, bar DEL, which TOML forbids raw."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _shown(path: Path) -> str:
    """The path as a user would type it, with ~ for the home folder."""
    try:
        return f"~/{path.relative_to(Path.home())}"
    except ValueError:
        return str(path)
