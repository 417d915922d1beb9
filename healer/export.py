"""Exports for papers: the heal table, the heal sweep and the rotation table in LaTeX, Markdown, CSV and JSON, and
a consistent copy of the store. Every number keeps the checkpoint it came from (run, step, split, protocol, n), and
every export says so in a provenance block, so a reader of the paper's source can find each number's checkpoint.

A table is built once from the read views (`heal_table`, `sweep_table`, `spectra_table`) and rendered by format
(`render`); the builders compute nothing the views do not already: accuracies are the stored evaluations, the
recovered share is `healer heal`'s row, angles are `healer spectra show`'s grid.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sqlite3
import statistics
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healer import __version__
from healer.errors import HealerError
from healer.evals import by_step, default_protocol, find_peaks
from healer.store import Eval, Run
from healer.store.views import HealRow, Reader

FORMAT_SUFFIXES = {"latex": ".tex", "markdown": ".md", "csv": ".csv", "json": ".json"}
FORMATS = tuple(FORMAT_SUFFIXES)
CI_STYLES = ("brackets", "pm", "none")
GROUPS = ("seed", "model", "none")
STAGES = ("base", "peak-ood", "sft-end", "rl-end", "control")
DEFAULT_STAGES = ("base", "peak-ood", "sft-end", "rl-end")
STAGE_TITLES = {"base": "Base", "peak-ood": "SFT OOD peak", "sft-end": "SFT end", "rl-end": "After RL",
                "control": "SFT control"}  # fmt: skip
STAGE_WORDS = {"base": "the base model", "peak-ood": "SFT's OOD peak", "sft-end": "the end of SFT",
               "rl-end": "after RL", "control": "the SFT control (SFT continued from RL's start)"}  # fmt: skip
REC_CAPTION = (
    " Rec.: the share of the OOD accuracy RL's start checkpoint had lost against SFT's best (its "
    "starting model included) that RL recovered."
)
CI_MARK = "{ci}"  # in a caption: where render says how intervals are shown (the renderer's choice)
SEED_KEYS = (("name",), ("train", "seed"), ("model", "path"), ("model", "build"))  # what differs between seeds


# -- cells ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Acc:
    """An accuracy with its Wilson 95 % interval and the checkpoint it was measured on."""

    correct: int
    n: int
    low: float
    high: float
    run: int
    step: int
    split: str
    protocol: str

    @property
    def value(self) -> float:
        return self.correct / self.n

    @classmethod
    def of(cls, e: Eval) -> Acc:
        return cls(e.correct, e.n, e.ci_low, e.ci_high, e.run_id, e.step, e.split, e.protocol)

    def source(self) -> str:
        return f"{self.run}@{self.step} {self.split} {self.correct}/{self.n} ({self.protocol})"


@dataclass(frozen=True)
class Mean:
    """Runs that differ only by seed (or share a model): the mean of their accuracies, the sample standard
    deviation, and every accuracy it came from."""

    parts: tuple[Acc, ...]

    @property
    def value(self) -> float:
        return statistics.fmean(a.value for a in self.parts)

    @property
    def std(self) -> float:
        return statistics.stdev(a.value for a in self.parts) if len(self.parts) > 1 else 0.0

    def source(self) -> str:
        return "; ".join(a.source() for a in self.parts)


@dataclass(frozen=True)
class Number:
    """A derived number (a recovered share, a change in points, an angle), in the unit it is printed in, with the
    checkpoints it was computed from."""

    value: float | None
    unit: str  # "%" (a share, printed in percent), "pt" (percentage points), "deg", "ratio"
    sources: tuple[str, ...] = ()
    note: str = ""  # printed instead of a value: "=" (forced to 0 by dimension), "n/a"

    def source(self) -> str:
        return "; ".join(self.sources)


Cell = Acc | Mean | Number | str | None


@dataclass(frozen=True)
class Column:
    key: str
    header: str  # the column's own header (ID, OOD, Rec. %)
    group: str = ""  # the header above it, shared by neighbours (a stage)
    best: bool = True  # bold the highest value of the column


@dataclass(frozen=True)
class Row:
    label: str
    cells: dict[str, Cell]
    sources: tuple[str, ...] = ()  # one line per checkpoint this row's numbers came from


@dataclass(frozen=True)
class Table:
    kind: str  # heal, sweep, spectra
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    caption: str  # plain text; LaTeX escapes it
    runs: tuple[int, ...]
    label: str = "tab:healer"
    notes: tuple[str, ...] = ()  # provenance lines beyond the rows' own
    row_header: str = "Run"


@dataclass(frozen=True)
class Provenance:
    """Where an export came from: healer's version, the database and the command line that made it."""

    database: str
    command: str
    version: str = __version__

    def lines(self, table: Table) -> list[str]:
        out = [f"healer {self.version}: {self.command}", f"database: {self.database}",
               f"runs: {', '.join(map(str, table.runs))}"]  # fmt: skip
        out += list(table.notes)
        for row in table.rows:
            out += [f"{row.label}: {line}" for line in row.sources]
        return out


