"""Readings of stored evaluations: accuracy per checkpoint and the checkpoints worth naming (the OOD peak, ...)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from healer.store import Eval

PEAK_RULES = {
    "peak-ood": "highest OOD accuracy (earliest on ties)",
    "best-id": "highest ID accuracy (earliest on ties)",
    "last": "the last evaluated checkpoint",
    "loss-pick": "lowest ID loss on the reference answers: what a loss-based rule would pick",
}


@dataclass(frozen=True)
class Peak:
    rule: str
    step: int


def describe_eval(e: Eval) -> str:
    """One evaluation as a run's log line."""
    return (f"healer: eval step {e.step} {e.split}: {e.correct}/{e.n} = {e.accuracy:.3f} [{e.ci_low:.3f}, "
            f"{e.ci_high:.3f}] loss {e.loss if e.loss is None else round(e.loss, 4)} ({e.seconds:.1f} s)")  # fmt: skip


def by_step(evals: list[Eval], protocol: str) -> dict[int, dict[str, Eval]]:
    """{step: {split: eval}} for one protocol, in step order; of several, the largest n, then the newest."""
    table: dict[int, dict[str, Eval]] = {}
    for e in sorted(evals, key=lambda e: (e.step, e.n, e.id)):
        if e.protocol == protocol:
            table.setdefault(e.step, {})[e.split] = e
    return table


def default_protocol(evals: list[Eval]) -> str:
    protocols = {e.protocol for e in evals}
    return "single" if "single" in protocols or not protocols else sorted(protocols)[0]


def find_peaks(evals: list[Eval], protocol: str | None = None) -> dict[str, Peak]:
    """The named checkpoints of a run among its evaluated checkpoints (step 0, the starting model, excluded)."""
    protocol = protocol or default_protocol(evals)
    table = {step: splits for step, splits in by_step(evals, protocol).items() if step > 0}
    peaks: dict[str, Peak] = {}
    ood = [(splits["ood"].accuracy, -step) for step, splits in table.items() if "ood" in splits]
    if ood:
        peaks["peak-ood"] = Peak("peak-ood", -max(ood)[1])
    ind = [(splits["id"].accuracy, -step) for step, splits in table.items() if "id" in splits]
    if ind:
        peaks["best-id"] = Peak("best-id", -max(ind)[1])
    if table:
        peaks["last"] = Peak("last", max(table))
    losses = [(splits["id"].loss, step) for step, splits in table.items() if "id" in splits and splits["id"].loss]
    if losses:
        peaks["loss-pick"] = Peak("loss-pick", min(losses)[1])
    return peaks


def peaks_report(evals: list[Eval], protocol: str | None = None) -> dict[str, Any]:
    """`runs show --json` `peaks`: each named checkpoint with its ID and OOD accuracy side by side."""
    protocol = protocol or default_protocol(evals)
    table = by_step(evals, protocol)
    report: dict[str, Any] = {"protocol": protocol}
    if 0 in table:
        report["start"] = _at(0, table[0], "the model the run started from")
    for name, peak in find_peaks(evals, protocol).items():
        report[name] = _at(peak.step, table[peak.step], PEAK_RULES[name])
    return report


def _at(step: int, splits: dict[str, Eval], rule: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"step": step, "rule": rule}
    for split, e in splits.items():
        entry[split] = {"accuracy": e.accuracy, "ci_low": e.ci_low, "ci_high": e.ci_high, "loss": e.loss}
    return entry


@dataclass(frozen=True)
class Forgetting:
    """How far a run's OOD accuracy has fallen from its peak at its last evaluated checkpoint, and whether that is
    the paper's pattern: the fall is beyond both Wilson intervals and the ID accuracy still rose meanwhile."""

    peak_step: int
    peak: float
    last_step: int
    last: float
    drop: float  # peak - last, as a fraction (0.05 = 5 points)
    separated: bool  # last's interval lies wholly below the peak's
    id_rising: bool  # ID accuracy at the last checkpoint is above its value at the peak

    def alarm(self, threshold: float) -> bool:
        return self.separated and self.id_rising and self.drop >= threshold


def forgetting(evals: list[Eval], protocol: str | None = None) -> Forgetting | None:
    """The OOD fall since the peak (checkpoints only: step 0, the starting model, is no checkpoint of the run);
    None while the run has not evaluated a checkpoint after its OOD peak."""
    protocol = protocol or default_protocol(evals)
    table = {step: splits for step, splits in by_step(evals, protocol).items() if step > 0 and "ood" in splits}
    if len(table) < 2:
        return None
    peak_step = find_peaks([e for e in evals if e.step > 0], protocol)["peak-ood"].step
    last_step = max(table)
    if last_step <= peak_step:
        return None
    peak, last = table[peak_step]["ood"], table[last_step]["ood"]
    id_peak, id_last = table[peak_step].get("id"), table[last_step].get("id")
    rising = id_peak is not None and id_last is not None and Fraction(id_last.correct, id_last.n) > Fraction(
        id_peak.correct, id_peak.n)  # fmt: skip
    return Forgetting(peak_step, peak.accuracy, last_step, last.accuracy,
                      float(Fraction(peak.correct, peak.n) - Fraction(last.correct, last.n)),
                      last.ci_high < peak.ci_low, rising)  # fmt: skip


def eval_overrides(overrides: list[str], split: str | None = None, n: int | None = None,
                   protocol: str | None = None) -> list[str]:  # fmt: skip
    """`healer eval`'s --split, --n and --protocol as the `--set` overrides they stand for."""
    extra = [*overrides]
    if split:
        extra.append(f"eval.splits={json.dumps(split.split(','))}")
    if n is not None:
        extra.append(f"task.eval_n={n}")
    if protocol:
        extra.append(f"eval.protocol={json.dumps(protocol)}")
    return extra
