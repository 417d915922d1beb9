"""A task from a local JSONL file of prompts and answers (optional split), scored by exact or numeric match."""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from healer import paths
from healer.errors import HealerError
from healer.specs import RewardSpec, TaskSpec
from healer.tasks import Example, Score, check_split

DEFAULT_SPLIT = "id"
TOLERANCE = 1e-9  # relative to max(1, |answer|)
NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:/\d+)?")
MAX_EXACT = 400  # longer tokens (Fraction("1e999999999") would build a billion-digit integer) are read as floats


@dataclass(frozen=True)
class Item:
    prompt: str
    answer: str
    split: str
    line: int


@dataclass(frozen=True)
class JsonlTask:
    """Items read once from the file; evaluation sets are seeded samples of a split, training draws the rest."""

    path: str
    items: tuple[Item, ...]
    match: str = "exact"
    reward: RewardSpec = field(default_factory=RewardSpec)
    eval_n: int = 234
    eval_seed: int = 0
    holdout_eval: bool = True
    name: str = "jsonl"
    splits: tuple[str, ...] = (DEFAULT_SPLIT,)

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> JsonlTask:
        if not spec.path:
            raise HealerError("task.path is required for the jsonl task (a JSONL file of prompt, answer, split)")
        path = Path(paths.expand(spec.path))
        items = read_items(path, numeric=spec.match == "numeric")
        return cls(
            path=str(path),
            items=items,
            match=spec.match,
            reward=spec.reward,
            eval_n=spec.eval_n,
            eval_seed=spec.eval_seed,
            holdout_eval=spec.holdout_eval,
            splits=tuple(dict.fromkeys(item.split for item in items)),
        )

    def eval_examples(self, split: str, n: int, seed: int) -> list[Example]:
        """Up to `n` items of the split, a seeded sample without repeats (all of them when the split is smaller)."""
        pool = self._pool(split)
        random.Random(f"{self.name}:{split}:eval:{seed}").shuffle(pool)
        return [self._example(item) for item in pool[:n]]

    def train_examples(self, split: str, n: int, seed: int) -> list[Example]:
        """`n` items of the split in seeded order, reshuffled each pass; evaluation prompts held out if asked."""
        held_out = self._evaluation_prompts() if self.holdout_eval else set()
        pool = [item for item in self._pool(split) if item.prompt not in held_out]
        if not pool:
            raise HealerError(
                f"{self.path}: split {split!r} has no items left for training once the {self.eval_n} evaluation "
                "items are held out; lower task.eval_n or set task.holdout_eval = false"
            )
        rng = random.Random(f"{self.name}:{split}:train:{seed}")
        drawn: list[Item] = []
        while len(drawn) < n:
            rng.shuffle(pool)
            drawn.extend(pool[: n - len(drawn)])
        return [self._example(item) for item in drawn]

    def score(self, example: Example, completion: str) -> Score:
        answer = example.answer
        if self.match == "exact":
            if completion.strip() == answer.strip():
                return Score("correct", self.reward.correct)
            return Score("wrong_value", self.reward.wrong_value, "Your answer is not correct.")
        found = first_number(completion)
        if found is None:
            return Score("illegal", self.reward.illegal, "Your answer holds no number.", format_error=True)
        if numbers_match(found, first_number(answer)):
            return Score("correct", self.reward.correct)
        return Score("wrong_value", self.reward.wrong_value, f"{found} is not the right answer.")

    def _pool(self, split: str) -> list[Item]:
        check_split(self, split)
        return [item for item in self.items if item.split == split]

    def _evaluation_prompts(self) -> set[str]:
        return {e.prompt for split in self.splits for e in self.eval_examples(split, self.eval_n, self.eval_seed)}

    def _example(self, item: Item) -> Example:
        return Example(item.prompt, item.answer, item.split, meta={"line": item.line})


def read_items(path: Path, numeric: bool) -> tuple[Item, ...]:
    """Every item of the file; the first bad line is an error naming file:line and what is wrong."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise HealerError(f"task.path: no such file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HealerError(f"task.path: cannot read {str(path)!r}: {exc}") from None
    items = tuple(
        _item(line, f"{path}:{number}", number, numeric) for number, line in enumerate(lines, 1) if line.strip()
    )
    if not items:
        raise HealerError(f"{path}: the file holds no items (one JSON object per line)")
    return items


def _item(line: str, where: str, number: int, numeric: bool) -> Item:
    try:
        data = json.loads(line)
    except ValueError:
        raise HealerError(f"{where}: not valid JSON") from None
    if not isinstance(data, dict):
        raise HealerError(f'{where}: expected a JSON object with "prompt" and "answer"')
    for key in ("prompt", "answer"):
        if key not in data:
            raise HealerError(f'{where}: missing "{key}"')
    if not isinstance(data["prompt"], str):
        raise HealerError(f'{where}: "prompt" must be a string')
    answer = data["answer"]
    if isinstance(answer, bool) or not isinstance(answer, str | int | float):
        raise HealerError(f'{where}: "answer" must be a string or a number')
    split = data.get("split", DEFAULT_SPLIT)
    if not isinstance(split, str) or not split:
        raise HealerError(f'{where}: "split" must be a non-empty string')
    if numeric and first_number(str(answer)) is None:
        raise HealerError(f'{where}: "answer" holds no number, but task.match is numeric')
    return Item(data["prompt"], str(answer), split, number)


def first_number(text: str) -> Fraction | float | None:
    """The first number in the text (integer, decimal, exponent or a/b fraction): exact unless it is enormous."""
    for match in NUMBER.finditer(text):
        token = match.group()
        exponent = re.search(r"[eE]([-+]?\d+)", token)
        try:
            if len(token) > MAX_EXACT or (exponent and abs(int(exponent.group(1)[:6])) > MAX_EXACT):
                return float(token.split("/")[0])  # inf, 0.0 or a float: it can still be compared
            return Fraction(token)
        except (ValueError, ZeroDivisionError):
            continue  # "3/0": look further
    return None


def numbers_match(found: Fraction | float, expected: Fraction | float | None) -> bool:
    """Equal exactly, or within TOLERANCE relative to max(1, |expected|)."""
    if expected is None:
        return False
    if found == expected:
        return True
    gap = abs(float(found) - float(expected))
    return math.isfinite(gap) and gap <= TOLERANCE * max(1.0, abs(float(expected)))