# -- tables ---------------------------------------------------------------------------------------------------


def parse_list(text: str, allowed: Sequence[str], option: str) -> tuple[str, ...]:
    """A comma-separated option checked against what it allows, in the order given, each once."""
    items = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise HealerError(f"{option} {text!r}: give some of {','.join(allowed)}")
    return items


def heal_table(reader: Reader, refs: Sequence[str], stages: Sequence[str] = DEFAULT_STAGES,
               splits: Sequence[str] = ("id", "ood"), group_by: str = "seed") -> Table:  # fmt: skip
    """The paper's table: a row per SFT lineage (an SFT run and an RL run started from it), ID and OOD accuracy at
    each stage, and the share of the lost OOD accuracy RL recovered. An SFT run stands for its RL runs, one row each
    (or a row of its own when it has none and no RL stage is asked for); an RL run for itself and its SFT parent."""
    runs = reader.runs()
    pairs: list[tuple[Run, Run | None]] = []
    left_out: list[str] = []
    for ref in refs:
        run = reader.find_run(ref)
        if run.kind.value == "rl":
            if run.parent_run is None:
                raise HealerError(f"run {run.id} ({run.name}) did not start from an SFT run's checkpoint")
            pairs.append((reader.find_run(run.parent_run), run))
            continue
        children = [reader.find_run(r.id) for r in runs if r.parent_run == run.id and r.kind == "rl"]
        done = [c for c in children if any(e.step > 0 for e in reader.evals(c.id))]
        left_out += [f"left out: run {c.id} ({c.name}), {c.status.value}, no evaluated checkpoint yet"
                     for c in children if c not in done]  # fmt: skip
        pairs += [(run, c) for c in done] if done else [(run, None)]
    rows = [_lineage_row(reader, sft, rl, stages, splits, runs) for sft, rl in pairs]
    columns = [Column(f"{stage}/{split}", split.upper(), STAGE_TITLES[stage]) for stage in stages for split in splits]
    if "rl-end" in stages:
        columns.append(Column("recovered", "Rec. %"))
    rows = _grouped(reader, pairs, rows, group_by)
    protocols = sorted({c.protocol for r in rows for c in _accs(r)})
    ns = sorted({c.n for r in rows for c in _accs(r)})
    caption = (f"ID and OOD accuracy (%) at {_words([STAGE_WORDS[s] for s in stages])}"
               f"{CI_MARK}; protocol {', '.join(protocols)}, n = {', '.join(map(str, ns))} episodes per "
               "split." + (REC_CAPTION if "rl-end" in stages else ""))  # fmt: skip
    run_ids = tuple(dict.fromkeys(r.id for pair in pairs for r in pair if r is not None))
    return Table("heal", tuple(columns), tuple(rows), caption, run_ids, "tab:healer-heal", tuple(left_out))


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _lineage_row(reader: Reader, sft: Run, rl: Run | None, stages: Sequence[str], splits: Sequence[str],
                 runs: Sequence[Any]) -> Row:  # fmt: skip
    sft_evals = reader.evals(sft.id)
    protocol = default_protocol(sft_evals)
    table = by_step(sft_evals, protocol)
    peaks = find_peaks(sft_evals, protocol)
    label = f"{sft.name} → {rl.name}" if rl is not None else sft.name
    where: dict[str, tuple[int, dict[str, Eval]]] = {}
    for stage in stages:
        if stage == "base":
            if 0 not in table:
                raise HealerError(f"run {sft.id} ({sft.name}) has no evaluation of the model it started from (step "
                                  f"0); `healer eval {sft.id}@0`, or leave base out of --stages")  # fmt: skip
            where[stage] = (sft.id, table[0])
        elif stage in ("peak-ood", "sft-end"):
            peak = peaks.get("peak-ood" if stage == "peak-ood" else "last")
            if peak is None:
                raise HealerError(f"run {sft.id} ({sft.name}) has no evaluated checkpoint; `healer eval {sft.id}`")
            where[stage] = (sft.id, table[peak.step])
        elif stage == "rl-end":
            if rl is None:
                raise HealerError(f"run {sft.id} ({sft.name}) has no RL run started from its checkpoints; `healer "
                                  f"heal {sft.id} --preset ...`, or leave rl-end out of --stages")  # fmt: skip
            where[stage] = (rl.id, _last(reader, rl, protocol))
        else:  # control: SFT continued from the RL run's start checkpoint
            control = _control(reader, sft, rl, runs)
            where[stage] = (control.id, _last(reader, control, protocol))
    cells: dict[str, Cell] = {}
    sources = []
    for stage, (run_id, splits_at) in where.items():
        step = next(iter(splits_at.values())).step
        sources.append(f"{stage} {run_id}@{step}")
        for split in splits:
            if split not in splits_at:
                raise HealerError(f"run {run_id}@{step} has no {split} evaluation under protocol {protocol}; `healer "
                                  f"eval {run_id}@{step} --split {split}`, or leave it out of --split")  # fmt: skip
            cells[f"{stage}/{split}"] = Acc.of(splits_at[split])
    if "rl-end" in stages and rl is not None:
        row = reader.heal_sweep(sft.id, [rl.id]).rows[0]
        peak_step, after_step = (row.ood_peak or {}).get("step"), (row.after or {}).get("step")
        cells["recovered"] = _share(row.recovered, (f"start {sft.id}@{row.start['step']}", f"peak {sft.id}@{peak_step}",
                                                    f"after {rl.id}@{after_step}"))  # fmt: skip
        sources.append(f"RL started from {sft.id}@{rl.parent_step}")
    first = next((c for c in cells.values() if isinstance(c, Acc)), None)
    if first is not None:
        sources.append(f"protocol {first.protocol}, n {first.n}")
    return Row(label, cells, tuple(["; ".join(sources)]))


