"""The task interface (examples per split, prompt, scoring) and the registry of built-in tasks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from healer.errors import HealerError


@dataclass(frozen=True)
class Example:
    """One episode: the user prompt, a reference answer (the SFT target) and what scoring needs."""

    prompt: str
    answer: str
    split: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Score:
    outcome: str  # "correct" or a task-specific failure name
    reward: float

    @property
    def correct(self) -> bool:
        return self.outcome == "correct"


class Task(Protocol):
    name: str
    splits: tuple[str, ...]

    def examples(self, split: str, n: int, seed: int) -> list[Example]:
        """`n` examples of `split`, the same ones for the same seed."""
        ...

    def score(self, example: Example, completion: str) -> Score:
        """Judge a model's completion for an example."""
        ...


def _arithmetic() -> Task:
    from healer.tasks.arithmetic import Arithmetic

    return Arithmetic()


REGISTRY: dict[str, Callable[[], Task]] = {"arithmetic": _arithmetic}


def task_names() -> list[str]:
    return sorted(REGISTRY)


def get_task(name: str) -> Task:
    try:
        return REGISTRY[name]()
    except KeyError:
        raise HealerError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}") from None


def check_split(task: Task, split: str) -> None:
    if split not in task.splits:
        raise HealerError(f"task {task.name!r} has no split {split!r}; its splits: {', '.join(task.splits)}")
