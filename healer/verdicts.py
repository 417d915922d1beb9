"""Verdicts: whether *this* run showed each claim of the paper, decided from Wilson intervals and paired tests on the
same items, never from point estimates alone. `healer demo` ends with them; each names the numbers it rests on.

The claims (Jin et al., 2509.12235), and the rule each is decided by here:

- forgetting: OOD accuracy falls during ID-only SFT. Shown when the OOD interval at SFT's last checkpoint lies wholly
  below the interval at its best OOD point (the starting model included).
- loss-pick: the checkpoint a loss-based rule would pick is not the OOD peak. Shown when the lowest-ID-loss checkpoint
  is another step and its OOD interval lies wholly below the peak's.
- rotation: the singular vectors rotate while the singular values hold. Shown when the mean principal angle grows
  from the first measured checkpoint to the last, and the subspaces' movement at the last, sin(angle), is at least
  twice the mean relative singular-value drift.
- rl-heals: RL recovers OOD beyond an SFT control from the same checkpoint. Shown when the RL run ends with more OOD
  items right than the control on the same items, by an exact McNemar test at p < 0.05.
- edit-restores: putting the OOD peak's top singular vectors back restores OOD. Shown when the edited checkpoint has
  more OOD items right than the checkpoint it edited, by the same paired test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from healer.evals import by_step, default_protocol, find_peaks
from healer.stats import mcnemar
from healer.store import Eval, Spectrum

ALPHA = 0.05  # the paired tests' level
HOLD_RATIO = 2.0  # rotation: sin(angle) at least this many times the singular values' relative drift
CLAIMS = {
    "forgetting": "OOD accuracy falls during ID-only SFT",
    "loss-pick": "the checkpoint with the lowest ID loss is not the OOD peak",
    "rotation": "singular vectors rotate while singular values hold",
    "rl-heals": "RL recovers OOD beyond an SFT control from the same checkpoint",
    "edit-restores": "restoring the OOD peak's top singular vectors restores OOD",
}
Items = Callable[[Sequence[int]], dict[int, dict[int, bool]]]  # eval ids -> {eval id: {item: correct}}


@dataclass(frozen=True)
class Verdict:
    claim: str  # a key of CLAIMS
    shown: bool | None  # None: this run could not test it (a run or an evaluation is missing)
    evidence: str  # the numbers the verdict rests on
    seeds: int = 1
    p_value: float | None = None

    @property
    def text(self) -> str:
        return CLAIMS[self.claim]

    def line(self) -> str:
        mark = {True: "shown    ", False: "not shown", None: "untested "}[self.shown]
        seeds = f"{self.seeds} seed" + ("s" if self.seeds != 1 else "")
        return f"{mark}  {self.text}: {self.evidence} ({seeds})"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.text}


def _pct(e: Eval) -> str:
    return f"{100 * e.accuracy:.1f} [{100 * e.ci_low:.1f}, {100 * e.ci_high:.1f}]"


def forgetting(sft_evals: list[Eval]) -> Verdict:
    protocol = default_protocol(sft_evals)
    table = {s: v["ood"] for s, v in by_step(sft_evals, protocol).items() if "ood" in v}
    if len(table) < 2:
        return Verdict("forgetting", None, "fewer than two OOD evaluations of the SFT run")
    best = max(table, key=lambda s: (table[s].correct / table[s].n, -s))
    last = max(table)
    peak, end = table[best], table[last]
    where = "the starting model" if best == 0 else f"step {best}"
    evidence = f"OOD {_pct(peak)} at {where}, {_pct(end)} at step {last}"
    if best == last:
        return Verdict("forgetting", False, evidence + ": the last checkpoint is the best")
    disjoint = end.ci_high < peak.ci_low
    return Verdict("forgetting", disjoint, evidence + (", intervals disjoint" if disjoint else ", intervals overlap"))


def loss_pick(sft_evals: list[Eval]) -> Verdict:
    protocol = default_protocol(sft_evals)
    peaks = find_peaks(sft_evals, protocol)
    table = by_step(sft_evals, protocol)
    if "loss-pick" not in peaks or "peak-ood" not in peaks:
        return Verdict("loss-pick", None, "no ID loss or no OOD evaluation of the SFT checkpoints")
    pick, peak = peaks["loss-pick"].step, peaks["peak-ood"].step
    at_pick, at_peak = table[pick]["ood"], table[peak]["ood"]
    evidence = f"lowest ID loss at step {pick} (OOD {_pct(at_pick)}), OOD peak at step {peak} (OOD {_pct(at_peak)})"
    if pick == peak:
        return Verdict("loss-pick", False, evidence + ": the same checkpoint")
    below = at_pick.ci_high < at_peak.ci_low
    return Verdict("loss-pick", below, evidence + (", intervals disjoint" if below else ", intervals overlap"))


def rotation(spectra: list[Spectrum]) -> Verdict:
    from healer.spectra import by_step as spectra_by_step

    steps = spectra_by_step(spectra)
    measured = {s: v for s, v in steps.items() if s > 0}
    if len(measured) < 2:
        return Verdict("rotation", None, "fewer than two checkpoints with spectra")
    first, last = min(measured), max(measured)
    angle0, angle1 = measured[first]["mean_angle_deg"], measured[last]["mean_angle_deg"]
    drift = measured[last]["sigma_rel_drift"]
    moved = math.sin(math.radians(angle1))
    evidence = (f"mean principal angle {angle0:.2f}° at step {first} → {angle1:.2f}° at step {last} (sin {moved:.3f}), "
                f"singular values drifted {100 * drift:.2f} %")  # fmt: skip
    shown = angle1 > angle0 and moved >= HOLD_RATIO * drift
    return Verdict("rotation", shown, evidence)


def paired(claim: str, better: Eval, than: Eval, items: Items, what: tuple[str, str]) -> Verdict:
    """`better` against `than` on the same OOD items: McNemar's exact test on the items only one got right."""
    found = items([better.id, than.id])
    a, b = found.get(better.id, {}), found.get(than.id, {})
    evidence = f"OOD {_pct(better)} {what[0]} against {_pct(than)} {what[1]}"
    if not a or a.keys() != b.keys():
        return Verdict(claim, None, evidence + "; not the same items, so no paired test")
    gained = sum(a[i] and not b[i] for i in a)
    lost = sum(b[i] and not a[i] for i in a)
    p = mcnemar(gained, lost)
    evidence += f"; {gained} items right only {what[0]}, {lost} only {what[1]}, McNemar p = {p:.3g}"
    return Verdict(claim, gained > lost and p < ALPHA, evidence, p_value=p)


