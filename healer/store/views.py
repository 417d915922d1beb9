"""The read side of the store: `Reader` and the frozen views it returns.

A Reader opens the database read-only (it never migrates, never creates the file, never writes a byte) and builds
each view with a fixed few set-based queries, whatever the number of runs: the CLI's listings and `--json`, the TUI
and the exports print these views, so they all read the same numbers from the same place. `changes(since)` is the
change feed: one indexed query that says what changed after a sequence number, for a poller.

Views are frozen dataclasses; `to_plain` turns one into JSON-ready data (field names are the CLI's JSON contract)
and `to_json` into the text the CLI prints.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime
from enum import Enum
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from healer.errors import HealerError
from healer.store.records import Checkpoint, Eval, EvalSample, Run, Spectrum, process_gone, record, records
from healer.store.schema import (
    CHAIN_SQL,
    CHECKPOINT_JOB,
    JOB_KINDS,
    MAX_DEPTH,
    Status,
    connect_read_only,
    describe_db_error,
)

if TYPE_CHECKING:
    from healer.refs import CheckpointRef

SPARKS = "▁▂▃▄▅▆▇█"

# -- views -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    """One run as `runs ls --json` prints it."""

    id: int
    name: str
    kind: str
    method: str
    status: str
    parent_run: int | None
    parent_step: int | None
    start_ref: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    exit_code: int | None
    step: int | None  # the last step with metrics
    total_steps: int | None
    alive: bool | None  # running runs: whether its process lives (a dead one is failed by the next write)
    loss: float | None  # the last logged value of these metrics
    reward: float | None
    preset: str | None  # the preset file's name without .toml (tiny-sft), None for a run made without one

    @property
    def start(self) -> str:
        return start_label(self.parent_run, self.parent_step, self.start_ref)


@dataclass(frozen=True)
class CheckpointRow:
    step: int
    path: str
    protected: bool
    created_at: str
    pruned_at: str | None


@dataclass(frozen=True)
class EvalRow:
    """One evaluation as `runs show --json` lists it under `evals`."""

    id: int
    step: int
    split: str
    protocol: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    format_error_rate: float
    mean_reward: float | None
    loss: float | None
    task: str
    max_attempts: int
    outcomes: dict[str, int]
    seconds: float
    checkpoint_path: str | None


@dataclass(frozen=True)
class Ancestor:
    id: int
    name: str
    kind: str
    step: int | None  # the step of this run its descendant started from


@dataclass(frozen=True)
class ChildRow:
    """A run started (or queued to start) from this run's checkpoints; parent_step is None while it waits for a
    named pick (RUN@peak-ood is chosen once RUN is done)."""

    id: int
    name: str
    status: str
    parent_step: int | None
    start_ref: str | None
    waiting_for: str | None


@dataclass(frozen=True)
class LastMetric:
    step: int
    value: float | None


@dataclass(frozen=True)
class SpectraStep:
    """Per checkpoint with spectra (one reference, side u): mean and largest angle, mean singular-value drift."""

    step: int
    ref: str
    mean_angle_deg: float
    max_angle_deg: float
    matrices: int
    sigma_rel_drift: float


@dataclass(frozen=True)
class Curve:
    """First, lowest and last value of one metric's curve, with the steps they occurred at."""

    first: tuple[int, float]
    min: tuple[int, float]
    last: tuple[int, float]
    points: int
    sparkline: str


@dataclass(frozen=True)
class RunDetail(RunRow):
    """`runs show --json`: the row plus the spec, checkpoints, evaluations and peaks, spectra, lineage, children."""

    model_path: str | None
    spec: dict[str, Any]
    checkpoints: tuple[CheckpointRow, ...]
    evals: tuple[EvalRow, ...]
    peaks: dict[str, Any]
    spectra: tuple[SpectraStep, ...]
    params: dict[str, Any] | None
    last_metrics: dict[str, LastMetric]
    lineage: tuple[Ancestor, ...]
    children: tuple[ChildRow, ...]
    reason: str | None
    out_dir: str | None
    log_path: str | None
    preset_path: str | None
    host: str | None
    pid: int | None
    healer_version: str | None
    git_commit: str | None
    loss_curve: Curve | None
    executor: str | None = None  # slurm, or None for a local subprocess
    slurm_job: str | None = None
    node: str | None = None
    slurm_state: str | None = None


@dataclass(frozen=True)
class TreeNode:
    """A run in `runs tree`: status, progress, accuracy at its last evaluated step, its OOD peak, its children."""

    id: int
    name: str
    kind: str
    method: str
    status: str
    parent_run: int | None
    parent_step: int | None
    start_ref: str | None
    step: int | None
    total_steps: int | None
    last_eval: dict[str, Any] | None  # {"step": S, "id": accuracy, "ood": accuracy}
    peak_ood: dict[str, Any] | None  # {"step": S, "ood": accuracy}
    children: tuple[TreeNode, ...]
    forgetting: dict[str, Any] | None = None  # evals.Forgetting: OOD's fall since its peak, and whether ID rose


@dataclass(frozen=True)
class QueueRow:
    """One run as `healer queue ls --json` prints it."""

    id: int
    name: str
    kind: str
    method: str
    status: str
    priority: int
    gpus: int | None
    assigned_gpus: str | None
    step: int | None
    total_steps: int | None
    elapsed_s: float | None
    eta_s: float | None
    parent_run: int | None
    parent_step: int | None
    after_run: int | None
    start_ref: str | None
    waiting_for: str | None
    attempts: int
    worker: str | None
    exit_code: int | None
    reason: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    log_path: str | None
    alive: bool | None
    executor: str | None = None  # slurm, or None for a local subprocess
    slurm_job: str | None = None
    node: str | None = None
    slurm_state: str | None = None