def _share(value: float | None, sources: tuple[str, ...], unit: str = "%") -> Number:
    """A fraction printed in percent (or a change in points); n/a when it is undefined (nothing was lost)."""
    return Number(None, unit, sources, "n/a") if value is None else Number(100 * value, unit, sources)


def _last(reader: Reader, run: Run, protocol: str) -> dict[str, Eval]:
    table = {s: v for s, v in by_step(reader.evals(run.id), protocol).items() if s > 0}
    if not table:
        raise HealerError(f"run {run.id} ({run.name}) has no evaluated checkpoint under protocol {protocol} yet; "
                          f"`healer eval {run.id}`")  # fmt: skip
    return table[max(table)]


def _control(reader: Reader, sft: Run, rl: Run | None, runs: Sequence[Any]) -> Run:
    """The SFT control of an RL run: SFT continued from the same checkpoint (the demo's `sft-control`)."""
    if rl is None:
        raise HealerError(f"run {sft.id} ({sft.name}): a control is SFT continued from an RL run's start; it has no "
                          "RL run, so leave control out of --stages")  # fmt: skip
    found = [r for r in runs if r.parent_run == sft.id and r.method == "sft" and r.parent_step == rl.parent_step]
    if not found:
        raise HealerError(f"no SFT control for run {rl.id}: no SFT run continued from {sft.id}@{rl.parent_step}; "
                          f"queue one (`healer queue add PRESET --from {sft.id}@{rl.parent_step}`), or leave control "
                          "out of --stages")  # fmt: skip
    return reader.find_run(found[-1].id)


