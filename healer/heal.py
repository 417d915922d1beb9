"""The heal sweep: RL from several checkpoints of one SFT run, and how much of the lost OOD accuracy each recovers.

For a start checkpoint at step s of an SFT run, with OOD accuracy o(s) and the run's highest OOD accuracy P (over
every evaluated checkpoint, the model it started from included):

    lost      = P - o(s)                      what SFT had lost by step s
    gained    = o_after - o(s)                what RL changed, at the RL run's last evaluated checkpoint
    recovered = gained / lost                 (undefined when nothing was lost)

All three are exact fractions of correct / n. Start and after come from the RL run's own evaluations (step 0 is
the start checkpoint, evaluated in the RL run with its settings), so both sides of every difference were measured
the same way; P and o(s) come from the SFT run's evaluations with the same task, split size and protocol. The
paired flips (items wrong at the start and right after, and the reverse) show how much of a change is churn.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from healer.errors import HealerError
from healer.evals import PEAK_RULES, by_step, find_peaks
from healer.presets import Preset, renamed
from healer.refs import CheckpointRef, check_startable, resolve_checkpoint
from healer.store import Eval, Run, Store

DEFAULT_AT = ("peak-ood", "last")


@dataclass(frozen=True)
class Start:
    """A start checkpoint of the sweep and the names it goes by (`peak-ood`, `last`, ...)."""

    ref: CheckpointRef
    labels: tuple[str, ...]

    @property
    def step(self) -> int:
        return self.ref.step


def choose_starts(store: Store, sft: Run, at: str | None = None, around: str | None = None, count: int = 5,
                  steps: str | None = None) -> list[Start]:  # fmt: skip
    """The checkpoints to start from, in step order, each once; every one checked to exist before anything runs."""
    if sum(x is not None for x in (at, around, steps)) > 1:
        raise HealerError("give one of --at, --around and --steps")
    named = _named_steps(store, sft)
    if steps is not None:
        wanted = [_parse_step(s, "--steps") for s in _items(steps, "--steps")]
    elif around is not None:
        wanted = _around(store, sft, around, count)
    else:
        wanted = [_selector_step(store, sft, s) for s in _items(at or ",".join(DEFAULT_AT), "--at")]
    starts = []
    for step in sorted(set(wanted)):
        ref = resolve_checkpoint(store, f"{sft.id}@{step}")
        starts.append(Start(ref, tuple(name for name, s in named.items() if s == step)))
    return starts


def queue_starts(store: Store, sft: Run, preset: Preset, starts: list[Start], priority: int) -> list[Run]:
    """`healer heal --queue` (and the TUI's `h`): one queued RL run per start point, each waiting for nothing (its
    checkpoint exists already), every start checked before the first is queued."""
    from healer import queue

    for start in starts:
        check_startable(start.ref)
    return [queue.add(store, named(preset, start), start=f"{sft.id}@{start.step}", priority=priority)
            for start in starts]  # fmt: skip


def named(preset: Preset, start: Start) -> Preset:
    """The RL run's name: the preset's, and where it starts (`tiny-grpo-from-40`)."""
    return renamed(preset, f"{preset.spec.name}-from-{start.step}")


def _items(text: str, option: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise HealerError(f"{option}: give a comma-separated list, e.g. {option} peak-ood,last")
    return items


def _parse_step(text: str, option: str) -> int:
    if not text.isdigit():
        raise HealerError(f"{option}: {text!r} is not a step number")
    return int(text)


def _named_steps(store: Store, run: Run) -> dict[str, int]:
    checkpoints = store.checkpoints(run.id)
    return named_steps(store.evals(run.id), checkpoints[-1].step if checkpoints else None)


def _selector_step(store: Store, run: Run, selector: str) -> int:
    """The step a selector names; a checkpoint of the run must exist there (resolve_checkpoint says which do)."""
    return resolve_checkpoint(store, f"{run.id}@{selector}").step


def _around(store: Store, run: Run, selector: str, count: int) -> list[int]:
    """`count` checkpoints centred on the named one (fewer at the ends of the run), in step order."""
    if count < 1:
        raise HealerError("--count must be at least 1")
    centre = _selector_step(store, run, selector)
    steps = [c.step for c in store.checkpoints(run.id)]
    if centre not in steps:
        raise HealerError(f"--around {selector}: run {run.id} has no saved checkpoint at step {centre} to centre on")
    i = steps.index(centre)
    lo = max(0, min(i - (count - 1) // 2, len(steps) - count))
    return steps[lo : lo + count]


# -- the table -------------------------------------------------------------------------------------------

Samples = Callable[[Sequence[int]], dict[int, dict[int, bool]]]  # eval ids -> {eval id: {item: correct}}


def heal_rows(sft: Run, evals: dict[int, list[Eval]], rl_runs: list[Run], *, last_checkpoint: int | None,
              samples: Samples) -> list[dict[str, Any]]:  # fmt: skip
    """One row per RL run started from a checkpoint of `sft`, in start-step order, from evaluations already read
    (`evals` by run, the SFT run's and each RL run's); `samples` reads the items of the evaluations flips compare,
    all at once. Pure: `Reader.heal_sweep` reads, this computes."""
    sft_evals = evals.get(sft.id, [])
    named = named_steps(sft_evals, last_checkpoint)
    ordered = sorted(rl_runs, key=lambda r: (r.parent_step or 0, r.id))
    pairs = [_row_evals(sft_evals, evals.get(rl.id, []), rl) for rl in ordered]
    wanted = [e.id for start, after in pairs for e in (start.get("ood"), after.get("ood")) if e is not None]
    items = samples(wanted)
    return [
        heal_row(sft, sft_evals, named, rl, start, after, items)
        for rl, (start, after) in zip(ordered, pairs, strict=True)
    ]


def _row_evals(sft_evals: list[Eval], rl_evals: list[Eval], rl: Run) -> tuple[dict[str, Eval], dict[str, Eval]]:
    """The start (the RL run's step 0, else the SFT run's evaluation there) and after (its last) evaluations."""
    rl_table = by_step(rl_evals, "single")
    start = rl_table.get(0) or by_step(sft_evals, "single").get(rl.parent_step or 0, {})
    after_step = max((s for s in rl_table if s > 0), default=None)
    return start, rl_table[after_step] if after_step is not None else {}


def heal_row(sft: Run, sft_evals: list[Eval], named: dict[str, int], rl: Run, start: dict[str, Eval],
             after: dict[str, Eval], items: dict[int, dict[int, bool]]) -> dict[str, Any]:  # fmt: skip
    step = rl.parent_step or 0
    after_step = next(iter(after.values())).step if after else None
    row: dict[str, Any] = {
        "start": {"run": sft.id, "step": step, "labels": [n for n, s in named.items() if s == step],
                  **_accuracies(start)},
        "rl_run": rl.id, "rl_name": rl.name, "method": rl.method, "status": rl.status.value,
        "after": {"step": after_step, **_accuracies(after)} if after else None,
        "delta_id": None, "delta_ood": None, "ood_peak": None, "lost": None, "recovered": None, "flips_ood": None,
    }  # fmt: skip
    for split in ("id", "ood"):
        if split in start and split in after and _comparable(start[split], after[split]):
            row[f"delta_{split}"] = float(_frac(after[split]) - _frac(start[split]))
    if "ood" in start:
        peak = _sft_peak(sft_evals, start["ood"], step)
        if peak is not None:
            peak_step, peak_eval, at_start = peak
            lost = _frac(peak_eval) - _frac(at_start)
            row["ood_peak"] = {"step": peak_step, "ood": peak_eval.accuracy}
            row["lost"] = float(lost)
            if lost > 0 and row["delta_ood"] is not None:
                row["recovered"] = float((_frac(after["ood"]) - _frac(start["ood"])) / lost)
        if "ood" in after and _comparable(start["ood"], after["ood"]):
            row["flips_ood"] = flips(items.get(start["ood"].id, {}), items.get(after["ood"].id, {}))
    return row


def named_steps(evals: list[Eval], last_checkpoint: int | None) -> dict[str, int]:
    """The steps a run's named checkpoints are at: its peaks, and `last` = its last checkpoint on disk."""
    named = {name: peak.step for name, peak in find_peaks(evals).items()}
    if last_checkpoint is not None:
        named["last"] = last_checkpoint
    return named