@dataclass(frozen=True)
class MetricRow:
    step: int
    name: str
    value: float | None
    wall_time: float


@dataclass(frozen=True)
class LineageMetric:
    """A metric (or an evaluation's accuracy, named eval/SPLIT/accuracy) on a lineage's one step axis."""

    run: int
    run_name: str
    kind: str
    step: int
    lineage_step: int
    name: str
    value: float | None
    wall_time: float | None
    n: int | None = None
    correct: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    protocol: str | None = None


@dataclass(frozen=True)
class Segment:
    """The part of one run on a lineage axis: its steps `first_step..until` shifted by `offset`."""

    run: Run
    offset: int
    until: int | None  # the step the next run started from; None for the run itself
    first_step: int  # 0 for the root, 1 for runs that continue a parent (their step 0 is the parent's)

    def holds(self, step: int) -> bool:
        return step >= self.first_step and (self.until is None or step <= self.until)


@dataclass(frozen=True)
class EvalTable:
    """A run's evaluations under one protocol: {step: {split: row}} in step order, and its named checkpoints."""

    run: int
    protocol: str
    steps: dict[int, dict[str, EvalRow]]
    peaks: dict[str, Any]


@dataclass(frozen=True)
class SpectraGrid:
    """Rotation of one checkpoint against one reference, per layer and module: the heatmap's cells (degrees)."""

    run: int
    step: int | None
    ref: str | None
    side: str
    steps: tuple[int, ...]  # every step with spectra against this reference
    layers: tuple[int, ...]
    modules: tuple[str, ...]
    mean_angle_deg: dict[str, dict[str, float]]  # {layer: {module: angle}} (string keys: JSON objects)
    sigma_rel_drift: dict[str, dict[str, float]]


@dataclass(frozen=True)
class HealRow:
    """RL from one checkpoint of an SFT run: start and after accuracies, deltas, what was lost and recovered."""

    start: dict[str, Any]
    rl_run: int
    rl_name: str
    method: str
    status: str
    after: dict[str, Any] | None
    delta_id: float | None
    delta_ood: float | None
    ood_peak: dict[str, Any] | None
    lost: float | None
    recovered: float | None
    flips_ood: dict[str, int] | None


@dataclass(frozen=True)
class HealSweep:
    sft_run: int
    sft_name: str
    rows: tuple[HealRow, ...]

    @property
    def ood_peak(self) -> dict[str, Any] | None:
        return next((r.ood_peak for r in self.rows if r.ood_peak), None)


@dataclass(frozen=True)
class Changes:
    """What changed after a sequence number: poll `changes(since=previous.seq)`."""

    seq: int  # the high-water mark: pass it as `since` next time
    runs: tuple[int, ...]  # runs whose row changed (status, heartbeat, a rewind, ...) or that are new
    checkpoints: tuple[tuple[int, int], ...]  # (run, step) registered or changed
    evals: tuple[tuple[int, int], ...]  # (run, step) with a new or replaced evaluation
    spectra: tuple[tuple[int, int], ...]  # (run, step) with new or replaced spectra rows
    metrics: dict[int, int]  # run -> its highest step among the new metric rows
    deleted: tuple[int, ...]  # runs removed (healer queue rm)

    @property
    def touched(self) -> set[int]:
        """Every run something changed for."""
        return {*self.runs, *(r for r, _ in self.checkpoints), *(r for r, _ in self.evals),
                *(r for r, _ in self.spectra), *self.metrics, *self.deleted}  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.touched)


# -- JSON -------------------------------------------------------------------------------------------------


def to_plain(value: Any) -> Any:
    """A view as JSON-ready data: dataclasses as dicts (in field order), tuples as lists, enums as their values."""
    if is_dataclass(value) and not isinstance(value, type):
        return {name: to_plain(getattr(value, name)) for name in _names(type(value))}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def to_json(view: Any) -> str:
    """The JSON text the CLI prints: a list of flat rows one object per line (a 50k-row listing stays fast and
    greppable), anything nested indented."""
    if isinstance(view, (list, tuple)) and view and _flat(view[0]):
        names, encode = _names(type(view[0])), _ROW_ENCODER.encode  # one encoder: its C speedups, no per-row setup
        rows = [encode({name: getattr(v, name) for name in names}) for v in view]
        return "[\n  " + ",\n  ".join(rows) + "\n]"
    return json.dumps(to_plain(view), indent=2, default=str)


def _flat(value: Any) -> bool:
    return is_dataclass(value) and type(value) in FLAT_ROWS


_ROW_ENCODER = json.JSONEncoder(default=str)
FLAT_ROWS = (RunRow, QueueRow, MetricRow, LineageMetric, CheckpointRow)


# -- small helpers the views share ---------------------------------------------------------------------------


def start_label(parent_run: int | None, parent_step: int | None, start_ref: str | None) -> str:
    """Where a run starts, for tables: `1@50`, or `1@peak-ood` while a queued run waits for the pick; '' for none."""
    if parent_run is not None and parent_step is not None:
        return f"{parent_run}@{parent_step}"
    return start_ref or ""


def sparkline(values: list[float], width: int = 40) -> str:
    """A one-line unicode plot of a series, resampled to at most `width` characters."""
    if not values:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - low) / span * len(SPARKS)))] for v in values)