def rl_heals(rl: tuple[int, list[Eval]], control: tuple[int, list[Eval]] | None, items: Items) -> Verdict:
    if control is None:
        return Verdict("rl-heals", None, f"no SFT control beside RL run {rl[0]}")
    rl_last, control_last = _last_ood(rl[1]), _last_ood(control[1])
    if rl_last is None or control_last is None:
        return Verdict("rl-heals", None, f"run {rl[0] if rl_last is None else control[0]} has no OOD evaluation")
    return paired("rl-heals", rl_last, control_last, items, (f"after RL (run {rl[0]})",
                                                             f"after the control (run {control[0]})"))  # fmt: skip


def edit_restores(edited: Eval | None, before: Eval | None, items: Items) -> Verdict:
    if edited is None or before is None:
        return Verdict("edit-restores", None, "no evaluated edit")
    return paired("edit-restores", edited, before, items, ("edited", "before the edit"))


def _last_ood(evals: list[Eval]) -> Eval | None:
    table = {s: v["ood"] for s, v in by_step(evals, default_protocol(evals)).items() if s > 0 and "ood" in v}
    return table[max(table)] if table else None


def of_lineage(reader: Any, sft: int, rl_runs: Sequence[int], control: int | None, edit: int | None) -> list[Verdict]:
    """Every claim for an SFT run, its RL runs, the SFT control and the edit (what `healer demo` made): the RL run
    tested is the one that started where the control did."""
    sft_evals = reader.evals(sft)
    verdicts = [forgetting(sft_evals), loss_pick(sft_evals), rotation(reader.spectra(sft, angles=False))]
    start = reader.find_run(control).parent_step if control is not None else None
    matched = [r for r in rl_runs if reader.find_run(r).parent_step == start]
    if matched and control is not None:
        verdicts.append(rl_heals((matched[0], reader.evals(matched[0])), (control, reader.evals(control)),
                                 reader.eval_items))  # fmt: skip
    else:
        verdicts.append(Verdict("rl-heals", None, "no RL run and SFT control from the same checkpoint"))
    edited = before = None
    if edit is not None:
        edit_run = reader.find_run(edit)
        edited = _ood_at(reader.evals(edit), 0)
        before = _ood_at(sft_evals, edit_run.parent_step) if edit_run.parent_run == sft else None
    verdicts.append(edit_restores(edited, before, reader.eval_items))
    return verdicts


def _ood_at(evals: list[Eval], step: int | None) -> Eval | None:
    table = by_step(evals, default_protocol(evals))
    return table.get(step if step is not None else -1, {}).get("ood")