def _accs(row: Row) -> list[Acc]:
    out: list[Acc] = []
    for cell in row.cells.values():
        out += [cell] if isinstance(cell, Acc) else list(cell.parts) if isinstance(cell, Mean) else []
    return out


def _grouped(reader: Reader, pairs: list[tuple[Run, Run | None]], rows: list[Row], group_by: str) -> list[Row]:
    """--group-by seed: rows whose runs differ only by seed (and name) become one, mean ± std with the seed count;
    --group-by model: rows of the same base model become one; none: every row as it is."""
    if group_by == "none":
        return rows
    groups: dict[str, list[int]] = {}
    for i, (sft, rl) in enumerate(pairs):
        if group_by == "seed":
            key = json.dumps([_without_seed(sft.spec_dict), _without_seed(rl.spec_dict) if rl else None,
                              _start_label(reader, sft, rl)], sort_keys=True)  # fmt: skip
        else:
            key = reader.chain(sft.id)[0].model_path or ""
        groups.setdefault(key, []).append(i)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(rows[members[0]])
            continue
        first = rows[members[0]]
        cells: dict[str, Cell] = {}
        for key in first.cells:
            parts = [rows[m].cells.get(key) for m in members]
            if all(isinstance(p, Acc) for p in parts):
                cells[key] = Mean(tuple(p for p in parts if isinstance(p, Acc)))
            elif all(isinstance(p, Number) and p.value is not None for p in parts):
                values = [p.value for p in parts if isinstance(p, Number) and p.value is not None]
                cells[key] = Number(statistics.fmean(values), "%", tuple(s for p in parts if isinstance(p, Number)
                                                                          for s in p.sources))  # fmt: skip
            else:
                cells[key] = Number(None, "%", (), "n/a")
        what = "seeds" if group_by == "seed" else "runs"
        label = (first.label if group_by == "seed" else Path(reader.chain(pairs[members[0]][0].id)[0].model_path
                                                               or "model").name)  # fmt: skip
        out.append(Row(f"{label} ({len(members)} {what})", cells, tuple(s for m in members for s in rows[m].sources)))
    return out


