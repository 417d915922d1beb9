"""The specs that the tasks and the presets share: a task's options and its reward table. Imports neither, so
that `healer.tasks` need not import `healer.presets` (which re-exports these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def opt(default: Any, help: str) -> Any:
    """A dataclass field with a default and the help text `healer presets show --help-keys` prints."""
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple for sequence defaults")
    return field(default=default, metadata={"help": help})


OUTCOMES = ("correct", "partial", "wrong_value", "wrong_numbers", "illegal")  # the outcomes RewardSpec pays


@dataclass(frozen=True)
class RewardSpec:
    correct: float = opt(5.0, "a formula that uses the cards' numbers once each and equals the target")
    partial: float = opt(1.0, "a prefix of a known solution that does not evaluate yet")
    wrong_value: float = opt(-1.0, "legal, the right numbers, the wrong value")
    wrong_numbers: float = opt(-2.0, "per number not on the cards, used too often, or unused")
    per_offence: bool = opt(True, "charge wrong_numbers once per offending number (the paper's penalty), else once")
    illegal: float = opt(-3.0, "not a formula of numbers, + - * / and parentheses (unparseable answers too)")


@dataclass(frozen=True)
class TaskSpec:
    name: str = opt("general_points", "task that provides data, ID/OOD splits and scoring (`healer task ls`)")
    train_split: str = opt("id", "split the training examples are drawn from")
    n_train: int = opt(2000, "number of training examples drawn")
    seed: int = opt(0, "seed of the training draw, separate from the training seed")
    eval_n: int = opt(234, "episodes per evaluation split (the paper used 234)")
    eval_seed: int = opt(0, "seed of the fixed evaluation sets, the same for every run")
    holdout_eval: bool = opt(True, "keep the evaluation items (GeneralPoints: hands) out of the training data")
    n_cards: int = opt(4, "GeneralPoints: cards per hand")
    target: int = opt(24, "GeneralPoints: the value the formula must reach")
    prompt: str = opt("paper-v1", "GeneralPoints: prompt template version (`healer task sample` shows it)")
    reward: RewardSpec = opt(RewardSpec(), "GeneralPoints: reward of each outcome (the paper's table)")
    path: str = opt("", "jsonl: the JSONL file (prompt, answer, optional split)")
    match: Literal["exact", "numeric"] = opt("exact", "jsonl: how an answer is compared with the reference")
