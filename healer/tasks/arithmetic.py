"""A small built-in arithmetic task: ID adds and subtracts numbers below 50, OOD numbers from 50 to 99."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from healer.tasks import Example, Score, check_split

RANGES = {"id": (0, 49), "ood": (50, 99)}
NUMBER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Arithmetic:
    name: str = "arithmetic"
    splits: tuple[str, ...] = ("id", "ood")

    def train_examples(self, split: str, n: int, seed: int) -> list[Example]:
        return self._draw(split, n, f"train:{seed}")

    def eval_examples(self, split: str, n: int, seed: int) -> list[Example]:
        return self._draw(split, n, f"eval:{seed}")

    def _draw(self, split: str, n: int, stream: str) -> list[Example]:
        check_split(self, split)
        low, high = RANGES[split]
        rng = random.Random(f"{self.name}:{split}:{stream}")
        out = []
        for _ in range(n):
            a, b, op = rng.randint(low, high), rng.randint(low, high), rng.choice("+-")
            value = a + b if op == "+" else a - b
            out.append(Example(prompt=f"{a}{op}{b}=", answer=str(value), split=split, meta={"value": value}))
        return out

    def score(self, example: Example, completion: str) -> Score:
        match = NUMBER.search(completion)
        if match is None:
            return Score("illegal", 0.0, "the answer holds no number", format_error=True)
        if int(match.group()) == example.meta["value"]:
            return Score("correct", 1.0)
        return Score("wrong_value", 0.0, f"{match.group()} is not the value of {example.prompt.rstrip('=')}")
