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


def slurm_missing() -> str | None:
    """Why no Slurm cluster with accounting answers here (None when one does)."""
    import shutil

    for command in ("sbatch", "sinfo", "sacct", "scancel", "scontrol"):
        if shutil.which(command) is None:
            return f"`{command}` is not installed (.ci/slurm-up installs and starts a local cluster)"
    try:
        nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
        accounting = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Slurm does not answer ({exc}); start it with .ci/slurm-up"
    if nodes.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in nodes.stdout.split()):
        said = (nodes.stderr or nodes.stdout).strip()[:200]
        return f"no Slurm node is up (sinfo: {said}); start one with .ci/slurm-up"
    if accounting.returncode != 0:
        return f"Slurm has no accounting (sacct: {accounting.stderr.strip()[:200]}); .ci/slurm-up starts slurmdbd"
    return None


_SLURM: list[str | None] = []  # asked once per session


@pytest.fixture(autouse=True)
def slurm_cluster(request: pytest.FixtureRequest) -> None:
    """Tests marked `slurm` skip, saying why, where no cluster answers; under CI (CI=true) they fail instead, since
    .ci/run starts one: a CI that silently skipped them would prove nothing."""
    if request.node.get_closest_marker("slurm") is None:
        return
    if not _SLURM:
        _SLURM.append(slurm_missing())
    if _SLURM[0] is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must reach a Slurm cluster (.ci/run starts one with .ci/slurm-up): {_SLURM[0]}")
    pytest.skip(_SLURM[0])
