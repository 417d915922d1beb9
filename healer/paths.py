"""Where healer keeps its data: everything derives from home(), set by $HEALER_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home() -> Path:
    """$HEALER_HOME, or the per-user data directory (e.g. ~/.local/share/healer)."""
    explicit = os.environ.get("HEALER_HOME")
    if explicit:
        return Path(explicit).expanduser().resolve()
    return Path(platformdirs.user_data_dir("healer", appauthor=False))


def db_path() -> Path:
    """$HEALER_DB if set (the CLI's --db sets it), else home()/healer.db."""
    explicit = os.environ.get("HEALER_DB")
    if explicit:
        return Path(explicit).expanduser().resolve()
    return home() / "healer.db"


def runs_dir() -> Path:
    """Per-run folders (log file, checkpoints) live under here."""
    return home() / "runs"


def models_dir() -> Path:
    """Models healer builds itself (the offline tiny model) live under here."""
    return home() / "models"


def expand(path: str) -> str:
    """Expand `{home}` and `~` in a path written in a preset; nothing else is interpreted."""
    return os.path.expanduser(path.replace("{home}", str(home())))
