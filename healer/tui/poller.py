"""The TUI's one path for live data: poll the change feed, read a whole snapshot when something changed, hand it on.

It runs in a thread of its own with its own read-only connection (a `Reader` never writes, migrates or creates a
file); the app gets finished snapshots as messages and never touches the store. A locked or unreadable store keeps
the last snapshot on screen and sends a one-line notice instead.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from healer.errors import HealerError
from healer.gpus import GpuStat
from healer.store.views import Reader
from healer.tui.snapshot import Snapshot, refresh

POLL_S = 1.0
GPU_S = 3.0  # nvidia-smi is read this often (it takes tens of milliseconds; the store's feed is cheaper)


@dataclasses.dataclass(frozen=True)
class GpuReading:
    """What nvidia-smi said this time (empty on a CPU box: the panel stays hidden)."""

    stats: tuple[GpuStat, ...]


class Poller:
    """Reads snapshots of one store: `poll()` returns a new one when the feed moved or the selection changed."""

    def __init__(self, path: Path, *, immutable: bool = False, clock: Callable[[], float] = time.time,
                 gpus: Callable[[], list[GpuStat]] | None = None) -> None:  # fmt: skip
        self.gpus = gpus  # None: no GPU panel (read_gpus where nvidia-smi exists)
        self._gpus_at = -GPU_S
        self._gpus_shown: tuple[GpuStat, ...] | None = None
        self.path = path
        self.immutable = immutable
        self.clock = clock
        self.selected: int | None = None
        self.compare: frozenset[int] = frozenset()  # runs overlaid on the chart (the app sets it)
        self._reader: Reader | None = None
        self._seq = -1
        self._shown: int | None = None
        self._last: Snapshot | None = None
        self._compared: frozenset[int] = frozenset()
        self.wake = threading.Event()  # set by the app when the selection changes, so the next poll is now

    def poll(self) -> Snapshot | None:
        """One poll: None when nothing changed since the last snapshot (one indexed query on the feed)."""
        if self._reader is None:
            self._reader = Reader(self.path, immutable=self.immutable)
        reader = self._reader
        selected = self.selected
        compare = self.compare
        changes = reader.changes(self._seq) if self._last is not None else None
        if changes is not None and not changes and selected == self._shown and compare == self._compared:
            paused = reader.setting("queue.paused", "0") == "1"  # settings are not in the feed: one key read
            if self._last is None or paused == self._last.paused:
                return None
            self._last = dataclasses.replace(self._last, paused=paused)
            return self._last
        snapshot = refresh(reader, self._last, changes, selected, now=self.clock(), compare=compare)
        self._compared = compare
        self._seq, self._shown, self._last = snapshot.seq, snapshot.selected, snapshot
        if self.selected is None:
            self.selected = snapshot.selected
        return snapshot

    def poll_gpus(self) -> GpuReading | None:
        """nvidia-smi's reading when GPU_S has passed and it changed since the last one sent."""
        now = time.monotonic()
        if self.gpus is None or now - self._gpus_at < GPU_S:
            return None
        self._gpus_at = now
        stats = tuple(self.gpus())
        if stats == self._gpus_shown:
            return None
        self._gpus_shown = stats
        return GpuReading(stats)

    def run(self, send: Callable[[Snapshot | GpuReading | str], None], stop: threading.Event,
            interval: float = POLL_S) -> None:  # fmt: skip
        """Poll until `stop` is set: each new snapshot and GPU reading, or a one-line notice when a read fails, goes
        to `send`."""
        while not stop.is_set():
            reading = self.poll_gpus()
            if reading is not None:
                send(reading)
            try:
                snapshot = self.poll()
            except (sqlite3.Error, HealerError) as exc:
                send(describe(exc))
            except Exception as exc:  # a bug must not stop the view: say it, keep the last view, keep polling
                send(f"healer tui: {type(exc).__name__}: {exc}; showing the last view (please report this)")
                self._last = None  # read everything next time
            else:
                if snapshot is not None:
                    send(snapshot)
            self.wake.wait(interval)
            self.wake.clear()
        if self._reader is not None:
            self._reader.close()


def describe(exc: Exception) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"the store is busy ({text}); showing the last view"
    return f"cannot read the store: {text}; showing the last view"