def _without_seed(spec: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(spec))
    for path in SEED_KEYS:
        node = data
        for part in path[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return data


def _start_label(reader: Reader, sft: Run, rl: Run | None) -> str:
    """Where the RL run started, by name when the step has one (peak-ood, last), so seeds group by the pick."""
    if rl is None:
        return ""
    named = {p.step: name for name, p in find_peaks(reader.evals(sft.id)).items()}
    return named.get(rl.parent_step or 0, str(rl.parent_step))


def sweep_table(reader: Reader, sft_ref: str) -> Table:
    """`healer heal SFT --report` as a table: each RL run's start checkpoint, its ID/OOD there and after RL, the OOD
    change, the paired flips, the recovered share, and the SFT control from the same start when there is one."""
    view = reader.heal_sweep(sft_ref)
    if not view.rows:
        raise HealerError(f"run {view.sft_run} ({view.sft_name}) has no RL runs started from its checkpoints; "
                          f"`healer heal {view.sft_run} --preset ... --queue`")  # fmt: skip
    runs = reader.runs()
    controls = {r.parent_step: r.id for r in runs if r.parent_run == view.sft_run and r.method == "sft"}
    columns = [Column("start/id", "ID", "Start"), Column("start/ood", "OOD", "Start"),
               Column("after/id", "ID", "After RL"), Column("after/ood", "OOD", "After RL"),
               Column("delta", "ΔOOD pt", "Change"), Column("flips", "Flips +/−", "Change", best=False),
               Column("recovered", "Rec. %", "Change"), Column("control", "OOD", "SFT control")]  # fmt: skip
    rows = []
    for r in view.rows:
        start_run, start_step = _start_source(reader, r)
        after_step = (r.after or {}).get("step")
        cells: dict[str, Cell] = {}
        for split in ("id", "ood"):
            cells[f"start/{split}"] = _acc_of(r.start.get(split), start_run, start_step, split)
            cells[f"after/{split}"] = _acc_of((r.after or {}).get(split), r.rl_run, after_step, split)
        cells["delta"] = _share(r.delta_ood, (f"{start_run}@{start_step}", f"{r.rl_run}@{after_step}"), "pt")
        cells["flips"] = f"+{r.flips_ood['gained']}/−{r.flips_ood['lost']}" if r.flips_ood else "n/a"
        cells["recovered"] = _share(r.recovered, ())
        control = controls.get(r.start["step"])
        cells["control"] = _control_cell(reader, control) if control is not None else "—"
        labels = f" ({', '.join(r.start['labels'])})" if r.start.get("labels") else ""
        label = f"{view.sft_run}@{r.start['step']}{labels} → {r.rl_name}"
        sources = f"start {start_run}@{start_step}; after {r.rl_run}@{after_step}"
        sources += f"; control {control}" if control is not None else ""
        rows.append(Row(label, cells, (sources,)))
    caption = ("RL from checkpoints of one SFT run: ID and OOD accuracy (%) at the start checkpoint and after RL"
               f"{CI_MARK}; ΔOOD in points; flips: OOD items wrong at the start and right after (+) and "
               "the reverse (−); Rec.: the share of the OOD accuracy lost since SFT's OOD peak that RL recovered; "
               "SFT control: SFT continued from the same checkpoint.")  # fmt: skip
    ids = (view.sft_run, *(r.rl_run for r in view.rows), *controls.values())
    return Table("sweep", tuple(columns), tuple(rows), caption, tuple(dict.fromkeys(ids)), "tab:healer-sweep")


def _start_source(reader: Reader, row: HealRow) -> tuple[int, int]:
    """The evaluation a heal row's start numbers came from: the RL run's own step 0 when it has one, else the SFT
    checkpoint's (as heal_rows picks)."""
    if any(e.step == 0 for e in reader.evals(row.rl_run)):
        return row.rl_run, 0
    return row.start["run"], row.start["step"]


def _acc_of(side: dict[str, Any] | None, run: int, step: int | None, split: str) -> Cell:
    if side is None or step is None:
        return None
    return Acc(side["correct"], side["n"], side["ci_low"], side["ci_high"], run, step, split, "single")


def _control_cell(reader: Reader, control: int) -> Cell:
    table = {s: v for s, v in by_step(reader.evals(control), "single").items() if s > 0}
    if not table or "ood" not in table[max(table)]:
        return "—"
    return Acc.of(table[max(table)]["ood"])


def spectra_table(reader: Reader, ref: str) -> Table:
    """The rotation of one checkpoint (RUN@STEP, or RUN: its latest with spectra) against its reference: a row per
    layer, the mean principal angle (°) per module, and the mean relative singular-value drift (%) of the row."""
    from healer.spectra import layer_by_module

    run_ref, _, step_text = ref.partition("@")
    run = reader.find_run(run_ref)
    rows = reader.spectra(run.id)
    if not rows:
        raise HealerError(f"run {run.id} ({run.name}) has no spectra; `healer spectra measure {run.id}@STEP`")
    ref_label = rows[0].ref
    rows = [r for r in rows if r.ref == ref_label]
    steps = sorted({r.step for r in rows})
    if step_text:
        target = reader.resolve_checkpoint(ref)
        if target.step not in steps:
            raise HealerError(f"{run.id}@{target.step} has no spectra against {ref_label}; it has them at steps "
                              f"{', '.join(map(str, steps))}")  # fmt: skip
        step = target.step
    else:
        step = steps[-1]
    grid = layer_by_module(rows, step, "u")
    columns = [Column(m, f"{m} (°)", best=False) for m in grid.columns]
    columns.append(Column("drift", "σ drift %", best=False))
    out = []
    for i, (layer, values, drift) in enumerate(grid.rows):
        cells: dict[str, Cell] = {}
        for j, (module, value) in enumerate(zip(grid.columns, values, strict=True)):
            note = "=" if grid.is_forced(i, j) else ("" if value is not None else "n/a")
            cells[module] = Number(value, "deg", (), note)
        cells["drift"] = Number(None if drift is None else 100 * drift, "%")
        out.append(Row(layer, cells))
    first = rows[0]
    caption = (f"Mean principal angle (°) between the top-{first.k} left singular subspaces of checkpoint "
               f"{run.id}@{step} ({run.name}) and of {ref_label}, per layer and module, and the mean relative drift "
               "of the singular values (%)" + ("; = marks matrices whose angles are 0 by dimension alone (k ≥ n), "
                                                "not by training." if grid.forced else "."))  # fmt: skip
    notes = (f"checkpoint {run.id}@{step} against {ref_label}; side u; k {first.k}; method {first.method}",)
    return Table("spectra", tuple(columns), tuple(out), caption, (run.id,), "tab:healer-rotation", notes, "Layer")


# -- rendering ------------------------------------------------------------------------------------------------


def render(table: Table, fmt: str, provenance: Provenance, ci: str = "brackets", comment: bool = True) -> str:
    """The table as LaTeX, Markdown, CSV or JSON; `comment` adds the provenance block (CSV: opt-in `#` lines)."""
    if fmt == "latex":
        return _latex(table, provenance, ci)
    if fmt == "markdown":
        return _markdown(table, provenance, ci)
    if fmt == "csv":
        return _csv(table, provenance, comment)
    return _json(table, provenance)


def _ci_words(table: Table, ci: str) -> str:
    grouped = any(isinstance(c, Mean) for r in table.rows for c in r.cells.values())
    words = {"brackets": ", Wilson 95 % intervals in brackets", "pm": ", ± half the width of the Wilson 95 % interval",
             "none": ""}[ci]  # fmt: skip
    return words + ("; grouped rows: mean ± standard deviation over the runs" if grouped else "")


def _value_text(cell: Cell, ci: str) -> str:
    if cell is None:
        return "—"
    if isinstance(cell, str):
        return cell
    if isinstance(cell, Acc):
        value = f"{100 * cell.value:.1f}"
        if ci == "brackets":
            return f"{value} [{100 * cell.low:.1f}, {100 * cell.high:.1f}]"
        return f"{value} ± {100 * (cell.high - cell.low) / 2:.1f}" if ci == "pm" else value
    if isinstance(cell, Mean):
        return f"{100 * cell.value:.1f} ± {100 * cell.std:.1f}"
    if cell.value is None:
        return cell.note or "n/a"
    if cell.note:
        return cell.note
    text = {"pt": f"{cell.value:+.1f}", "deg": f"{cell.value:.2f}"}.get(cell.unit, f"{cell.value:.1f}")
    return text.replace("-", "−")  # a minus sign, not a hyphen (LaTeX: $-$)


def _best(table: Table) -> set[tuple[int, str]]:
    """(row, column) of the highest value of each column that bolds its best, when there are rows to compare."""
    best: set[tuple[int, str]] = set()
    if len(table.rows) < 2:
        return best
    for column in table.columns:
        if not column.best:
            continue
        values = {i: _number(r.cells.get(column.key)) for i, r in enumerate(table.rows)}
        known = {i: v for i, v in values.items() if v is not None}
        if len(known) > 1 and not math.isclose(max(known.values()), min(known.values()), abs_tol=1e-12):
            top = max(known.values())  # bold only where the rows differ: a stage they share has no best
            best |= {(i, column.key) for i, v in known.items() if math.isclose(v, top, abs_tol=1e-12)}
    return best


def _number(cell: Cell) -> float | None:
    if isinstance(cell, Acc | Mean):
        return cell.value
    if isinstance(cell, Number):
        return cell.value if not cell.note else None
    return None


def _groups(table: Table) -> list[tuple[str, int]]:
    """Runs of neighbouring columns that share a group header: (header, span)."""
    spans: list[tuple[str, int]] = []
    for column in table.columns:
        if spans and spans[-1][0] == column.group:
            spans[-1] = (column.group, spans[-1][1] + 1)
        else:
            spans.append((column.group, 1))
    return spans


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                  "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "→": r"$\rightarrow$",
                  "±": r"$\pm$", "−": r"$-$", "Δ": r"$\Delta$", "σ": r"$\sigma$", "°": r"$^\circ$", "≥": r"$\geq$",
                  "—": "---"}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in text)


