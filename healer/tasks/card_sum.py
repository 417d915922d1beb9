"""Card sum: GeneralPoints reduced to what a ~1M-parameter model can learn, for the CPU demo and fast tests.

The prompt states the face-card rule and the cards (`J=10 Q=10 K=10|3 K 5|sum:`); the answer writes each card's
value and their sum (`3+10+5=18`). The ID rule counts J/Q/K as 10, the OOD rule as 11/12/13, and the `mix` split
(for a first "pretraining" stage that teaches the model to read the rule) draws 30 % ID rules, 20 % OOD rules and
50 % random face values. A seeded quarter of the hands that hold a face card never appear in training; the ID and
OOD evaluation sets are those same hands under the two rules, so the splits differ only by the rule.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from healer.errors import HealerError
from healer.specs import RewardSpec
from healer.tasks import Example, Score, check_split
from healer.tasks.general_points import FACE_RANKS, RANKS, card_name, judge_formula

if TYPE_CHECKING:
    from healer.specs import TaskSpec

FACES = {"id": (10, 10, 10), "ood": (11, 12, 13)}
MIX = (("id", 0.3), ("ood", 0.2))  # and the remaining 50 %: random face values 1..13
STATED_SUM = re.compile(r"=\s*(\d+)\s*$")


@dataclass(frozen=True)
class CardSum:
    n_cards: int = 3
    reward: RewardSpec = field(default_factory=RewardSpec)
    holdout_eval: bool = True
    eval_seed: int = 0
    name: str = "card_sum"
    splits: tuple[str, ...] = ("id", "ood", "mix")

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> CardSum:
        if not 2 <= spec.n_cards <= 6:
            raise HealerError(f"task.n_cards = {spec.n_cards}: card_sum takes 2 to 6 cards")
        return cls(spec.n_cards, spec.reward, spec.holdout_eval, spec.eval_seed)

    def train_examples(self, split: str, n: int, seed: int) -> list[Example]:
        check_split(self, split)
        rng = random.Random(f"{self.name}:{self.n_cards}:train:{split}:{seed}")
        held_out = self.held_out_hands() if self.holdout_eval else frozenset()
        examples = []
        while len(examples) < n:
            ranks = tuple(rng.choice(RANKS) for _ in range(self.n_cards))
            if tuple(sorted(ranks)) not in held_out:
                examples.append(self._example(ranks, self._faces(split, rng), split))
        return examples

    def eval_examples(self, split: str, n: int, seed: int) -> list[Example]:
        """The held-out face-card hands, the same ones (in the same order) for every split."""
        check_split(self, split)
        rng = random.Random(f"{self.name}:{self.n_cards}:eval:{seed}")
        hands = sorted(self.held_out_hands())
        examples = []
        for _ in range(n):
            ranks = list(rng.choice(hands))
            rng.shuffle(ranks)
            examples.append(self._example(tuple(ranks), self._faces(split, rng), split))
        return examples

    def held_out_hands(self) -> frozenset[tuple[int, ...]]:
        """A seeded quarter of the hands (sorted ranks) that hold at least one face card."""
        with_face = [
            h for h in itertools.combinations_with_replacement(RANKS, self.n_cards) if set(h) & set(FACE_RANKS)
        ]
        random.Random(f"{self.name}:{self.n_cards}:holdout:{self.eval_seed}").shuffle(with_face)
        return frozenset(with_face[: len(with_face) // 4])

    def score(self, example: Example, completion: str) -> Score:
        values, total = example.meta["values"], sum(example.meta["values"])
        text = completion.strip().splitlines()[0] if completion.strip() else ""
        verdict = judge_formula(text, values, total, ())
        if verdict.outcome == "illegal" and not any(c.isdigit() for c in text):
            return Score("illegal", self.reward.illegal, "Your answer holds no sum.", format_error=True)
        if verdict.outcome != "correct":
            return verdict.score(self.reward)
        stated = STATED_SUM.search(text)
        if stated is None or int(stated.group(1)) != total:
            said = "no total" if stated is None else stated.group(1)
            return Score("wrong_value", self.reward.wrong_value, f"You wrote {said}; the values add up to {total}.")
        return Score("correct", self.reward.correct)

    def _faces(self, split: str, rng: random.Random) -> tuple[int, int, int]:
        if split != "mix":
            return FACES[split]
        draw = rng.random()
        for rule, share in MIX:
            if draw < share:
                return FACES[rule]
            draw -= share
        return (rng.randint(1, 13), rng.randint(1, 13), rng.randint(1, 13))

    def _example(self, ranks: tuple[int, ...], faces: tuple[int, int, int], split: str) -> Example:
        values = [faces[r - 11] if r in FACE_RANKS else r for r in ranks]
        rule = " ".join(f"{name}={value}" for name, value in zip("JQK", faces, strict=True))
        prompt = f"{rule}|{' '.join(card_name(r) for r in ranks)}|sum:"
        answer = "+".join(map(str, values)) + f"={sum(values)}"
        meta: dict[str, Any] = {"cards": list(ranks), "values": values, "faces": list(faces), "rule": split}
        return Example(prompt=prompt, answer=answer, split=split, meta=meta)