def curve(points: Sequence[tuple[int, float | None]]) -> Curve | None:
    """First, lowest and last value of a curve of (step, value) points; missing values (NaN) are skipped."""
    kept = [(s, v) for s, v in points if v is not None]
    if not kept:
        return None
    low = min(kept, key=lambda p: p[1])
    return Curve(kept[0], low, kept[-1], len(kept), sparkline([v for _, v in kept]))


def eval_row(e: Eval) -> EvalRow:
    return EvalRow(id=e.id, step=e.step, split=e.split, protocol=e.protocol, n=e.n, correct=e.correct,
                   accuracy=e.accuracy, ci_low=e.ci_low, ci_high=e.ci_high, format_error_rate=e.format_error_rate,
                   mean_reward=e.mean_reward, loss=e.loss, task=e.task, max_attempts=e.max_attempts,
                   outcomes=json.loads(e.outcomes), seconds=e.seconds,
                   checkpoint_path=e.checkpoint_path)  # fmt: skip


def eval_summary(evals: list[Eval]) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """A run's accuracy at its last evaluated step ({step, id, ood}), its OOD peak ({step, ood}) and its forgetting
    (`evals.Forgetting` as a dict), for the tree."""
    from healer.evals import by_step, default_protocol, find_peaks, forgetting

    protocol = default_protocol(evals)
    table = by_step(evals, protocol)
    last_eval = peak_ood = None
    if table:
        at = max(table)
        last_eval = {"step": at, **{s: e.accuracy for s, e in table[at].items()}}
    peak = find_peaks(evals, protocol).get("peak-ood")
    if peak is not None:
        peak_ood = {"step": peak.step, "ood": table[peak.step]["ood"].accuracy}
    fall = forgetting(evals, protocol)
    return last_eval, peak_ood, (None if fall is None else dataclasses.asdict(fall))


def elapsed_seconds(run: Run, now: float | None = None) -> float | None:
    if not run.started_at:
        return None
    start = datetime.fromisoformat(run.started_at).timestamp()
    end = datetime.fromisoformat(run.finished_at).timestamp() if run.finished_at else (now or time.time())
    return max(0.0, end - start)


def eta_seconds(run: Run, first: tuple[int, float] | None, last: tuple[int, float] | None) -> float | None:
    """Remaining seconds of a running run at its step rate so far (first and last logged learning rate's times)."""
    if run.status != Status.RUNNING or not run.total_steps or first is None or last is None:
        return None
    (s0, t0), (s1, t1) = first, last
    if s1 <= s0 or t1 <= t0:
        return None
    return (run.total_steps - s1) * (t1 - t0) / (s1 - s0)


def segments(chain: Sequence[Run]) -> list[Segment]:
    """The chain root -> ... -> run (oldest first), each with the offset of its steps on the lineage axis."""
    result, offset = [], 0
    for i, member in enumerate(chain):
        until = chain[i + 1].parent_step or 0 if i + 1 < len(chain) else None
        result.append(Segment(member, offset, until, 0 if i == 0 else 1))
        offset += until or 0
    return result


# -- the reader ----------------------------------------------------------------------------------------------

RUN_ROW_SQL = """
SELECT r.*,
  (SELECT MAX(step) FROM metrics WHERE run_id = r.id) AS last_step,
  (SELECT value FROM metrics WHERE run_id = r.id AND name = 'loss' ORDER BY step DESC LIMIT 1) AS last_loss,
  (SELECT value FROM metrics WHERE run_id = r.id AND name = 'reward' ORDER BY step DESC LIMIT 1) AS last_reward
FROM runs r
"""

LAST_METRICS_SQL = """
WITH RECURSIVE names(name) AS (
  SELECT MIN(name) FROM metrics WHERE run_id = :run
  UNION ALL
  SELECT (SELECT MIN(name) FROM metrics WHERE run_id = :run AND name > names.name) FROM names
  WHERE names.name IS NOT NULL
)
SELECT n.name, m.step, m.value FROM names n
JOIN metrics m ON m.id = (SELECT id FROM metrics WHERE run_id = :run AND name = n.name ORDER BY step DESC LIMIT 1)
ORDER BY n.name
"""  # one index seek per metric name (a skip scan), not a read of the run's whole history

