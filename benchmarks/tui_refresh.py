"""How fast does the TUI refresh on a big store while a run trains? One incremental poll against a cold full load.

A store of 20 runs (8 SFT roots, one of them running on another host with no heartbeat yet and selected in the TUI;
10 GRPO runs started from their checkpoints, one from the running run's; an edit run; an evaluation job queued on the
running run's last checkpoint), 1,000,000 metric rows (loss, learning_rate, grad_norm, reward; wall time going up),
checkpoints every 50 steps with an ID and an OOD evaluation each (general_points, protocol single, n = 234) and
spectra readings (28 layers x 7 modules x 2 sides) every 1,000 steps, is built with raw `executemany` in a schema that
`healer.store.Store` creates by its migrations (the builder helpers of benchmarks/read_views.py).

The TUI's data path is `healer.tui.poller.Poller`: `poll()` asks the change feed whether anything moved and, if so,
builds a whole `healer.tui.snapshot.Snapshot` with `take(reader, selected)`. Timed, in one process:

  cold start     a new Poller, `selected` set to the running run, to its first `poll()` returning a snapshot (the
                 Reader's connection opened on the way); median of --repeat, the OS page cache warm;
  full load      `take()` on an open Reader: the baseline, timed in every round next to the incremental poll, on the
                 same state of the store, in alternating order;
  idle poll      `poll()` when nothing changed (returns None: one indexed query on the feed); median and p95;
  incremental    a writer (its own `Store(path)` connection) adds what a training run adds each "second": one step
                 of 4 metrics for the running run, and every 10 steps a checkpoint and its two evaluations
                 (`Store.add_checkpoint`, `Store.record_eval`); then one `poll()`, which must return the new
                 snapshot. Write and poll alternate in one thread (no contention); median and p95 over --rounds;
  concurrent     the same writer in a thread of its own, a step every --write-every seconds, while this thread
                 polls every 20 ms: every poll that returns a snapshot is timed (a real writer's lock and the GIL).

Then where an incremental poll's time goes: each part of `take()` on its own (median of --repeat), and cProfile's top
8 functions by cumulative time of one incremental poll (the profiler inflates Python-heavy parts).

Goals: p95 of a poll (idle and incremental) under 50 ms, a cold start under 2 s.

    .venv/bin/python benchmarks/tui_refresh.py [--small] [--repeat 5] [--rounds 30] [--db PATH] [--keep]

--small: the same 20 runs with 50,000 metric rows and spectra every 250 steps (a smoke run, under 20 s).
--db PATH: build the store there, or reuse it if it exists (each run of the script adds rows to the running run).
It always exits 0: the goal lines are a report, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import random
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from read_views import (
    BASE_TIME,
    CHECKPOINT_COLUMNS,
    EVAL_COLUMNS,
    METRIC_COLUMNS,
    MODULES,
    REMOTE_HOST,
    RUN_COLUMNS,
    SPEC,
    SPECTRA_COLUMNS,
    SPECTRA_K,
    ckpt_path,
    insert,
    iso,
    verdict,
    wilson,
)

from healer.errors import HealerError
from healer.store import Store
from healer.store.views import Reader
from healer.tui.poller import Poller
from healer.tui.snapshot import Snapshot, lineage, take

GOAL_POLL_MS = 50.0
GOAL_COLD_S = 2.0
NAMES = ("loss", "learning_rate", "grad_norm", "reward")
N_SFT, N_GRPO = 8, 10  # runs 1-8 and 9-18; 19 is an edit run, 20 an evaluation job
RUNNING = N_SFT  # the SFT root that is training now (the newest)
CHECKPOINT_EVERY = 50  # in the built store
WRITE_CHECKPOINT_EVERY = 10  # the writer's checkpoints (each with an ID and an OOD evaluation)
EVAL_N = 234
LAYERS = 28  # spectra rows per reading: 28 layers x 7 modules x 2 sides = 392
ALL_RUN_COLUMNS = (*RUN_COLUMNS, "params")


@dataclass(frozen=True)
class Size:
    metrics: int
    spectra_every: int  # a spectra reading at every checkpoint whose step is a multiple of this


FULL = Size(metrics=1_000_000, spectra_every=1000)
SMALL = Size(metrics=50_000, spectra_every=250)


# -- the store ------------------------------------------------------------------------------------------------------


def plan_runs(size: Size) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The 20 runs (every column), and the steps each training run has logged."""
    training = list(range(1, N_SFT + N_GRPO + 1))
    steps_each = max(CHECKPOINT_EVERY * 2, size.metrics // len(training) // len(NAMES))
    steps = {r: steps_each + (r <= size.metrics // len(NAMES) - steps_each * len(training)) for r in training}

    def at(parent: int, fraction: float) -> int:
        return max(CHECKPOINT_EVERY, int(steps[parent] * fraction) // CHECKPOINT_EVERY * CHECKPOINT_EVERY)

    runs: dict[int, dict[str, Any]] = {}
    for run_id in range(1, N_SFT + 1):
        runs[run_id] = {"kind": "sft", "method": "sft", "name": f"sft-{run_id}", "queued": 1,
                        "status": "running" if run_id == RUNNING else "failed" if run_id == 3 else "done"}  # fmt: skip
    for k, run_id in enumerate(range(N_SFT + 1, N_SFT + N_GRPO + 1)):
        parent = RUNNING if k == N_GRPO - 1 else 1 + k % (N_SFT - 1)  # the last one from the running run
        step = at(parent, 0.5 if parent == RUNNING else 0.2 + 0.2 * (k % 4))
        runs[run_id] = {"kind": "rl", "method": "grpo", "name": f"grpo-{run_id}", "queued": 1, "parent_run": parent,
                        "parent_step": step, "model_path": ckpt_path(parent, step),
                        "status": ("done", "done", "cancelled", "done", "failed")[k % 5]}  # fmt: skip
    edit_step = at(2, 0.6)
    runs[19] = {"kind": "edit", "method": "edit", "name": f"edit-2@{edit_step}", "status": "done", "queued": 0,
                "parent_run": 2, "parent_step": edit_step, "model_path": "/data/healer/edits/00019",
                "params": json.dumps({"checkpoint": f"2@{edit_step}", "ref": "2@0", "top": 8,
                                      "modules": list(MODULES)})}  # fmt: skip
    job_step = steps[RUNNING] // CHECKPOINT_EVERY * CHECKPOINT_EVERY
    runs[20] = {"kind": "eval", "method": "eval", "name": f"eval {RUNNING}@{job_step}", "status": "queued",
                "queued": 1, "parent_run": RUNNING, "parent_step": job_step,
                "model_path": ckpt_path(RUNNING, job_step)}  # fmt: skip

    rows = []
    for run_id, run in sorted(runs.items()):
        status, n_steps = run["status"], steps.get(run_id, 0)
        created = BASE_TIME + timedelta(hours=8 * (run_id - 1))
        started = created + timedelta(seconds=60) if status != "queued" else None
        finished = started + timedelta(seconds=1.5 * n_steps + 30) if status not in ("running", "queued") else None
        total = 2 * n_steps if status == "running" else n_steps if run["kind"] in ("sft", "rl") else None
        on_worker = run["queued"] and status != "queued"
        row = {c: None for c in ALL_RUN_COLUMNS} | {
            "id": run_id, "spec": SPEC, "created_at": iso(created), "priority": 0, "attempts": int(bool(on_worker)),
            "model_path": "Qwen/Qwen2.5-0.5B-Instruct", "healer_version": "0.1.0", "git_commit": "8b885a2",
            "out_dir": f"/data/healer/runs/{run_id:05d}", "log_path": f"/data/healer/runs/{run_id:05d}/run.log",
            "preset_path": f"presets/{run['kind']}.toml", "started_at": iso(started) if started else None,
            "finished_at": iso(finished) if finished else None, "total_steps": total,
            "exit_code": {"done": 0, "failed": 1, "cancelled": 130}.get(status),
            "reason": {"failed": "CUDA out of memory", "cancelled": "cancelled by the user"}.get(status),
        }  # fmt: skip
        row.update({k: v for k, v in run.items() if k in ALL_RUN_COLUMNS})
        if status != "queued":  # on another host, no heartbeat yet: alive by the views' rules, nothing to reap
            row.update(host=REMOTE_HOST, pid=10_000 + run_id, heartbeat=None)
        if on_worker:
            row.update(worker=f"{REMOTE_HOST}:4242", assigned_gpus=str(run_id % 8))
        rows.append(row)
    return rows, steps


def metric_rows(runs: list[dict[str, Any]], steps: dict[int, int], rng: random.Random) -> list[tuple[Any, ...]]:
    """Every training run's rows, step by step, 4 names a step, wall time going up 1.5 s a step."""
    rows: list[tuple[Any, ...]] = []
    for run in runs:
        run_id = run["id"]
        if run_id not in steps:
            continue
        t0 = datetime.fromisoformat(run["started_at"]).timestamp()
        for step in range(1, steps[run_id] + 1):
            decay = math.exp(-step / 3000)
            wall = t0 + 1.5 * step
            rows += [(run_id, step, "loss", 0.2 + 2.0 * decay + 0.05 * rng.random(), wall),
                     (run_id, step, "learning_rate", 1e-5 * (1 - step / (2 * steps[run_id])), wall),
                     (run_id, step, "grad_norm", 0.5 + rng.random(), wall),
                     (run_id, step, "reward", 0.8 - 0.6 * decay + 0.1 * rng.random(), wall)]  # fmt: skip
    return rows


def checkpoint_rows(runs: list[dict[str, Any]], steps: dict[int, int]) -> list[tuple[Any, ...]]:
    """Every 50 steps; finished runs keep every 500th and their last three, the others marked pruned."""
    rows = []
    for run in runs:
        run_id = run["id"]
        if run_id not in steps:
            continue
        started = datetime.fromisoformat(run["started_at"])
        every = list(range(CHECKPOINT_EVERY, steps[run_id] + 1, CHECKPOINT_EVERY))
        for step in every:
            pruned = run["status"] != "running" and step % 500 and step < every[-1] - 2 * CHECKPOINT_EVERY
            created = iso(started + timedelta(seconds=1.5 * step))
            rows.append((run_id, step, ckpt_path(run_id, step), 0, created, created if pruned else None))
    return rows


def eval_summary(run_id: int, step: int, split: str, progress: float, rng: random.Random) -> dict[str, Any]:
    """One evaluation as `Store.record_eval` takes it (tests/test_tui.py `_eval`): ID rises, OOD rises then falls."""
    mean = 0.3 + 0.5 * progress if split == "id" else 0.25 + 0.3 * math.sin(math.pi * min(1.0, progress))
    correct = max(0, min(EVAL_N, round(EVAL_N * (mean + 0.05 * (rng.random() - 0.5)))))
    low, high = wilson(correct, EVAL_N)
    return {"run_id": run_id, "step": step, "checkpoint_path": ckpt_path(run_id, step) if step else None,
            "task": "general_points", "split": split, "protocol": "single", "max_attempts": 1, "n": EVAL_N,
            "correct": correct, "accuracy": correct / EVAL_N, "ci_low": low, "ci_high": high,
            "format_error_rate": 0.02 * rng.random(), "mean_reward": None, "loss": 1.5 - progress + 0.1 * rng.random(),
            "outcomes": "{}", "settings": "{}", "seconds": 30 + 10 * rng.random()}  # fmt: skip


def eval_rows(checkpoints: list[tuple[Any, ...]], steps: dict[int, int], rng: random.Random) -> list[tuple[Any, ...]]:
    """An ID and an OOD evaluation at every checkpoint, and the edit run's at its step 0."""
    rows = []
    for run_id, step, _, _, created, _ in checkpoints:
        for split in ("id", "ood"):
            summary = eval_summary(run_id, step, split, step / steps[run_id], rng) | {"created_at": created}
            rows.append(tuple(summary[c] for c in EVAL_COLUMNS))
    for split in ("id", "ood"):
        summary = eval_summary(19, 0, split, 0.7, rng) | {"created_at": iso(BASE_TIME + timedelta(days=7))}
        rows.append(tuple(summary[c] for c in EVAL_COLUMNS))
    return rows


def spectra_rows(runs: list[dict[str, Any]], checkpoints: list[tuple[Any, ...]], every: int,
                 rng: random.Random) -> list[tuple[Any, ...]]:  # fmt: skip
    """A reading (28 layers x 7 modules x 2 sides) at every checkpoint whose step is a multiple of `every`, against
    the run's start: its parent's checkpoint, or its own step 0."""
    by_id = {r["id"]: r for r in runs}
    blobs = [array("f", sorted(rng.uniform(0, 20) for _ in range(SPECTRA_K))).tobytes() for _ in range(16)]
    drifts = [array("f", [rng.uniform(-0.01, 0.01) for _ in range(SPECTRA_K)]).tobytes() for _ in range(16)]
    settings = json.dumps({"k": SPECTRA_K, "method": "auto", "modules": list(MODULES), "reference_path": "x"})
    rows: list[tuple[Any, ...]] = []
    for run_id, step, _, _, created, _ in checkpoints:
        if step % every:
            continue
        run = by_id[run_id]
        ref_run, ref_step = (run["parent_run"], run["parent_step"]) if run["parent_step"] else (run_id, 0)
        for layer in range(LAYERS):
            for module in MODULES:
                block = "self_attn" if module in ("q", "k", "v", "o") else "mlp"
                for side in ("u", "v"):
                    mean = rng.uniform(1, 15)
                    rows.append((run_id, step, f"{ref_run}@{ref_step}", ref_run, ref_step,
                                 f"model.layers.{layer}.{block}.{module}_proj.weight", layer, module, side,
                                 SPECTRA_K, 896, 0, mean, mean * 0.9, mean * 2.5, mean / 20, mean / 80,
                                 rng.uniform(0, 0.02), 0.3, 0.5, 0.2, 0.05, "fast", 0.1, blobs[len(rows) % 16],
                                 drifts[len(rows) % 16], 0.05, settings, created))  # fmt: skip
    return rows


def build(store: Store, size: Size) -> None:
    """Fill an empty store, one transaction per table; prints what it wrote and how long each table took."""
    conn = store.conn
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB for this connection: the indexes build in memory
    rng = random.Random(0)
    started = time.perf_counter()
    runs, steps = plan_runs(size)
    metrics = metric_rows(runs, steps, rng)
    checkpoints = checkpoint_rows(runs, steps)
    evals = eval_rows(checkpoints, steps, rng)
    spectra = spectra_rows(runs, checkpoints, size.spectra_every, rng)
    print(f"  generated the rows in {time.perf_counter() - started:.1f} s", flush=True)
    for table, columns, rows in (("runs", ALL_RUN_COLUMNS, [tuple(r[c] for c in ALL_RUN_COLUMNS) for r in runs]),
                                 ("checkpoints", CHECKPOINT_COLUMNS, checkpoints), ("metrics", METRIC_COLUMNS, metrics),
                                 ("evals", EVAL_COLUMNS, evals), ("spectra", SPECTRA_COLUMNS, spectra)):  # fmt: skip
        begin = time.perf_counter()
        insert(conn, table, columns, rows)
        print(f"  {table:12s} {len(rows):9,d} rows in {time.perf_counter() - begin:5.1f} s", flush=True)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def running_run(conn: sqlite3.Connection) -> int:
    """The selected run: the running SFT run (read from the store, so that a reused --db works too)."""
    row = conn.execute("SELECT id FROM runs WHERE status = 'running' AND kind = 'sft' ORDER BY id LIMIT 1").fetchone()
    if row is None:
        raise SystemExit("the store has no running SFT run: build a fresh one (drop --db)")
    return row[0]


class Writer:
    """What a training run writes, through a `Store` of its own: one step of 4 metrics a call, and every 10 steps a
    checkpoint with an ID and an OOD evaluation."""

    def __init__(self, path: Path, run_id: int, seed: int = 1) -> None:
        self.store = Store(path)
        self.run_id = run_id
        self.rng = random.Random(seed)
        step, wall = self.store.conn.execute("SELECT MAX(step), MAX(wall_time) FROM metrics WHERE run_id = ?",
                                             [run_id]).fetchone()  # fmt: skip
        self.step, self.wall = step or 0, wall or time.time()
        total = self.store.conn.execute("SELECT total_steps FROM runs WHERE id = ?", [run_id]).fetchone()[0]
        self.total = total or 2 * self.step

    def write(self) -> str:
        """One step; returns what it wrote: "metrics" or "checkpoint" (the metrics, a checkpoint and 2 evals)."""
        self.step += 1
        self.wall += 1.0
        decay = math.exp(-self.step / 3000)
        self.store.log_metrics(self.run_id, self.step, {"loss": 0.2 + 2.0 * decay + 0.05 * self.rng.random(),
                                                        "learning_rate": 1e-5 * (1 - self.step / (2 * self.total)),
                                                        "grad_norm": 0.5 + self.rng.random(),
                                                        "reward": 0.8 - 0.6 * decay}, wall_time=self.wall)  # fmt: skip
        if self.step % WRITE_CHECKPOINT_EVERY:
            return "metrics"
        self.store.add_checkpoint(self.run_id, self.step, ckpt_path(self.run_id, self.step))
        for split in ("id", "ood"):
            self.store.record_eval(eval_summary(self.run_id, self.step, split, self.step / self.total, self.rng), [])
        return "checkpoint"

    def close(self) -> None:
        self.store.close()


# -- timing ---------------------------------------------------------------------------------------------------------


def clock(fn: Callable[[], Any]) -> tuple[float, Any]:
    begin = time.perf_counter()
    value = fn()
    return time.perf_counter() - begin, value


def p95(seconds: list[float]) -> float:
    """The 95th percentile by nearest rank, in seconds."""
    ordered = sorted(seconds)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Stat:
    label: str
    seconds: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000 if self.seconds else math.nan

    @property
    def p95_ms(self) -> float:
        return p95(self.seconds) * 1000 if self.seconds else math.nan


def new_poller(path: Path, selected: int) -> Poller:
    poller = Poller(path, clock=time.time)
    poller.selected = selected
    return poller


def close_poller(poller: Poller) -> None:
    reader = getattr(poller, "_reader", None)  # Poller.run closes it when stopped; these are never run
    if reader is not None:
        reader.close()


def first_poll(path: Path, selected: int) -> Snapshot:
    poller = new_poller(path, selected)
    try:
        snapshot = poller.poll()
    finally:
        close_poller(poller)
    if snapshot is None or snapshot.selected != selected or snapshot.lineage is None:
        raise SystemExit(f"the first poll did not return a snapshot of run {selected}")
    return snapshot


def cold_starts(path: Path, selected: int, repeat: int) -> Stat:
    """A new Poller (and so a new Reader connection) to its first snapshot, after one warm-up."""
    first_poll(path, selected)
    return Stat("cold start: new Poller to its first snapshot", [clock(lambda: first_poll(path, selected))[0]
                                                                  for _ in range(repeat)])  # fmt: skip


def idle_polls(poller: Poller, count: int) -> Stat:
    times = []
    for _ in range(count):
        elapsed, snapshot = clock(poller.poll)
        if snapshot is not None:
            raise SystemExit("an idle poll returned a snapshot: something else writes to the store")
        times.append(elapsed)
    return Stat("idle poll (nothing changed: None)", times)


def alternating_rounds(poller: Poller, writer: Writer, full: Reader, selected: int,
                       rounds: int) -> tuple[dict[str, list[float]], list[float]]:  # fmt: skip
    """Write one step, then time the poll that returns its snapshot and a full `take()` on the same state (in
    alternating order); one warm-up round first. Returns the poll times by what was written, and the full loads."""
    polls: dict[str, list[float]] = {"metrics": [], "checkpoint": []}
    fulls: list[float] = []
    poller.poll()  # settle: the poller has shown everything so far
    seq = full.seq()
    for i in range(rounds + 1):
        what = writer.write()

        def poll(i: int = i, seq: int = seq) -> tuple[float, Snapshot]:
            elapsed, snapshot = clock(poller.poll)
            if snapshot is None or snapshot.seq <= seq:
                raise SystemExit(f"round {i}: the poll after a write returned no new snapshot")
            return elapsed, snapshot

        if i % 2 == 0:
            (poll_s, snapshot), (full_s, _) = poll(), clock(lambda: take(full, selected))
        else:
            (full_s, _), (poll_s, snapshot) = clock(lambda: take(full, selected)), poll()
        seq = snapshot.seq
        if i:
            polls[what].append(poll_s)
            fulls.append(full_s)
    return polls, fulls


def concurrent_rounds(path: Path, poller: Poller, selected: int, rounds: int,
                      write_every: float) -> tuple[Stat, Stat, int, int]:  # fmt: skip
    """A writer thread (its own Store) writes a step every `write_every` s; this thread polls every 20 ms until
    `rounds` polls returned a snapshot. Returns those polls, the idle ones, the notices (busy, unreadable) and the
    steps written."""
    stop, ready = threading.Event(), threading.Event()
    written = [0]
    failure: list[BaseException] = []

    def writer_loop() -> None:
        writer = Writer(path, selected, seed=2)
        ready.set()
        try:
            while not stop.is_set():
                writer.write()
                written[0] += 1
                stop.wait(write_every)
        except BaseException as exc:  # report it in the main thread
            failure.append(exc)
        finally:
            writer.close()

    poller.poll()
    thread = threading.Thread(target=writer_loop, name="writer", daemon=True)
    thread.start()
    ready.wait()
    snapshots: list[float] = []
    idle: list[float] = []
    notices = 0
    deadline = time.monotonic() + max(60.0, rounds * (write_every + 2))
    try:
        while len(snapshots) < rounds and time.monotonic() < deadline and not failure:
            try:
                elapsed, snapshot = clock(poller.poll)
            except (sqlite3.Error, HealerError):
                notices += 1
            else:
                (idle if snapshot is None else snapshots).append(elapsed)
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join()
    if failure:
        raise SystemExit(f"the writer thread failed: {failure[0]!r}")
    return (Stat("concurrent: poll that returns a snapshot", snapshots),
            Stat("concurrent: poll with nothing new", idle), notices, written[0])  # fmt: skip


def parts(reader: Reader, selected: int, repeat: int) -> list[Stat]:
    """Each part of `take()` on its own, median of `repeat` after one warm-up."""
    tree = tuple(reader.tree())
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("seq()", reader.seq),
        ("tree()", reader.tree),
        ("runs(jobs=True)", lambda: reader.runs(jobs=True)),
        ("queue()", reader.queue),
        ("setting(queue.paused)", lambda: reader.setting("queue.paused", "0")),
        (f"lineage({selected}): all of it", lambda: lineage(reader, selected, tree)),
        (f"  lineage_metrics({selected})", lambda: reader.lineage_metrics(selected)),
        (f"  eval_table({selected})", lambda: reader.eval_table(selected)),
        (f"  checkpoints([{selected}])", lambda: reader.checkpoints([selected])),
        (f"  spectra({selected})", lambda: reader.spectra(selected)),
    ]
    result = []
    for label, fn in calls:
        fn()
        result.append(Stat(label, [clock(fn)[0] for _ in range(repeat)]))
    return result


def profile_poll(poller: Poller, writer: Writer, want: str, top: int = 8) -> list[str]:
    """cProfile of one incremental poll after a write of kind `want` ("metrics": a step; "checkpoint": a step, a
    checkpoint and 2 evaluations): the top functions by cumulative time, then by their own time (what the cumulative
    list's callers spend it on)."""
    poller.poll()
    while writer.write() != want:
        poller.poll()
    profiler = cProfile.Profile()
    snapshot = profiler.runcall(poller.poll)
    if snapshot is None:
        return ["(the profiled poll returned no snapshot)"]
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (primitive calls, calls, own s, cumulative s, callers)}
    root = str(Path(__file__).resolve().parents[1]) + os.sep
    stdlib = str(Path(os.__file__).parent) + os.sep
    total = max(v[3] for v in stats.values())
    lines = []
    for title, column in (("cumulative", 3), ("own", 2)):
        lines.append(f"  {f'by {title} time':18s}{'cum ms':>8s} {'own ms':>8s} {'calls':>9s}  function")
        for (file, line, name), (_, calls, own, cum, _) in sorted(stats.items(), key=lambda kv: -kv[1][column])[:top]:
            place = f"{file.replace(root, '').replace(stdlib, '')}:{line}({name})" if line else name
            lines.append(f"  {'':18s}{cum * 1000:8.1f} {own * 1000:8.1f} {calls:9,d}  {place}")
    lines.append(f"  (one poll under the profiler: {total * 1000:.0f} ms)")
    return lines


def row(stat: Stat, goal: str = "", p95_too: bool = True) -> str:
    p95_text = f"{stat.p95_ms:9.2f}" if p95_too else f"{'-':>9s}"
    return f"{stat.label:52s} {stat.median_ms:9.2f} {p95_text} {len(stat.seconds):4d}  {goal}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a smoke run: 50k metric rows, spectra every 250 steps")
    parser.add_argument("--repeat", type=int, default=5, help="cold starts and part timings (default 5)")
    parser.add_argument("--rounds", type=int, default=30, help="write-then-poll rounds, and concurrent snapshots")
    parser.add_argument("--idle", type=int, default=50, help="idle polls (default 50)")
    parser.add_argument("--write-every", type=float, default=0.1, help="the concurrent writer's step period, s")
    parser.add_argument("--no-concurrent", action="store_true", help="skip the concurrent-writer variant")
    parser.add_argument("--db", type=Path, help="build the store here, or reuse it if it exists")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store (its path is printed)")
    args = parser.parse_args()
    if min(args.repeat, args.rounds, args.idle) < 1:
        parser.error("--repeat, --rounds and --idle must be >= 1")
    size = SMALL if args.small else FULL
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="healer-tui-refresh-"))
    path = args.db.expanduser().resolve() if args.db else work / "healer.db"
    reuse = path.exists()
    try:
        with Store(path) as store:
            if reuse:
                print(f"reusing {path}", flush=True)
            else:
                print(f"building {path} (20 runs, {size.metrics:,d} metric rows, spectra every "
                      f"{size.spectra_every} steps) ...", flush=True)  # fmt: skip
                begin = time.perf_counter()
                build(store, size)
                print(f"built in {time.perf_counter() - begin:.1f} s", flush=True)
            one = lambda sql: store.conn.execute(sql).fetchone()[0]  # noqa: E731
            counts = {t: one(f"SELECT COUNT(*) FROM {t}") for t in ("runs", "checkpoints", "metrics", "evals",
                                                                     "spectra")}  # fmt: skip
            selected = running_run(store.conn)
        print("store: " + ", ".join(f"{n:,d} {t}" for t, n in counts.items()) + f"; selected: running run {selected}")

        writer = Writer(path, selected)  # open all along, as a training run's: the Reader sees a -wal file
        full = Reader(path)
        poller = new_poller(path, selected)
        try:
            snapshot = first_poll(path, selected)
            assert snapshot.lineage is not None
            rotation = sum(len(v) for v in snapshot.lineage.rotation.values())
            print(f"the selected run's view: {len(snapshot.lineage.loss):,d} loss points, "
                  f"{len(snapshot.lineage.points):,d} evaluated checkpoints, {rotation:,d} spectra rows; "
                  f"{len(snapshot.rows)} run rows, {len(snapshot.queue)} queue rows", flush=True)  # fmt: skip
            print(f"timing cold starts ({args.repeat}) ...", flush=True)
            cold = cold_starts(path, selected, args.repeat)
            print(f"timing {args.rounds} write-then-poll rounds, each with a full take() ...", flush=True)
            polls, fulls = alternating_rounds(poller, writer, full, selected, args.rounds)
            print(f"timing {args.idle} idle polls ...", flush=True)
            idle = idle_polls(poller, args.idle)
            concurrent = None
            if not args.no_concurrent:
                print(f"timing polls against a writer thread (a step every {args.write_every:g} s) ...", flush=True)
                concurrent = concurrent_rounds(path, poller, selected, args.rounds, args.write_every)
                step, wall = writer.store.conn.execute("SELECT MAX(step), MAX(wall_time) FROM metrics WHERE run_id = ?",
                                                       [selected]).fetchone()  # fmt: skip
                writer.step, writer.wall = step, wall  # this writer goes on after the thread's steps
            print("timing the parts of take() and profiling one incremental poll ...", flush=True)
            part_stats = parts(full, selected, args.repeat)
            profiles = {want: profile_poll(poller, writer, want) for want in ("metrics", "checkpoint")}
        finally:
            close_poller(poller)
            full.close()
            writer.close()
    finally:
        if args.keep or args.db:
            print(f"store kept: {path}")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    incremental = Stat("incremental poll + snapshot (all rounds)", polls["metrics"] + polls["checkpoint"])
    only_metrics = Stat("  rounds with one step of 4 metrics", polls["metrics"])
    with_checkpoint = Stat("  rounds with a checkpoint and 2 evaluations too", polls["checkpoint"])
    full_load = Stat("full load: take() on an open Reader (same rounds)", fulls)
    poll_goal = f"p95 < {GOAL_POLL_MS:g} ms: "
    print(f"\n{'measure':52s} {'median ms':>9s} {'p95 ms':>9s} {'n':>4s}  goal")
    print(row(cold, f"< {GOAL_COLD_S:g} s: {verdict(cold.median_ms / 1000, GOAL_COLD_S)}", p95_too=False))
    print(row(full_load))
    print(row(idle, poll_goal + verdict(idle.p95_ms, GOAL_POLL_MS)))
    print(row(incremental, poll_goal + verdict(incremental.p95_ms, GOAL_POLL_MS)))
    print(row(only_metrics))
    print(row(with_checkpoint))
    if concurrent is not None:
        hot, quiet, notices, written = concurrent
        print(row(hot, poll_goal + verdict(hot.p95_ms, GOAL_POLL_MS)))
        print(row(quiet))
        print(f"  (the writer thread wrote {written} steps; {notices} polls failed busy or unreadable)")
    print(
        f"ratio full load / incremental poll (medians): {full_load.median_ms / incremental.median_ms:.2f}; "
        f"cold start / incremental poll: {cold.median_ms / incremental.median_ms:.2f}"
    )
    print(f"goals: p95 of a poll < {GOAL_POLL_MS:g} ms: idle {verdict(idle.p95_ms, GOAL_POLL_MS)}, incremental "
          f"{verdict(incremental.p95_ms, GOAL_POLL_MS)}; cold start < {GOAL_COLD_S:g} s: "
          f"{verdict(cold.median_ms / 1000, GOAL_COLD_S)}")  # fmt: skip

    print(f"\nwhere a snapshot's time goes: the parts of take(), median of {args.repeat} (the same reader)")
    for stat in part_stats:
        print(f"  {stat.label:42s} {stat.median_ms:9.2f} ms")
    for want, what in (("metrics", "a step of 4 metrics"), ("checkpoint", "a step, a checkpoint and 2 evaluations")):
        print(f"\ncProfile of one incremental poll after {what}, top 8:")
        print("\n".join(profiles[want]))
    print(f"\ntotal time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