def _interval(cell: Acc) -> str:
    return f"{{\\scriptsize [{100 * cell.low:.1f}, {100 * cell.high:.1f}]}}"


WIDE_COLUMNS = 6  # a table with more numeric columns spans both columns of a two-column paper (table*)


def _latex(table: Table, provenance: Provenance, ci: str) -> str:
    """booktabs; with intervals in brackets, each row's intervals go on a second, smaller line under its values,
    which keeps a nine-column table inside a page's width."""
    best = _best(table)
    spec = "l" + "r" * len(table.columns)
    env = "table*" if len(table.columns) > WIDE_COLUMNS else "table"
    lines = [f"% {line}" for line in provenance.lines(table)]
    lines += ["% needs \\usepackage{booktabs}", f"\\begin{{{env}}}[t]", "\\centering", "\\small",
              "\\setlength{\\tabcolsep}{4pt}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]  # fmt: skip
    groups = _groups(table)
    if any(name for name, _ in groups):
        heads, rules, at = [""], [], 2
        for name, span in groups:
            heads.append(f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(name)}}}" if span > 1 else latex_escape(name))
            if name:
                rules.append(f"\\cmidrule(lr){{{at}-{at + span - 1}}}")
            at += span
        lines += [" & ".join(heads) + " \\\\", " ".join(rules)]
    lines.append(" & ".join([table.row_header, *(latex_escape(c.header) for c in table.columns)]) + " \\\\")
    lines.append("\\midrule")
    split = ci == "brackets"
    for i, row in enumerate(table.rows):
        cells, under = [latex_escape(row.label)], [""]
        for column in table.columns:
            cell = row.cells.get(column.key)
            text = latex_escape(_value_text(cell, "none" if split else ci))
            cells.append(f"\\textbf{{{text}}}" if (i, column.key) in best else text)
            under.append(_interval(cell) if isinstance(cell, Acc) else "")
        lines.append(" & ".join(cells) + " \\\\")
        if split and any(under):
            lines.append(" & ".join(under) + " \\\\")
    words = _ci_words(table, ci)
    words = words.replace("in brackets", "in brackets under each value") if split else words
    caption = latex_escape(table.caption.replace("{ci}", words))
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{caption}}}", f"\\label{{{table.label}}}",
              f"\\end{{{env}}}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _markdown_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(table: Table, provenance: Provenance, ci: str) -> str:
    best = _best(table)
    lines = ["<!--", *(f"  {line}".replace("-->", "- ->") for line in provenance.lines(table)), "-->", ""]
    headers = [table.row_header, *((f"{c.group} {c.header}" if c.group else c.header) for c in table.columns)]
    lines.append("| " + " | ".join(_markdown_escape(h) for h in headers) + " |")
    lines.append("|---|" + "|".join("---:" for _ in table.columns) + "|")
    for i, row in enumerate(table.rows):
        cells = [_markdown_escape(row.label)]
        for column in table.columns:
            text = _markdown_escape(_value_text(row.cells.get(column.key), ci))
            cells.append(f"**{text}**" if (i, column.key) in best else text)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", table.caption.replace("{ci}", _ci_words(table, ci))]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("row", "column", "value", "ci_low", "ci_high", "std", "correct", "n", "runs", "run", "step", "split",
              "protocol", "unit", "text")  # fmt: skip