CHANGES_SQL = """
SELECT 'runs', id, NULL, seq FROM runs WHERE seq > :since
UNION ALL SELECT 'checkpoints', run_id, step, seq FROM checkpoints WHERE seq > :since
UNION ALL SELECT 'evals', run_id, step, seq FROM evals WHERE seq > :since
UNION ALL SELECT 'spectra', run_id, step, MAX(seq) FROM spectra WHERE seq > :since GROUP BY +run_id, +step
UNION ALL SELECT 'metrics', run_id, MAX(step), MAX(seq) FROM metrics WHERE seq > :since GROUP BY +run_id
UNION ALL SELECT 'deleted', run_id, NULL, seq FROM deleted_runs WHERE seq > :since
UNION ALL SELECT 'seq', NULL, NULL, value FROM change_seq
"""  # `+run_id`: group the few new rows found through the seq indexes, never scan a table in group order


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is written: its modification time, size and inode."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class Reader:
    """Read-only views of one store. Open one per thread; cheap to keep open (a TUI polls through one)."""

    def __init__(self, path: Path | str, *, immutable: bool = False) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._immutable = False
        self._always_immutable = immutable  # a copy or a read-only mount: never look for a writer's -wal
        self._stamp: tuple[int, int, int] | None = None
        self.host = socket.gethostname()

    # -- connection ----------------------------------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection. One opened `immutable` (no writer was there) is reopened when a writer shows up (a `-wal`
        file) or has been and gone (the file changed), so a long-lived reader such as the TUI sees new rows."""
        if self._conn is not None and self._immutable and (self._stamp != _stamp(self.path) or (
                not self._always_immutable and Path(f"{self.path}-wal").exists())):  # fmt: skip
            self._conn.close()
            self._conn = None
        if self._conn is None:
            self._stamp = _stamp(self.path)
            self._conn = connect_read_only(self.path, self._always_immutable)
            self._immutable = self._always_immutable or (self.path.exists() and not Path(f"{self.path}-wal").exists())
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise HealerError(describe_db_error(exc, self.path)) from None

    # -- runs ----------------------------------------------------------------------------------------------

    def find_run(self, ref: str | int) -> Run:
        """A run by id (`12`) or by name (the newest run with that name)."""
        text = str(ref).strip()
        if text.isdigit():
            rows = self._all("SELECT * FROM runs WHERE id = ?", [int(text)])
            if not rows:
                raise HealerError(f"no run with id {text}; `healer runs ls` lists the runs")
        else:
            rows = self._all("SELECT * FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1", [text])
            if not rows:
                raise HealerError(f"no run with id or name {text!r}; `healer runs ls` lists the runs")
        return record(Run, rows[0])

    def runs(self, *, jobs: bool = False) -> list[RunRow]:
        """Every run, oldest first; `jobs=True` adds the evaluation and spectra jobs on checkpoints."""
        where = "" if jobs else f" WHERE NOT {CHECKPOINT_JOB}"
        return [self._run_row(row) for row in self._all(RUN_ROW_SQL + where + " ORDER BY r.id")]

    def _run_row(self, row: sqlite3.Row) -> RunRow:
        run = record(Run, row)
        return RunRow(id=run.id, name=run.name, kind=run.kind.value, method=run.method, status=run.status.value,
                      parent_run=run.parent_run, parent_step=run.parent_step, start_ref=run.start_ref,
                      created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at,
                      exit_code=run.exit_code, step=row["last_step"], total_steps=run.total_steps,
                      alive=self._alive(run), loss=row["last_loss"], reward=row["last_reward"],
                      preset=Path(run.preset_path).stem if run.preset_path else None)  # fmt: skip

    def _alive(self, run: Run) -> bool | None:
        return None if run.status != Status.RUNNING else process_gone(run, self.host) is None

    def chain(self, run_id: int) -> list[Run]:
        """The run and its ancestors, oldest first (one recursive query)."""
        return records(Run, self._all(CHAIN_SQL, [run_id]))

    def run_detail(self, ref: str | int) -> RunDetail:
        run = self.find_run(ref)
        row = self._all(RUN_ROW_SQL + " WHERE r.id = ?", [run.id])[0]
        base = self._run_row(row)
        chain = self.chain(run.id)
        ancestors = tuple(Ancestor(p.id, p.name, p.kind.value, child.parent_step) for p, child in pairwise(chain))
        checkpoints = self._all("SELECT * FROM checkpoints WHERE run_id = ? ORDER BY step", [run.id])
        evals = self._evals([run.id]).get(run.id, [])
        children = records(
            Run, self._all(f"SELECT * FROM runs WHERE parent_run = ? AND NOT {CHECKPOINT_JOB} ORDER BY id", [run.id])
        )
        waits = self._waits([c for c in children if c.status == Status.QUEUED])
        last = {r["name"]: LastMetric(r["step"], r["value"]) for r in self._all(LAST_METRICS_SQL, {"run": run.id})}
        loss = self._all("SELECT step, value FROM metrics WHERE run_id = ? AND name = 'loss' ORDER BY step", [run.id])
        from healer.evals import peaks_report

        return RunDetail(
            **{name: getattr(base, name) for name in _names(RunRow)},
            model_path=run.model_path,
            spec=run.spec_dict,
            checkpoints=tuple(
                CheckpointRow(c["step"], c["path"], bool(c["protected"]), c["created_at"], c["pruned_at"])
                for c in checkpoints
            ),
            evals=tuple(eval_row(e) for e in evals),
            peaks=peaks_report(evals),
            spectra=self._spectra_steps(run.id),
            params=json.loads(run.params) if run.params else None,
            last_metrics=last,
            lineage=ancestors,
            children=tuple(
                ChildRow(c.id, c.name, c.status.value, c.parent_step, c.start_ref, waits.get(c.id)) for c in children
            ),
            reason=run.reason, out_dir=run.out_dir, log_path=run.log_path, preset_path=run.preset_path,
            host=run.host, pid=run.pid, healer_version=run.healer_version, git_commit=run.git_commit,
            loss_curve=curve([(r[0], r[1]) for r in loss]), executor=run.executor, slurm_job=run.slurm_job,
            node=run.node, slurm_state=run.slurm_state,
        )  # fmt: skip

    def _spectra_steps(self, run_id: int) -> tuple[SpectraStep, ...]:
        rows = self._all(
            "WITH first AS (SELECT ref FROM spectra WHERE run_id = :run ORDER BY step, layer, module, side LIMIT 1) "
            "SELECT step, ref, AVG(mean_angle_deg) AS mean, MAX(max_angle_deg) AS top, COUNT(*) AS n, "
            "AVG(sigma_rel_drift) AS drift FROM spectra WHERE run_id = :run AND ref = (SELECT ref FROM first) "
            "AND side = 'u' GROUP BY step ORDER BY step",
            {"run": run_id},
        )
        return tuple(SpectraStep(r["step"], r["ref"], r["mean"], r["top"], r["n"], r["drift"]) for r in rows)

    def _evals(self, run_ids: Iterable[int] | None) -> dict[int, list[Eval]]:
        """Evaluations by run, in (step, split, protocol, id) order; None: of every run."""
        if run_ids is None:
            rows = self._all("SELECT * FROM evals ORDER BY run_id, step, split, protocol, id")
        else:
            ids = sorted(set(run_ids))
            if not ids:
                return {}
            rows = self._all(
                f"SELECT * FROM evals WHERE run_id IN ({', '.join('?' * len(ids))}) "
                "ORDER BY run_id, step, split, protocol, id",
                ids,
            )
        by_run: dict[int, list[Eval]] = {}
        for e in records(Eval, rows):
            by_run.setdefault(e.run_id, []).append(e)
        return by_run

    # -- the tree ------------------------------------------------------------------------------------------

    def tree(self, ref: str | int | None = None) -> list[TreeNode]:
        """Runs as trees (each with the runs started from its checkpoints); `ref`: only the tree it belongs to."""
        rows = self._all(RUN_ROW_SQL + " WHERE NOT (r.kind IN ('eval', 'spectra')) ORDER BY r.id")
        runs = {r["id"]: (record(Run, r), r["last_step"]) for r in rows}
        evals = self._evals(None)
        children: dict[int | None, list[int]] = {}
        for run_id, (run, _) in runs.items():
            children.setdefault(run.parent_run if run.parent_run in runs else None, []).append(run_id)

        def node(run_id: int, depth: int) -> TreeNode:
            run, step = runs[run_id]
            last_eval, peak_ood, fall = eval_summary(evals.get(run_id, []))
            kids = children.get(run_id, []) if depth < MAX_DEPTH else []
            return TreeNode(id=run.id, name=run.name, kind=run.kind.value, method=run.method,
                            status=run.status.value, parent_run=run.parent_run, parent_step=run.parent_step,
                            start_ref=run.start_ref, step=step, total_steps=run.total_steps, last_eval=last_eval,
                            peak_ood=peak_ood, children=tuple(node(k, depth + 1) for k in kids),
                            forgetting=fall)  # fmt: skip

        if ref is None:
            return [node(r, 0) for r in children.get(None, [])]
        top = self.find_run(ref).id
        for _ in range(MAX_DEPTH):  # up to the root, through the runs already read
            parent = runs[top][0].parent_run if top in runs else None
            if parent is None or parent not in runs:
                break
            top = parent
        if top not in runs:  # a job or an evaluation holder: a tree of its own
            run = self.find_run(top)
            return [TreeNode(run.id, run.name, run.kind.value, run.method, run.status.value, run.parent_run,
                             run.parent_step, run.start_ref, None, run.total_steps, None, None, ())]  # fmt: skip
        return [node(top, 0)]

    # -- the queue -----------------------------------------------------------------------------------------

    def queue(self, now: float | None = None) -> list[QueueRow]:
        """Every run that went through the queue (waiting, running or finished), oldest first; elapsed times run to
        `now` (default: the clock)."""
        lr = "FROM metrics WHERE run_id = r.id AND name = 'learning_rate' ORDER BY step"
        rows = self._all(
            "SELECT r.*, (SELECT MAX(step) FROM metrics WHERE run_id = r.id) AS last_step, "
            f"CASE WHEN r.status = 'running' THEN (SELECT step {lr} LIMIT 1) END AS s0, "
            f"CASE WHEN r.status = 'running' THEN (SELECT wall_time {lr} LIMIT 1) END AS t0, "
            f"CASE WHEN r.status = 'running' THEN (SELECT step {lr} DESC LIMIT 1) END AS s1, "
            f"CASE WHEN r.status = 'running' THEN (SELECT wall_time {lr} DESC LIMIT 1) END AS t1 "
            "FROM runs r WHERE r.queued = 1 ORDER BY r.id"
        )
        runs = records(Run, rows)
        waits = self._waits([r for r in runs if r.status == Status.QUEUED])
        now = time.time() if now is None else now
        result = []
        for run, r in zip(runs, rows, strict=True):
            first = (r["s0"], r["t0"]) if r["s0"] is not None else None
            last = (r["s1"], r["t1"]) if r["s1"] is not None else None
            result.append(QueueRow(
                id=run.id, name=run.name, kind=run.kind.value, method=run.method, status=run.status.value,
                priority=run.priority, gpus=run.gpus, assigned_gpus=run.assigned_gpus, step=r["last_step"],
                total_steps=run.total_steps, elapsed_s=elapsed_seconds(run, now), eta_s=eta_seconds(run, first, last),
                parent_run=run.parent_run, parent_step=run.parent_step, after_run=run.after_run,
                start_ref=run.start_ref, waiting_for=waits.get(run.id), attempts=run.attempts, worker=run.worker,
                exit_code=run.exit_code, reason=run.reason, created_at=run.created_at, started_at=run.started_at,
                finished_at=run.finished_at, log_path=run.log_path, alive=self._alive(run), executor=run.executor,
                slurm_job=run.slurm_job, node=run.node, slurm_state=run.slurm_state,
            ))  # fmt: skip
        return result

    def queue_row(self, run_id: int) -> QueueRow:
        return next(r for r in self.queue() if r.id == run_id)

    def _waits(self, queued: list[Run]) -> dict[int, str]:
        """What each queued run waits for, decided by `queue.wait_for` over a snapshot read in a fixed few queries."""
        if not queued:
            return {}
        from healer.queue import wait_for

        snapshot = Snapshot(self, queued)
        waits = {}
        for run in queued:
            waiting = wait_for(snapshot, run)
            if waiting is not None:
                waits[run.id] = waiting.reason
        return waits

    def setting(self, key: str, default: str | None = None) -> str | None:
        rows = self._all("SELECT value FROM settings WHERE key = ?", [key])
        return default if not rows else rows[0][0]

    def settings(self, prefix: str = "") -> dict[str, str]:
        return {k: v for k, v in self._all("SELECT key, value FROM settings WHERE key LIKE ? ORDER BY key",
                                           [prefix + "%"])}  # fmt: skip

    # -- metrics -------------------------------------------------------------------------------------------

    def metrics(self, run_id: int, name: str | None = None, after_seq: int = 0) -> list[MetricRow]:
        """A run's metric rows in step order; optionally one name; optionally only those changed after `after_seq`
        (a sequence number of `changes`: new rows and re-logged ones)."""
        sql, params = "SELECT step, name, value, wall_time FROM metrics WHERE run_id = ?", [run_id]
        if after_seq:
            sql, params = sql + " AND seq > ?", [*params, after_seq]
        if name is not None:
            sql, params = sql + " AND name = ?", [*params, name]
        return [MetricRow(*r) for r in self._all(sql + " ORDER BY step, name", params)]

    def lineage_metrics(self, run_id: int, name: str | None = None, evals: bool = True,
                        metrics: bool = True) -> list[LineageMetric]:  # fmt: skip
        """Metrics (and evaluation accuracies, as `eval/SPLIT/accuracy`) of a run's lineage on one step axis,
        `lineage_step`: the parent's steps up to the checkpoint the child started from, then the child's.
        `metrics=False` leaves the trainer's metrics out (evaluations only), `evals=False` the evaluations."""
        from healer.evals import by_step, default_protocol

        segs = segments(self.chain(run_id))
        windows = ", ".join("(?, ?, ?)" for _ in segs)
        params: list[Any] = [v for s in segs for v in (s.run.id, s.first_step, -1 if s.until is None else s.until)]
        sql = (
            f"WITH seg(run, lo, hi) AS (VALUES {windows}) SELECT m.run_id, m.step, m.name, m.value, m.wall_time "
            "FROM seg JOIN metrics m ON m.run_id = seg.run AND m.step >= seg.lo AND (seg.hi < 0 OR m.step <= seg.hi)"
        )
        if name is not None:
            sql, params = sql + " WHERE m.name = ?", [*params, name]
        by_id = {s.run.id: s for s in segs}
        rows: list[LineageMetric] = []
        for run, step, metric, value, wall_time in self._all(sql, params) if metrics else ():
            seg = by_id[run]
            rows.append(LineageMetric(run, seg.run.name, seg.run.kind.value, step, seg.offset + step, metric, value,
                                      wall_time))  # fmt: skip
        if evals:
            all_evals = self._evals(by_id)
            for seg in segs:
                run_evals = all_evals.get(seg.run.id, [])
                for step, splits in by_step(run_evals, default_protocol(run_evals)).items():
                    if not seg.holds(step):
                        continue
                    for split, e in splits.items():
                        metric = f"eval/{split}/accuracy"
                        if name is None or name == metric:
                            rows.append(LineageMetric(seg.run.id, seg.run.name, seg.run.kind.value, step,
                                                      seg.offset + step, metric, e.accuracy, None, e.n, e.correct,
                                                      e.ci_low, e.ci_high, e.protocol))  # fmt: skip
        rows.sort(key=lambda r: (r.lineage_step, r.name))
        return rows

    # -- evaluations and spectra --------------------------------------------------------------------------

    def eval_table(self, run_id: int, protocol: str | None = None) -> EvalTable:
        from healer.evals import by_step, default_protocol, peaks_report

        evals = self._evals([run_id]).get(run_id, [])
        protocol = protocol or default_protocol(evals)
        steps = {
            s: {split: eval_row(e) for split, e in splits.items()} for s, splits in by_step(evals, protocol).items()
        }
        return EvalTable(run_id, protocol, steps, peaks_report(evals, protocol))

    def spectra_grid(
        self, run_id: int, step: int | None = None, ref: str | None = None, side: str = "u"
    ) -> SpectraGrid:
        """One checkpoint's rotation per layer and module (default: the last step measured, the first reference)."""
        if ref is None:
            first = self._all("SELECT ref FROM spectra WHERE run_id = ? ORDER BY step, layer, module, side LIMIT 1",
                              [run_id])  # fmt: skip
            ref = first[0][0] if first else None
        steps = tuple(r[0] for r in self._all("SELECT DISTINCT step FROM spectra WHERE run_id = ? AND ref = ? "
                                              "ORDER BY step", [run_id, ref]))  # fmt: skip
        if step is None and steps:
            step = steps[-1]
        cells = self._all("SELECT layer, module, mean_angle_deg, sigma_rel_drift FROM spectra WHERE run_id = ? "
                          "AND step = ? AND ref = ? AND side = ? ORDER BY layer, module",
                          [run_id, step, ref, side])  # fmt: skip
        angles: dict[str, dict[str, float]] = {}
        drift: dict[str, dict[str, float]] = {}
        for layer, module, angle, sigma in cells:
            angles.setdefault(str(layer), {})[module] = angle
            drift.setdefault(str(layer), {})[module] = sigma
        layers = tuple(sorted({c[0] for c in cells}))
        modules = tuple(dict.fromkeys(c[1] for c in cells))
        return SpectraGrid(run_id, step, ref, side, steps, layers, modules, angles, drift)

    def checkpoints(self, run_ids: Sequence[int]) -> dict[int, list[CheckpointRow]]:
        """The checkpoints of some runs (pruned ones too), by run, in step order."""
        found: dict[int, list[CheckpointRow]] = {r: [] for r in run_ids}
        if run_ids:
            marks = ", ".join("?" * len(run_ids))
            for c in records(Checkpoint, self._all(f"SELECT * FROM checkpoints WHERE run_id IN ({marks}) "
                                                   "ORDER BY run_id, step", list(run_ids))):  # fmt: skip
                found[c.run_id].append(CheckpointRow(c.step, c.path, c.protected, c.created_at, c.pruned_at))
        return found

    def evals_of(self, run_ids: Sequence[int]) -> dict[int, list[Eval]]:
        """The evaluation records of some runs, by run (every asked run present), in one query."""
        found = self._evals(run_ids) if run_ids else {}
        return {run: found.get(run, []) for run in run_ids}

    def evals_at(self, checkpoints: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[Eval]]:
        """The evaluation records of some (run, step) checkpoints, in one query (what a poll re-reads)."""
        found: dict[tuple[int, int], list[Eval]] = {c: [] for c in checkpoints}
        if checkpoints:
            values = ", ".join("(?, ?)" for _ in checkpoints)
            rows = self._all(f"SELECT e.* FROM (VALUES {values}) AS v JOIN evals e ON e.run_id = v.column1 "
                             "AND e.step = v.column2 ORDER BY e.run_id, e.step, e.split, e.protocol, e.id",
                             [x for c in checkpoints for x in c])  # fmt: skip
            for e in records(Eval, rows):
                found[(e.run_id, e.step)].append(e)
        return found

    def evals(self, run_id: int) -> list[Eval]:
        """A run's evaluation records (the rows), in (step, split, protocol, id) order."""
        return self._evals([run_id]).get(run_id, [])

    def eval_samples(self, eval_id: int, *, wrong_only: bool = False) -> list[EvalSample]:
        sql = "SELECT * FROM eval_samples WHERE eval_id = ?" + (" AND correct = 0" if wrong_only else "")
        return records(EvalSample, self._all(sql + " ORDER BY idx", [eval_id]))

    def spectra(self, run_id: int, ref: str | None = None, angles: bool = True,
                step: int | None = None) -> list[Spectrum]:  # fmt: skip
        """A run's spectra rows by step, layer, module and side; optionally against one reference. `angles=False`
        leaves the per-angle and per-value arrays empty (a heatmap needs the summaries only, not the blobs)."""
        columns = "*" if angles else ", ".join(f"x'' AS {f}" if f in ("angles", "sigma_drift") else f
                                                for f in _names(Spectrum))  # fmt: skip
        sql, params = f"SELECT {columns} FROM spectra WHERE run_id = ?", [run_id]
        if ref is not None:
            sql, params = sql + " AND ref = ?", [*params, ref]
        if step is not None:
            sql, params = sql + " AND step = ?", [*params, step]
        return records(Spectrum, self._all(sql + " ORDER BY step, layer, module, side", params))

    def resolve_checkpoint(self, text: str) -> CheckpointRef:
        """A checkpoint reference (RUN@STEP, RUN@peak-ood, a directory) resolved as `refs.resolve_checkpoint`."""
        from healer.refs import resolve_checkpoint

        return resolve_checkpoint(Snapshot(self, []), text)  # type: ignore[arg-type]

    # -- heal -------------------------------------------------------------------------------------------------

    def heal_sweep(self, sft_ref: str | int, rl_ids: Iterable[int] | None = None) -> HealSweep:
        """One row per RL run started from a checkpoint of the SFT run (all its RL children by default)."""
        from healer.heal import heal_rows

        sft = self.find_run(sft_ref)
        if rl_ids is None:
            rows = self._all(f"SELECT * FROM runs WHERE parent_run = ? AND kind = 'rl' AND NOT {CHECKPOINT_JOB} "
                             "ORDER BY id", [sft.id])  # fmt: skip
        else:
            ids = sorted(set(rl_ids))
            rows = self._all(f"SELECT * FROM runs WHERE id IN ({', '.join('?' * len(ids))}) ORDER BY id", ids)
        rl_runs = records(Run, rows)
        evals = self._evals([sft.id, *(r.id for r in rl_runs)])
        checkpoints = self._all("SELECT step FROM checkpoints WHERE run_id = ? AND pruned_at IS NULL ORDER BY step",
                                [sft.id])  # fmt: skip
        last = checkpoints[-1][0] if checkpoints else None
        rows_ = heal_rows(sft, evals, rl_runs, last_checkpoint=last, samples=self.eval_items)
        return HealSweep(sft.id, sft.name, tuple(HealRow(**r) for r in rows_))

    def eval_items(self, eval_ids: Sequence[int]) -> dict[int, dict[int, bool]]:
        """Which items each evaluation got right ({eval id: {item: correct}}), in one query: what paired
        comparisons (flips, McNemar's test) read."""
        found: dict[int, dict[int, bool]] = {i: {} for i in eval_ids}
        marks = ", ".join("?" * len(eval_ids))
        if eval_ids:
            sql = f"SELECT eval_id, idx, correct FROM eval_samples WHERE eval_id IN ({marks})"
            for eval_id, idx, correct in self._all(sql, list(eval_ids)):
                found[eval_id][idx] = bool(correct)
        return found

    # -- the change feed ---------------------------------------------------------------------------------------

    def seq(self) -> int:
        """The change feed's high-water mark now: `changes(since=seq())` later says what changed after it."""
        return self._all("SELECT value FROM change_seq WHERE id = 1")[0][0]

    def changes(self, since: int = 0) -> Changes:
        """What changed after sequence number `since`, in one indexed query (its cost grows with what changed, not
        with the store); `Changes.seq` is the next `since`."""
        runs: list[int] = []
        checkpoints: list[tuple[int, int]] = []
        evals: list[tuple[int, int]] = []
        spectra: list[tuple[int, int]] = []
        metrics: dict[int, int] = {}
        deleted: list[int] = []
        seq = since
        for table, run_id, step, value in self._all(CHANGES_SQL, {"since": since}):
            if table == "seq":
                seq = value
            elif table == "runs":
                runs.append(run_id)
            elif table == "metrics":
                metrics[run_id] = step
            elif table == "deleted":
                deleted.append(run_id)
            else:
                {"checkpoints": checkpoints, "evals": evals, "spectra": spectra}[table].append((run_id, step))
        return Changes(seq, tuple(runs), tuple(dict.fromkeys(checkpoints)), tuple(dict.fromkeys(evals)),
                       tuple(spectra), metrics, tuple(deleted))  # fmt: skip


