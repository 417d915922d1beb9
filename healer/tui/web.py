"""`healer tui --web`: the same app in a browser (textual-serve), on loopback only, for an SSH tunnel."""

from __future__ import annotations

import errno
import shlex
import socket
import sys
from pathlib import Path

from healer.errors import HealerError

HOST = "127.0.0.1"  # never 0.0.0.0: the app can queue and cancel runs, and textual-serve has no login


def command(db: Path, arguments: list[str]) -> str:
    """The shell command textual-serve starts for each browser session: this healer's `tui` on this store."""
    return shlex.join([sys.executable, "-m", "healer", "--db", str(db), "tui", *arguments])


def check_port(port: int) -> None:
    """A port that is out of range, taken or forbidden is a one-line error now, not a traceback from aiohttp."""
    if not 0 < port < 65536:
        raise HealerError(f"--port {port}: give a port between 1 and 65535, e.g. 8000")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: a TIME_WAIT port is free
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            problem = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror})"
            raise HealerError(f"port {port} on {HOST} {problem}; pick another with --port") from None


def serve(db: Path, port: int, arguments: list[str]) -> None:
    """Serve `healer tui ARGUMENTS` on http://127.0.0.1:PORT until Ctrl-C; each browser tab gets its own app."""
    check_port(port)
    from textual_serve.server import Server  # aiohttp and jinja2: loaded only when serving

    url = f"http://{HOST}:{port}"
    print(f"serving healer tui on {url} (loopback only; from your laptop: ssh -L {port}:{HOST}:{port} "
          f"{socket.gethostname()}, then open that URL)", file=sys.stderr, flush=True)  # fmt: skip
    Server(command(db, arguments), host=HOST, port=port, title="healer", public_url=url).serve()