def _records(table: Table) -> Iterable[dict[str, Any]]:
    """One record per number, long format: the row, the column, the value and where it came from."""
    for row in table.rows:
        for column in table.columns:
            cell = row.cells.get(column.key)
            name = f"{column.group} {column.header}".strip()
            base: dict[str, Any] = {"row": row.label, "column": name}
            if isinstance(cell, Acc):
                yield {**base, "value": cell.value, "ci_low": cell.low, "ci_high": cell.high, "correct": cell.correct,
                       "n": cell.n, "runs": 1, "run": cell.run, "step": cell.step, "split": cell.split,
                       "protocol": cell.protocol, "unit": "fraction"}  # fmt: skip
            elif isinstance(cell, Mean):
                yield {**base, "value": cell.value, "std": cell.std, "n": cell.parts[0].n, "runs": len(cell.parts),
                       "split": cell.parts[0].split, "protocol": cell.parts[0].protocol, "unit": "fraction",
                       "text": cell.source()}  # fmt: skip
            elif isinstance(cell, Number):
                yield {**base, "value": None if cell.note else cell.value, "unit": cell.unit,
                       "text": cell.note or cell.source()}  # fmt: skip
            elif isinstance(cell, str):
                yield {**base, "text": cell}


def _csv(table: Table, provenance: Provenance, comment: bool) -> str:
    buffer = io.StringIO()
    if comment:
        buffer.writelines(f"# {line}\n" for line in provenance.lines(table))
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in _records(table):
        writer.writerow({k: ("" if v is None else v) for k, v in record.items()})
    return buffer.getvalue()


