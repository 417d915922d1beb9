"""Every test gets its own $HEALER_HOME and $XDG_CONFIG_HOME, so no test sees another's database, runs, models or
TUI settings (nor the user's own)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@pytest.fixture(autouse=True)
def healer_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HEALER_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("HEALER_DB", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)  # captured output is whole, whatever terminal runs the suite
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


def wait_until(condition: Callable[[], T], what: str, timeout: float = 180, poll: float = 0.2) -> T:
    """Poll `condition` until it returns something truthy, and return it; fail naming `what` after `timeout` s.
    Tests wait on a condition (a row, a status, an exit), never a fixed sleep, so a loaded machine only slows them."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(poll)


def live_processes(in_cmdline: bytes, in_environ: str) -> list[int]:
    """Pids of live processes whose command line holds `in_cmdline` and whose environment holds `in_environ`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if in_cmdline in cmdline and in_environ.encode() in environ:
            found.append(int(proc.name))
    return [pid for pid in found if not process_gone(pid)]


def process_gone(pid: int) -> bool:
    """Whether no live process (zombies count as gone) has this pid."""
    from healer.store import pid_alive

    return not pid_alive(pid)