def _sft_peak(evals: list[Eval], like: Eval, step: int) -> tuple[int, Eval, Eval] | None:
    """The SFT run's highest OOD accuracy (step 0 included) and its OOD at `step`, both measured like `like`."""
    same = [e for e in evals if e.split == "ood" and _comparable(e, like)]
    at_start = [e for e in same if e.step == step]
    if not same or not at_start:
        return None
    best = max(same, key=lambda e: (Fraction(e.correct, e.n), -e.step))
    return best.step, best, at_start[-1]


def _comparable(a: Eval, b: Eval) -> bool:
    return (a.task, a.n, a.protocol, a.max_attempts, _items_key(a)) == (b.task, b.n, b.protocol, b.max_attempts,
                                                                         _items_key(b))  # fmt: skip


def _items_key(e: Eval) -> Any:
    """The settings that decide which items were asked and how (seeds, decoding), not when or how fast."""
    settings = json.loads(e.settings or "{}")
    return json.dumps({k: v for k, v in settings.items() if k not in ("batch_size", "loss")}, sort_keys=True)


def flips(before: dict[int, bool], after: dict[int, bool]) -> dict[str, int] | None:
    """Items wrong before and right after (`gained`), and right before and wrong after (`lost`): paired counts of
    two comparable evaluations' items ({item: correct} each)."""
    if not before or before.keys() != after.keys():
        return None
    return {"gained": sum(not before[i] and after[i] for i in before),
            "lost": sum(before[i] and not after[i] for i in before)}  # fmt: skip


def _frac(e: Eval) -> Fraction:
    return Fraction(e.correct, e.n)


def _accuracies(splits: dict[str, Eval]) -> dict[str, Any]:
    return {s: {"accuracy": e.accuracy, "ci_low": e.ci_low, "ci_high": e.ci_high, "correct": e.correct, "n": e.n}
            for s, e in splits.items()}  # fmt: skip


__all__ = ["DEFAULT_AT", "PEAK_RULES", "Start", "choose_starts", "flips", "heal_rows"]