class Snapshot:
    """What `queue.wait_for` and `refs.resolve_checkpoint` read about the runs some queued runs depend on, read at
    once: every run, and the checkpoints, evaluations and pending evaluation jobs of the runs they name. It answers
    the same calls as `Store` (run, find_run, checkpoints, checkpoint_at, pending_eval_jobs, evals), so the rules
    that decide what a run waits for exist once, for the worker and the views alike."""

    def __init__(self, reader: Reader, queued: Sequence[Run]) -> None:
        self.reader = reader
        self._runs = {r.id: r for r in records(Run, reader._all("SELECT * FROM runs"))}
        deps = {r.after_run for r in queued if r.after_run is not None}
        deps |= {int(r.start_ref.split("@")[0]) for r in queued if r.start_ref and "@" in r.start_ref
                 and r.start_ref.split("@")[0].isdigit()}  # fmt: skip
        marks = ", ".join("?" * len(deps))
        self._checkpoints: dict[int, list[Checkpoint]] = {d: [] for d in deps}
        self._pending: dict[int, int] = {}
        if deps:
            sql = f"SELECT * FROM checkpoints WHERE run_id IN ({marks}) ORDER BY run_id, step"
            rows = reader._all(sql, sorted(deps))
            for c in records(Checkpoint, rows):
                self._checkpoints[c.run_id].append(c)
            self._pending = {r[0]: r[1] for r in reader._all(
                f"SELECT parent_run, COUNT(*) FROM runs WHERE parent_run IN ({marks}) AND kind = 'eval' "
                "AND status IN ('queued', 'running') GROUP BY parent_run", sorted(deps))}  # fmt: skip
        self._evals = reader._evals(deps) if deps else {}
        self._deps = deps

    def run(self, run_id: int) -> Run:
        if run_id not in self._runs:
            raise HealerError(f"no run with id {run_id}; `healer runs ls` lists the runs")
        return self._runs[run_id]

    def find_run(self, ref: str) -> Run:
        text = ref.strip()
        if text.isdigit():
            return self.run(int(text))
        named = [r for r in self._runs.values() if r.name == text]
        if not named:
            raise HealerError(f"no run with id or name {text!r}; `healer runs ls` lists the runs")
        return named[-1]

    def checkpoints(self, run_id: int, *, pruned: bool = False) -> list[Checkpoint]:
        if run_id not in self._deps:
            rows = self.reader._all("SELECT * FROM checkpoints WHERE run_id = ? ORDER BY step", [run_id])
            self._checkpoints[run_id] = records(Checkpoint, rows)
            self._deps.add(run_id)
        return [c for c in self._checkpoints.get(run_id, []) if pruned or c.pruned_at is None]

    def checkpoint_at(self, path: str) -> Checkpoint | None:
        rows = self.reader._all("SELECT * FROM checkpoints WHERE path = ? ORDER BY id DESC LIMIT 1", [path])
        return record(Checkpoint, rows[0]) if rows else None

    def pending_eval_jobs(self, run_id: int) -> int:
        if run_id not in self._pending and run_id not in self._deps:
            rows = self.reader._all("SELECT COUNT(*) FROM runs WHERE parent_run = ? AND kind = 'eval' "
                                    "AND status IN ('queued', 'running')", [run_id])  # fmt: skip
            self._pending[run_id] = rows[0][0]
        return self._pending.get(run_id, 0)

    def evals(self, run_id: int) -> list[Eval]:
        if run_id not in self._evals:
            self._evals[run_id] = self.reader._evals([run_id]).get(run_id, [])
        return self._evals[run_id]


__all__ = [
    "JOB_KINDS",
    "Changes",
    "EvalTable",
    "HealSweep",
    "QueueRow",
    "Reader",
    "RunDetail",
    "RunRow",
    "SpectraGrid",
    "TreeNode",
    "to_json",
    "to_plain",
]
