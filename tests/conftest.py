"""Every test gets its own $HEALER_HOME, so no test sees another's database, runs or models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def healer_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HEALER_HOME", str(home))
    monkeypatch.delenv("HEALER_DB", raising=False)
    return home


def healer(*args: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real `healer` command in a subprocess, as a user would, with this test's environment."""
    result = subprocess.run(
        [sys.executable, "-m", "healer", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=dict(os.environ),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"healer {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result