def _json(table: Table, provenance: Provenance) -> str:
    data = {"provenance": {"healer": provenance.version, "database": provenance.database,
                           "command": provenance.command, "runs": list(table.runs),
                           "sources": {r.label: list(r.sources) for r in table.rows}},
            "table": table.kind, "caption": table.caption.replace("{ci}", _ci_words(table, "brackets")),
            "records": [{k: v for k, v in r.items()} for r in _records(table)]}  # fmt: skip
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# -- files ----------------------------------------------------------------------------------------------------


def check_output(path: Path | None) -> None:
    """-o FILE: its folder must exist (nothing is created behind the user's back, nothing half-written)."""
    if path is not None and not path.expanduser().resolve().parent.is_dir():
        raise HealerError(f"-o {path}: its folder does not exist; create it first")


def export_to(table: Table, fmt: str, path: Path, provenance: Provenance, ci: str = "brackets",
              comment: bool | None = None) -> None:  # fmt: skip
    """`healer export table|sweep|spectra -o FILE` (and the TUI's `E`): render and write the file whole."""
    check_output(path)
    comment = fmt != "csv" if comment is None else comment
    write_atomic(path.expanduser(), render(table, fmt, provenance, ci, comment=comment))


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename it: a reader never sees half a file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def backup_db(source: Path, target: Path) -> int:
    """A consistent copy of the store while runs write (SQLite's online backup from a read transaction), written to
    a temporary file and renamed; returns its size in bytes. The copy is a plain rollback-journal file, so it opens
    read-only anywhere (`healer tui --db FILE --read-only`)."""
    fd, scratch = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(scratch) as dst:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return target.stat().st_size
