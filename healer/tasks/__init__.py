"""The task interface (training and evaluation examples per split, scoring) and the registry of tasks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from healer.errors import HealerError

if TYPE_CHECKING:
    from healer.specs import TaskSpec


@dataclass(frozen=True)
class Example:
    """One episode: the user prompt, a reference answer (the SFT target) and what scoring needs in `meta`."""

    prompt: str
    answer: str
    split: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Score:
    """A verdict on one completion.

    outcome: "correct" or a task-specific failure ("wrong_value", "illegal", ...);
    reward: the RL reward for it, from the task's reward table;
    feedback: what the verifier says, sent back as the next user turn in the multi-attempt protocol;
    format_error: the answer could not be parsed at all (counts towards the format-error rate).
    """

    outcome: str
    reward: float
    feedback: str = ""
    format_error: bool = False

    @property
    def correct(self) -> bool:
        return self.outcome == "correct"


class Task(Protocol):
    name: str
    splits: tuple[str, ...]

    def train_examples(self, split: str, n: int, seed: int) -> list[Example]:
        """`n` training examples of `split`, the same ones for the same seed (evaluation items held out if asked)."""
        ...

    def eval_examples(self, split: str, n: int, seed: int) -> list[Example]:
        """The fixed evaluation set of `split`: the same `n` episodes for the same seed, in every run."""
        ...

    def score(self, example: Example, completion: str) -> Score:
        """Judge a model's completion for an example; never raises on any string."""
        ...


TaskFactory = Callable[["TaskSpec"], Task]


def _arithmetic(spec: TaskSpec) -> Task:
    from healer.tasks.arithmetic import Arithmetic

    return Arithmetic()


def _general_points(spec: TaskSpec) -> Task:
    from healer.tasks.general_points import GeneralPoints

    return GeneralPoints.from_spec(spec)


def _jsonl(spec: TaskSpec) -> Task:
    from healer.tasks.jsonl import JsonlTask

    return JsonlTask.from_spec(spec)


def _card_sum(spec: TaskSpec) -> Task:
    from healer.tasks.card_sum import CardSum

    return CardSum.from_spec(spec)


REGISTRY: dict[str, TaskFactory] = {
    "arithmetic": _arithmetic,
    "card_sum": _card_sum,
    "general_points": _general_points,
    "jsonl": _jsonl,
}
DESCRIPTIONS: dict[str, str] = {
    "arithmetic": "adding and subtracting two numbers: ID below 50, OOD from 50 to 99",
    "card_sum": "the sum of 3 cards with J/Q/K = 10 (ID) or 11/12/13 (OOD), the rule stated in the prompt: the CPU "
    "demo's task, GeneralPoints reduced to what a ~1M-parameter model learns",
    "general_points": "the 24 game with ID (J/Q/K = 10) and OOD (J/Q/K = 11/12/13) rules, the paper's task",
    "jsonl": "a local JSONL file of prompt, answer and optional split, scored by exact or numeric match",
}


def register(name: str, factory: TaskFactory, description: str) -> None:
    REGISTRY[name] = factory
    DESCRIPTIONS[name] = description


def task_names() -> list[str]:
    return sorted(REGISTRY)


def make_task(spec: TaskSpec) -> Task:
    """The task a spec's [task] section describes."""
    try:
        factory = REGISTRY[spec.name]
    except KeyError:
        raise HealerError(f"unknown task {spec.name!r}; known tasks: {', '.join(task_names())}") from None
    return factory(spec)


def check_split(task: Task, split: str) -> None:
    if split not in task.splits:
        raise HealerError(f"task {task.name!r} has no split {split!r}; its splits: {', '.join(task.splits)}")
