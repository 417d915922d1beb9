"""`healer tui --web` serves the app to a browser on loopback only: nothing listens where another machine can reach."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from healer.store import Store
from tests.conftest import REPO, healer, wait_until

pytestmark = pytest.mark.slow

LISTEN = "0A"
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, ::1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _group(pgid: int) -> list[int]:
    """The live processes of a process group: the server and the app each browser session starts."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # not a process, or gone
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    return inodes


def _listening(inodes: set[str]) -> list[tuple[str, int]]:
    """(hex address, port) of every TCP socket in LISTEN state among these inodes, IPv4 and IPv6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == LISTEN and fields[9] in inodes:
                found.append((address, int(port, 16)))
    return found


def _external_address() -> str | None:
    """This machine's address on its default route (no packet is sent), else its hostname's; None if loopback only."""
    candidates = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, contextlib.suppress(OSError):
        udp.connect(("10.255.255.255", 1))
        candidates.append(udp.getsockname()[0])
    with contextlib.suppress(OSError):
        candidates.append(socket.gethostbyname(socket.gethostname()))
    return next((a for a in candidates if not a.startswith("127.") and a != "0.0.0.0"), None)


async def _first_screen(port: int) -> str:
    """Open a browser session's websocket and return what the app draws, until the empty store's hint appears."""
    import aiohttp

    drawn, url = "", f"http://127.0.0.1:{port}/ws?width=100&height=30"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        async with asyncio.timeout(60):
            async for message in ws:
                drawn += message.data.decode(errors="replace") if isinstance(message.data, bytes) else message.data
                if "healer demo" in drawn:
                    return drawn
    return drawn


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    db = tmp_path / "healer.db"
    Store(db).close()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HEALER_DB", "COLUMNS")}
    server = subprocess.Popen([sys.executable, "-m", "healer", "--db", str(db), "tui", "--web", "--port", str(port)],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    try:
        wait_until(lambda: _listening_on(server, port), f"healer tui --web to listen on {port}", timeout=30)
        yield server, port
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already: the assertion says why
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)  # a graceful exit also ends each session's app
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        wait_until(lambda: not _group(server.pid), "the served apps to exit", timeout=30)


def _listening_on(server: subprocess.Popen[str], port: int) -> list[tuple[str, int]]:
    if server.poll() is not None:
        raise AssertionError(f"healer tui --web exited {server.returncode}: {server.communicate()[1]}")
    return [found for found in _listening(_socket_inodes(server.pid)) if found[1] == port]


def test_web_listens_on_loopback_only(served: tuple[subprocess.Popen[str], int]) -> None:
    server, port = served
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        page = response.read().decode()
    assert response.status == 200 and "textual" in page.lower()

    drawn = asyncio.run(_first_screen(port))  # a browser session: the server starts `healer tui` for it
    assert "healer demo" in drawn, drawn[-2000:]
    sockets = set().union(*(_socket_inodes(pid) for pid in _group(server.pid)))
    bound = _listening(sockets)
    assert [p for _, p in bound] == [port]  # the app a session runs listens nowhere, and the server only on --port
    assert {address for address, _ in bound} <= LOOPBACK, bound


def test_web_refuses_other_addresses(served: tuple[subprocess.Popen[str], int]) -> None:
    _, port = served
    external = _external_address()
    if external is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try the port from")
    with pytest.raises(ConnectionRefusedError), socket.create_connection((external, port), timeout=5):
        pass


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "healer.db"
    Store(db).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = healer("--db", str(db), "tui", "--web", "--port", str(port), timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"port {port}" in result.stderr and "--port" in result.stderr and "Traceback" not in result.stderr
    for bad in (["--port", "0"], ["--port", "70000"], ["--once"]):
        refused = healer("--db", str(db), "tui", "--web", *bad, timeout=60)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
