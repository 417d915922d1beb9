"""Does the SQLite queue hold up under load? Claim latency with 1,000 queued jobs, and 4 metric writers at once.

Part A, claim latency: 1,000 trivial queued runs in a fresh database, mixed priorities (0-2), every 10th run
`--after` the one before it, so `queue.wait_for` skips runs whose dependency has not finished yet. One claimer
drains the queue with a real `Worker`'s own `start_ready` (paused? -> `queue.ready_runs()`, blocked runs set aside
-> `resolved_start` -> `claim` -> `mark_spawned`; only the process start is an already-finished trivial process) and
then finishes the run (done, exit 0) as a trivial job would. The timed part is `start_ready`, per job. The baseline
is the same loop on a queue one job deep (add one, claim it, finish it, repeated) in another fresh database: the
ratio of median latencies says what a deep queue costs. Then two claimer processes drain another 1,000 jobs at once;
every run must be claimed exactly once (claim() returns True 1,000 times in total, each run has attempts = 1 and
status done).

Part B, write load: 4 writer processes, each with its own Store on one database and its own run, call
`log_metrics` once per step with 8 metric names, as fast as they can for a fixed time, while a reader process
polls `metrics(run_id, after_id=...)` for every run each 0.5 s as the TUI does. Every process counts
`sqlite3.OperationalError`s that say "locked" and carries on. The baseline is one writer alone for the same time,
no reader: the ratios are the per-writer and the aggregate rows/s under load against it. After a last poll the
reader must have seen every row written.

    .venv/bin/python benchmarks/queue_load.py [--jobs 1000] [--writers 4] [--seconds 10] [--names 8]

Exits 1 if a run was claimed twice or never, the reader missed rows, or any "database is locked" error occurred;
the latency and throughput figures are a report, not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any
from unittest import mock

from healer import worker as worker_module
from healer.store import Status, Store
from healer.worker import Worker

POLL_S = 0.5  # the reader's poll period, as the TUI's
DEPENDENCY_EVERY = 10  # every 10th queued run waits (--after) for the run before it
PRIORITIES = 3  # priorities 0, 1, 2 in turn
BARRIER_TIMEOUT_S = 120.0


def ms(seconds: float) -> float:
    return seconds * 1000


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def is_locked(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc)


# -- part A: claim latency ------------------------------------------------------------------------------------------


def add_job(store: Store, index: int, after_run: int | None = None, priority: int = 0) -> int:
    """One trivial queued run; its spec matters only for `wait_for`, which reads after_run and start_ref."""
    run = store.create_run(kind="sft", method="sft", name=f"job-{index}", spec={"method": "sft", "name": "job"},
                           queued=1, priority=priority, after_run=after_run)  # fmt: skip
    return run.id


def fill_queue(store: Store, jobs: int, dependencies: bool = True) -> None:
    """`jobs` queued runs: priorities 0..2 in turn, every DEPENDENCY_EVERY-th one after the run before it."""
    previous = None
    for i in range(jobs):
        after = previous if dependencies and i % DEPENDENCY_EVERY == DEPENDENCY_EVERY - 1 else None
        previous = add_job(store, i, after_run=after, priority=i % PRIORITIES)


class Claimer:
    """A real `Worker` (CPU, one slot) whose `start_ready` claims the runs: its own selection, `resolved_start`,
    `claim` and `mark_spawned`. Only the process start is left out of the timing: `launch` hands back one trivial
    process, started once and already finished, since the time to fork `python -m healer.train` is not the queue's.
    Claims lost to another worker are counted where `Store.claim` answers False."""

    def __init__(self, store: Store, process: subprocess.Popen[bytes]) -> None:
        self.lost = 0
        claim = store.claim

        def counted(run_id: int, **columns: Any) -> bool:
            won = claim(run_id, **columns)
            self.lost += not won
            return won

        store.claim = counted  # type: ignore[method-assign]
        self.worker = Worker(store, gpus=[], max_parallel=1, say=lambda _line: None)
        self.process = process

    def next(self) -> tuple[int | None, int]:
        """Worker.start_ready for one slot: (the run it claimed or None, claims it lost on the way)."""
        lost_before = self.lost
        with mock.patch.object(worker_module, "launch", lambda *_args, **_kwargs: self.process):
            self.worker.start_ready()
        children, self.worker.children = self.worker.children, []
        return (children[0].run_ids[0] if children else None), self.lost - lost_before


def finished_process() -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process


@dataclass
class Drain:
    """What one claimer did: the runs it claimed, the latency of each claim, the claims it lost, its wall time."""

    claimed: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    lost: int = 0
    seconds: float = 0.0
    locked: int = 0


def drain(store: Store, *, alone: bool) -> Drain:
    """Claim and finish runs until the queue is empty; another claimer may hold the run a job waits for."""
    claimer = Claimer(store, finished_process())
    result = Drain()
    started = time.perf_counter()
    while True:
        begin = time.perf_counter()
        try:
            run_id, lost = claimer.next()
        except sqlite3.OperationalError as exc:
            if not is_locked(exc):
                raise
            result.locked += 1
            continue
        elapsed = time.perf_counter() - begin
        result.lost += lost
        if run_id is None:
            if not store.has_queued():
                break
            if alone:
                raise RuntimeError("queued runs left that no claimer can start")
            time.sleep(0.001)  # the other claimer holds a dependency; it finishes it at once
            continue
        result.latencies.append(elapsed)
        result.claimed.append(run_id)
        store.finish_run(run_id, Status.DONE, exit_code=0)
    result.seconds = time.perf_counter() - started
    return result


def one_deep(store: Store, reps: int) -> list[float]:
    """Claim latency with a queue one job deep: add a job, claim it, finish it, `reps` times."""
    claimer = Claimer(store, finished_process())
    latencies = []
    for i in range(reps):
        add_job(store, i)
        begin = time.perf_counter()
        run_id, _ = claimer.next()
        latencies.append(time.perf_counter() - begin)
        assert run_id is not None
        store.finish_run(run_id, Status.DONE, exit_code=0)
    return latencies


def check_claims(store: Store, jobs: int, claimed: list[int]) -> list[str]:
    """Problems with a drained queue: a run claimed twice or never, or not done."""
    problems = []
    runs = store.queue_runs()
    if len(claimed) != jobs or len(set(claimed)) != len(claimed):
        problems.append(f"claim() returned True {len(claimed)} times for {len(set(claimed))} runs; expected {jobs}")
    bad = [r.id for r in runs if r.attempts != 1 or r.status != Status.DONE]
    if len(runs) != jobs or bad:
        problems.append(f"{len(runs)} queued runs, {len(bad)} not claimed exactly once and done: {bad[:10]}")
    return problems


def claimer_process(db: str, index: int, barrier: Barrier, results: Any) -> None:
    with Store(db) as store:
        barrier.wait(BARRIER_TIMEOUT_S)
        results.put((index, drain(store, alone=False)))


def competing_drain(ctx: Any, db: Path, claimers: int) -> tuple[list[Drain], float]:
    """`claimers` processes draining one queue at once: what each did, and the wall time until all were done."""
    barrier = ctx.Barrier(claimers + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=claimer_process, args=(str(db), i, barrier, results)) for i in range(claimers)]
    for p in procs:
        p.start()
    barrier.wait(BARRIER_TIMEOUT_S)
    started = time.perf_counter()
    drains = dict(results.get() for _ in procs)
    wall = time.perf_counter() - started
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a claimer process exited with {p.exitcode}")
    return [drains[i] for i in range(claimers)], wall


def part_a(args: argparse.Namespace, tmp: Path, ctx: Any) -> tuple[list[str], list[str]]:
    """Claim latency, deep and one-deep, and the competing drain: (summary lines, problems)."""
    print(f"part A: claim latency, {args.jobs} queued jobs", flush=True)
    with Store(tmp / "baseline.db") as store:
        base = one_deep(store, args.baseline_reps)
    with Store(tmp / "claims.db") as store:
        fill_queue(store, args.jobs)
        deep = drain(store, alone=True)
        problems = check_claims(store, args.jobs, deep.claimed)
    with Store(tmp / "free.db") as store:  # the same queue without dependencies: no blocked runs to pass over
        fill_queue(store, args.jobs, dependencies=False)
        free = drain(store, alone=True).latencies

    with Store(tmp / "competing.db") as store:
        fill_queue(store, args.jobs)
    drains, wall = competing_drain(ctx, tmp / "competing.db", args.claimers)
    both = [run_id for d in drains for run_id in d.claimed]
    with Store(tmp / "competing.db") as store:
        problems += [f"{args.claimers} claimers: {p}" for p in check_claims(store, args.jobs, both)]
    locked = deep.locked + sum(d.locked for d in drains)
    if locked:
        problems.append(f"{locked} 'database is locked' errors while claiming")

    lat, base_lat = deep.latencies, base
    ratio = statistics.median(lat) / statistics.median(base_lat)
    lost = sum(d.lost for d in drains)
    shared = [x for d in drains for x in d.latencies]
    duplicates = len(both) - len(set(both))
    lines = [
        f"claim latency with {args.jobs} queued: median {ms(statistics.median(lat)):.2f} ms, "
        f"p95 {ms(percentile(lat, 95)):.2f} ms, max {ms(max(lat)):.2f} ms "
        f"(1 queued: {ms(statistics.median(base_lat)):.2f} ms median of {len(base_lat)}; ratio {ratio:.2f})",
        f"  the same {args.jobs} without --after dependencies: median {ms(statistics.median(free)):.2f} ms (ratio "
        f"{statistics.median(free) / statistics.median(base_lat):.2f}); a claim passes over the runs still waiting",
        f"  drained {len(deep.claimed)} jobs in {deep.seconds:.2f} s (claim + finish); "
        f"claimed exactly once: {len(set(deep.claimed))}/{args.jobs}",
        f"{args.claimers} competing claimers: {len(both)} claims in {wall:.2f} s "
        f"({', '.join(str(len(d.claimed)) for d in drains)}), median {ms(statistics.median(shared)):.2f} ms, "
        f"p95 {ms(percentile(shared, 95)):.2f} ms; claims lost to the other: {lost}; claimed twice: {duplicates}",
    ]
    return lines, problems


# -- part B: write load ---------------------------------------------------------------------------------------------


@dataclass
class Written:
    rows: int = 0
    steps: int = 0
    seconds: float = 0.0
    locked: int = 0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


@dataclass
class Seen:
    rows: dict[int, int]
    polls: list[float]
    locked: int = 0


def writer_process(db: str, run_id: int, names: int, seconds: float, barrier: Barrier, results: Any) -> None:
    """Log one step of `names` metrics per call, as fast as it can for `seconds`."""
    metrics = {f"train/metric_{i}": float(i) for i in range(names)}
    written = Written()
    with Store(db) as store:
        barrier.wait(BARRIER_TIMEOUT_S)
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            step = written.steps + 1
            try:
                written.rows += store.log_metrics(run_id, step, {k: v + step for k, v in metrics.items()})
            except sqlite3.OperationalError as exc:
                if not is_locked(exc):
                    raise
                written.locked += 1
                continue
            written.steps = step
        written.seconds = time.perf_counter() - started
    results.put((run_id, written))


def poll(store: Store, run_ids: list[int], last: dict[int, int], seen: Seen) -> None:
    """One TUI-like poll: the new metric rows of every run since the last id seen."""
    begin = time.perf_counter()
    for run_id in run_ids:
        try:
            rows = store.metrics(run_id, after_id=last[run_id])
        except sqlite3.OperationalError as exc:
            if not is_locked(exc):
                raise
            seen.locked += 1
            continue
        if rows:
            seen.rows[run_id] += len(rows)
            last[run_id] = max(r.id for r in rows)
    seen.polls.append(time.perf_counter() - begin)


def reader_process(db: str, run_ids: list[int], barrier: Barrier, stop: Event, results: Any) -> None:
    """Poll every POLL_S until told to stop, then once more after the writers are done."""
    seen = Seen(rows=dict.fromkeys(run_ids, 0), polls=[])
    last = dict.fromkeys(run_ids, 0)
    with Store(db) as store:
        barrier.wait(BARRIER_TIMEOUT_S)
        while not stop.wait(POLL_S):
            poll(store, run_ids, last, seen)
        poll(store, run_ids, last, seen)
    results.put(seen)


def write_load(ctx: Any, db: Path, writers: int, names: int, seconds: float, reader: bool) -> tuple[dict, Seen | None]:
    """`writers` writer processes (and a reader) on one database: {run_id: Written}, and what the reader saw."""
    with Store(db) as store:
        run_ids = [store.create_run(kind="sft", method="sft", name=f"writer-{i}", spec={}).id for i in range(writers)]
    barrier = ctx.Barrier(writers + 1 + int(reader))
    stop = ctx.Event()
    results, seen_queue = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=writer_process, args=(str(db), run_id, names, seconds, barrier, results))
        for run_id in run_ids
    ]
    if reader:
        procs.append(ctx.Process(target=reader_process, args=(str(db), run_ids, barrier, stop, seen_queue)))
    for p in procs:
        p.start()
    barrier.wait(BARRIER_TIMEOUT_S)
    written = dict(results.get() for _ in run_ids)  # every writer is done
    stop.set()
    seen = seen_queue.get() if reader else None
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a load process exited with {p.exitcode}")
    return written, seen


def part_b(args: argparse.Namespace, tmp: Path, ctx: Any) -> tuple[list[str], list[str]]:
    """One writer alone, then `args.writers` writers and a reader: (summary lines, problems)."""
    print(f"part B: 1 writer alone for {args.seconds:g} s ...", flush=True)
    alone, _ = write_load(ctx, tmp / "alone.db", 1, args.names, args.seconds, reader=False)
    print(f"part B: {args.writers} writers + 1 reader for {args.seconds:g} s ...", flush=True)
    loaded, seen = write_load(ctx, tmp / "load.db", args.writers, args.names, args.seconds, reader=True)
    assert seen is not None

    base = next(iter(alone.values()))
    total_rows = sum(w.rows for w in loaded.values())
    total_rate = sum(w.rows_per_s for w in loaded.values())
    per_writer = statistics.mean(w.rows_per_s for w in loaded.values())
    seen_rows = sum(seen.rows.values())
    locked = base.locked + sum(w.locked for w in loaded.values()) + seen.locked
    problems = []
    missed = {run_id: w.rows - seen.rows[run_id] for run_id, w in loaded.items() if w.rows != seen.rows[run_id]}
    if missed:
        problems.append(f"the reader saw {seen_rows} of {total_rows} rows written (short by run: {missed})")
    if locked:
        problems.append(f"{locked} 'database is locked' errors under write load")

    rates = ", ".join(f"{w.rows_per_s:.0f}" for w in loaded.values())
    lines = [
        f"{args.writers} writers + 1 reader: {total_rate:.0f} rows/s total ({total_rate / args.names:.0f} steps/s "
        f"of {args.names} metrics), per writer {rates} rows/s (mean {per_writer:.0f}); "
        f"database is locked errors: {locked}",
        f"  1 writer alone: {base.rows_per_s:.0f} rows/s; ratio per writer under load / alone "
        f"{per_writer / base.rows_per_s:.2f}, "
        f"aggregate / alone {total_rate / base.rows_per_s:.2f}",
        f"  reader: {seen_rows} of {total_rows} rows seen after a last poll, {len(seen.polls)} polls of "
        f"{args.writers} runs every {POLL_S:g} s, median poll {ms(statistics.median(seen.polls)):.1f} ms, "
        f"max {ms(max(seen.polls)):.1f} ms; polls longer than the {POLL_S:g} s period (a TUI would fall behind): "
        f"{sum(p > POLL_S for p in seen.polls)}",
    ]
    return lines, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="queued trivial jobs to drain (default 1000)")
    parser.add_argument("--baseline-reps", type=int, default=200, help="claims timed on a 1-deep queue (default 200)")
    parser.add_argument("--claimers", type=int, default=2, help="competing claimer processes (default 2)")
    parser.add_argument("--writers", type=int, default=4, help="metric writer processes (default 4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds each write phase lasts (default 10)")
    parser.add_argument("--names", type=int, default=8, help="metric names per step (default 8)")
    args = parser.parse_args()
    if min(args.jobs, args.baseline_reps, args.claimers, args.writers, args.names) < 1 or args.seconds <= 0:
        parser.error("every count must be >= 1 and --seconds > 0")

    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="healer-queue-load-") as tmp:
        claim_lines, claim_problems = part_a(args, Path(tmp), ctx)
        load_lines, load_problems = part_b(args, Path(tmp), ctx)
    print()
    for line in claim_lines + load_lines:
        print(line)
    print(f"total time {time.perf_counter() - started:.1f} s")
    problems = claim_problems + load_problems
    for problem in problems:
        print(f"FAIL: {problem}")
    print("FAIL" if problems else "PASS: every run claimed exactly once, every row seen, no 'database is locked'")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
