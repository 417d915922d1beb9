"""The store as a rank other than the main one of a multi-process run (accelerate, torchrun) sees it."""

from __future__ import annotations

from typing import Any

from healer.store.schema import Status
from healer.store.writes import Store

WRITES = frozenset({
    "log_metrics", "add_checkpoint", "mark_pruned", "protect_checkpoint", "record_eval", "record_spectra",
    "finish_run", "heartbeat", "set_setting", "delete_setting", "requeue", "set_location", "mark_spawned",
    "create_run", "cancel", "leave_queue",
})  # fmt: skip


class FollowerStore:
    """Reads go to the run's store; writes go nowhere. Every rank executes the same training code, and TRL calls
    callbacks on every rank, so "only the main process writes" is made a property of the store a rank holds, not
    a check each call site must remember: a metric can only be written once per step."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name in WRITES:
            return _nothing
        return getattr(self._store, name)

    def mark_running(self, run_id: int, *, pid: int, host: str) -> bool:
        """Go on with the main rank (which marks the run) unless the run was cancelled before it began."""
        return self._store.run(run_id).status in (Status.QUEUED, Status.RUNNING)

    def rewind(self, run_id: int, after_step: int) -> dict[str, int]:
        return {}


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None
