"""GeneralPoints (the 24 game): cards, the ID and OOD rules, an exact solver, prompts, scoring and the task."""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from healer import paths
from healer.errors import HealerError
from healer.specs import OUTCOMES as OUTCOMES  # re-exported: the verdicts of this verifier
from healer.specs import RewardSpec, TaskSpec
from healer.tasks import Example, Score, check_split
from healer.tasks.formula import IllegalFormula, extract, format_value, parse

# -- cards and rules ---------------------------------------------------------------------------------

RANKS = range(1, 14)
FACE_RANKS = (11, 12, 13)
NAMES = {1: "A", 11: "J", 12: "Q", 13: "K"}
RANK_OF = {**{str(r): r for r in RANKS}, "A": 1, "T": 10, "J": 11, "Q": 12, "K": 13}
RULES = ("id", "ood")
MIN_CARDS, MAX_CARDS = 2, 6


def card_name(rank: int) -> str:
    return NAMES.get(rank, str(rank))


def card_value(rank: int, rule: str) -> int:
    """ID: J, Q and K count as 10; OOD: as 11, 12 and 13."""
    return min(rank, 10) if rule == "id" else rank


def check_rule(rule: str) -> None:
    if rule not in RULES:
        raise HealerError(f"unknown rule {rule!r}; use id (J, Q, K count as 10) or ood (they count as 11, 12, 13)")


def parse_cards(text: str, n_cards: int | None = None) -> tuple[int, ...]:
    """Ranks from card names separated by spaces or commas: A, 1..10, T, J, Q, K, in any case."""
    names = text.replace(",", " ").split()
    ranks = []
    for name in names:
        if name.upper() not in RANK_OF:
            raise HealerError(f"unknown card {name!r}; cards are A, 2..10, J, Q, K (1 and T also work)")
        ranks.append(RANK_OF[name.upper()])
    if n_cards is not None and len(ranks) != n_cards:
        raise HealerError(f"expected {n_cards} cards, got {len(ranks)} ({text.strip()!r}); see --n-cards")
    if not MIN_CARDS <= len(ranks) <= MAX_CARDS:
        raise HealerError(f"a hand holds {MIN_CARDS} to {MAX_CARDS} cards, got {len(ranks)}")
    return tuple(ranks)


# -- the solver: every formula over a multiset of values, with exact fractions ----------------------------
# Expressions are built over sub-multisets (never card positions, so equal cards add no duplicates). Value sets
# are memoised per multiset; a formula tree is only expanded into text where it reaches the wanted value, and
# the wanted value of one operand is computed from the other, so the search never enumerates both sides.

PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
ATOM = 3
TABLE_MAX_CARDS = 4  # full solution tables are persisted up to 4 cards; 5 cards would take over a minute
SOLUTION_LIMIT = 100  # formulas listed per hand of 5 or more cards (a 5-card hand can have thousands)
TABLE_VERSION = 1


@functools.cache
def _splits(multiset: tuple[int, ...]) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """Every ordered way to cut a sorted multiset into two non-empty parts."""
    distinct = sorted(set(multiset))
    counts = [multiset.count(v) for v in distinct]
    out = []
    for take in itertools.product(*(range(c + 1) for c in counts)):
        left = tuple(v for v, k in zip(distinct, take, strict=True) for _ in range(k))
        if 0 < len(left) < len(multiset):
            right = tuple(v for v, k, c in zip(distinct, take, counts, strict=True) for _ in range(c - k))
            out.append((left, right))
    return tuple(out)


@functools.cache
def _values(multiset: tuple[int, ...]) -> frozenset[Fraction]:
    if len(multiset) == 1:
        return frozenset({Fraction(multiset[0])})
    out: set[Fraction] = set()
    for left, right in _splits(multiset):
        for x in _values(left):
            for y in _values(right):
                out.update((x + y, x - y, x * y))
                if y:
                    out.add(x / y)
    return frozenset(out)


def _right_operands(op: str, x: Fraction, value: Fraction) -> tuple[Fraction, ...] | None:
    """The y with x op y == value; None means any y works."""
    if op == "+":
        return (value - x,)
    if op == "-":
        return (x - value,)
    if op == "*":
        return (value / x,) if x else (None if value == 0 else ())
    if value == 0:
        return None if x == 0 else ()
    return (x / value,) if x else ()


def _left_operands(op: str, y: Fraction, value: Fraction) -> tuple[Fraction, ...] | None:
    """The x with x op y == value; None means any x works."""
    if op == "+":
        return (value - y,)
    if op == "-":
        return (value + y,)
    if op == "*":
        return (value / y,) if y else (None if value == 0 else ())
    return (value * y,) if y else ()


def _operand_pairs(left: tuple[int, ...], right: tuple[int, ...], op: str, value: Fraction) -> Iterator[tuple]:
    """(x, y) with x from `left`, y from `right` and x op y == value, walking only the smaller side's values."""
    if len(left) <= len(right):
        for x in _values(left):
            ys = _right_operands(op, x, value)
            if ys is None:
                yield from ((x, y) for y in _values(right) if op != "/" or y)
            else:
                yield from ((x, y) for y in ys if _reachable(right, y))
    else:
        for y in _values(right):
            xs = _left_operands(op, y, value)
            if xs is None:
                yield from ((x, y) for x in _values(left))
            else:
                yield from ((x, y) for x in xs if _reachable(left, x))


@functools.cache
def _reachable(multiset: tuple[int, ...], value: Fraction) -> bool:
    if len(multiset) <= 3:
        return value in _values(multiset)
    return any(True for a, b in _splits(multiset) for op in PRECEDENCE for _ in _operand_pairs(a, b, op, value))


def _join(op: str, left: tuple[str, int], right: tuple[str, int]) -> tuple[str, int]:
    """Text with the fewest parentheses whose value, read left to right by precedence, is the tree's value."""
    precedence = PRECEDENCE[op]
    left_text = f"({left[0]})" if left[1] < precedence else left[0]
    wrap = right[1] < precedence or (right[1] == precedence and op in "-/")
    return f"{left_text}{op}({right[0]})" if wrap else f"{left_text}{op}{right[0]}", precedence


@functools.cache
def _small_formulas(multiset: tuple[int, ...], value: Fraction) -> tuple[tuple[str, int], ...]:
    return tuple(dict.fromkeys(_formula_stream(multiset, value)))


def _formulas(multiset: tuple[int, ...], value: Fraction) -> Iterable[tuple[str, int]]:
    # up to 3 numbers the lists are short and shared by many hands: memoise; larger ones stream
    return _small_formulas(multiset, value) if len(multiset) <= 3 else _formula_stream(multiset, value)


def _formula_stream(multiset: tuple[int, ...], value: Fraction) -> Iterator[tuple[str, int]]:
    if len(multiset) == 1:
        if value == multiset[0]:
            yield str(multiset[0]), ATOM
        return
    for left, right in _splits(multiset):
        for op in PRECEDENCE:
            for x, y in _operand_pairs(left, right, op, value):
                for left_formula in _formulas(left, x):
                    for right_formula in _formulas(right, y):
                        yield _join(op, left_formula, right_formula)


def solve_values(values: Sequence[int], target: int, limit: int | None = None) -> tuple[str, ...]:
    """Every distinct formula (at most `limit`) that uses each value once and equals `target`, sorted."""
    multiset, goal = tuple(sorted(values)), Fraction(target)
    if not _reachable(multiset, goal):
        return ()
    found: dict[str, None] = {}
    for text, _ in _formula_stream(multiset, goal):
        found[text] = None
        if limit is not None and len(found) >= limit:
            break
    return tuple(sorted(found))


# -- the solution table: computed once per (cards, target), kept as JSON under $HEALER_HOME/cache -------------


def table_path(n_cards: int, target: int) -> Path:
    return paths.home() / "cache" / f"general_points-{n_cards}cards-target{target}-v{TABLE_VERSION}.json"


def build_table(n_cards: int, target: int) -> dict[tuple[int, ...], tuple[str, ...]]:
    """The solutions of every multiset of values 1..13 (which covers both rules); unsolvable ones are left out."""
    table = {}
    for multiset in itertools.combinations_with_replacement(RANKS, n_cards):
        found = solve_values(multiset, target)
        if found:
            table[multiset] = found
    return table


def load_table(n_cards: int, target: int) -> dict[tuple[int, ...], tuple[str, ...]]:
    """The table from its cache file, or built and written there (atomically, so racing writers are harmless)."""
    path = table_path(n_cards, target)
    try:
        data = json.loads(path.read_text())
        if data["version"] == TABLE_VERSION and (data["n_cards"], data["target"]) == (n_cards, target):
            return {tuple(map(int, k.split())): tuple(v) for k, v in data["solutions"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or damaged: rebuild
    table = build_table(n_cards, target)
    payload = {"version": TABLE_VERSION, "n_cards": n_cards, "target": target}
    payload["solutions"] = {" ".join(map(str, k)): list(v) for k, v in table.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps(payload, separators=(",", ":")))
    os.replace(scratch, path)
    return table


_table = functools.cache(load_table)


@functools.cache
def solutions(values: tuple[int, ...], target: int) -> tuple[str, ...]:
    """The known solutions of a hand's values: all of them up to 4 cards, the first SOLUTION_LIMIT beyond."""
    multiset = tuple(sorted(values))
    if len(multiset) <= TABLE_MAX_CARDS:
        return _table(len(multiset), target).get(multiset, ())
    return solve_values(multiset, target, limit=SOLUTION_LIMIT)


def is_solvable(values: Sequence[int], target: int) -> bool:
    if len(values) <= TABLE_MAX_CARDS:
        return bool(solutions(tuple(values), target))
    return _reachable(tuple(sorted(values)), Fraction(target))


# -- verdicts and rewards ----------------------------------------------------------------------------
# Precedence: illegal > wrong_numbers > wrong_value > correct. `partial` replaces `illegal` only when the formula
# does not parse but is a proper prefix of a known solution. A division by zero is a wrong value.


@dataclass(frozen=True)
class Verdict:
    """What the verifier found: the outcome, its complaint in words, and for wrong_numbers how many offences."""

    outcome: str
    feedback: str = ""
    format_error: bool = False
    value: Fraction | None = None
    offences: int = 0

    def score(self, reward: RewardSpec) -> Score:
        table = getattr(reward, self.outcome)
        per_offence = self.outcome == "wrong_numbers" and reward.per_offence
        points = table * self.offences if per_offence else table
        return Score(self.outcome, float(points), self.feedback, self.format_error)


def judge_completion(completion: str, values: Sequence[int], target: int, known: Sequence[str]) -> Verdict:
    """Judge a model's whole answer: find its formula, then judge that."""
    text = extract(completion)
    if text is None:
        return Verdict("illegal", "Your answer holds no formula.", format_error=True)
    return judge_formula(text, values, target, known)


def judge_formula(text: str, values: Sequence[int], target: int, known: Sequence[str]) -> Verdict:
    """Judge one formula against the hand's values and its known solutions (for partial credit)."""
    try:
        formula = parse(text)
    except IllegalFormula as exc:
        if _is_proper_prefix(text, known):
            return Verdict("partial", "Your formula is incomplete; finish it.")
        return Verdict("illegal", f"Your formula is not legal: {exc}.")
    complaints, offences = _number_complaints(formula.numbers, values)
    if offences:
        return Verdict("wrong_numbers", " ".join(complaints), value=formula.value, offences=offences)
    if formula.value is None:
        return Verdict("wrong_value", "Your formula divides by zero.")
    if formula.value != target:
        said = format_value(formula.value)
        return Verdict("wrong_value", f"Your formula evaluates to {said}, not {target}.", value=formula.value)
    return Verdict("correct", value=formula.value)


def _is_proper_prefix(text: str, known: Sequence[str]) -> bool:
    compact = "".join(text.split())
    return bool(compact) and any(len(compact) < len(s) and s.startswith(compact) for s in known)


def _number_complaints(used: Sequence[int], values: Sequence[int]) -> tuple[list[str], int]:
    """One complaint per number that is not on the cards, over-used or unused; each extra or missing use counts."""
    have, uses = Counter(values), Counter(used)
    complaints, offences = [], 0
    for number in sorted(have | uses):
        if uses[number] == have[number]:
            continue
        if not have[number]:
            complaints.append(f"Your formula uses {number}, which is not on the cards.")
        elif not uses[number]:
            complaints.append(f"Your formula does not use {number}.")
        else:
            said, cards = _times(uses[number]), _times(have[number])
            complaints.append(f"Your formula uses {number} {said}, but the cards have it {cards}.")
        offences += abs(uses[number] - have[number])
    return complaints, offences


def _times(count: int) -> str:
    words = {1: "once", 2: "twice", 3: "three times", 4: "four times", 5: "five times", 6: "six times"}
    return words.get(count, f"{count} times")


def check(cards: Sequence[int], rule: str, formula: str, reward: RewardSpec = RewardSpec(), target: int = 24) -> Score:
    """Score a formula for a hand of ranks under a rule, as RL would."""
    check_rule(rule)
    values = [card_value(rank, rule) for rank in cards]
    return judge_formula(formula, values, target, solutions(tuple(values), target)).score(reward)


# -- prompts -----------------------------------------------------------------------------------------
# paper-v1 is Q_GeneralPoint_EQN_L from the "SFT Memorizes, RL Generalizes" code (LeslieTrue/SFTvsRL,
# prompt_lib/prompts.py), with the card count and placeholders following `n_cards`; the answer follows its
# ResponseEqn, written as valid JSON. compact-v1 is for tiny character-level models: rule|cards|target: formula.

PROMPTS = ("paper-v1", "compact-v1")
RULE_WORDS = {
    "id": "'J', 'Q', and 'K' count as '10'",
    "ood": "'J', 'Q', and 'K' count as '11', '12', and '13' respectively",
}
RULE_COMPACT = {"id": "J=10 Q=10 K=10", "ood": "J=11 Q=12 K=13"}
PAPER_V1 = "\n".join(
    [
        "[Task Description]",
        "You are an expert {target} points card game player. You will receive a set of {n} cards.",
        "Note that {rule}, and each card must be used once.",
        "Your goal is to output a formula that evaluates to {target} using numbers from the cards and operators"
        " such as '+', '-', '*', '/', '(', ')', and '='.",
        "",
        "[Input]",
        "Cards: {cards}",
        "",
        "[Output]",
        "{{",
        '  "cards": [{card_slots}], where {rule},',
        '  "number": [{number_slots}], where {number_words} are the numbers on the cards,',
        "  \"formula\": 'an equation that equals {target}',",
        "}}",
    ]
)


def render_prompt(version: str, ranks: Sequence[int], rule: str, target: int) -> str:
    names = [card_name(r) for r in ranks]
    if version == "compact-v1":
        return f"{RULE_COMPACT[rule]}|{' '.join(names)}|{target}:"
    slots, letters = "xyzwuv"[: len(ranks)], "abcdef"[: len(ranks)]
    return PAPER_V1.format(
        target=target,
        n=len(ranks),
        rule=RULE_WORDS[rule],
        cards=repr(names),
        card_slots=", ".join(slots),
        number_slots=", ".join(letters),
        number_words=", ".join(letters[:-1]) + (", and " if len(letters) > 2 else " and ") + letters[-1],
    )


def render_answer(version: str, ranks: Sequence[int], rule: str, formula: str) -> str:
    if version == "compact-v1":
        return formula
    names = json.dumps([card_name(r) for r in ranks])
    numbers = json.dumps([card_value(r, rule) for r in ranks])
    return f'{{\n  "cards": {names},\n  "number": {numbers},\n  "formula": "{formula}"\n}}'


# -- the task ----------------------------------------------------------------------------------------

MAX_FAILED_DRAWS = 100_000


@dataclass(frozen=True)
class Stats:
    hands: int
    solvable: int


@dataclass(frozen=True)
class GeneralPoints:
    """The task: ID hands drawn under the ID rule, OOD hands (each with a face card) under the OOD rule."""

    n_cards: int = 4
    target: int = 24
    prompt: str = "paper-v1"
    reward: RewardSpec = field(default_factory=RewardSpec)
    eval_n: int = 234
    eval_seed: int = 0
    holdout_eval: bool = True
    name: str = "general_points"
    splits: tuple[str, ...] = RULES

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> GeneralPoints:
        """Validate the options (cheaply: presets call this on every load) and build the task."""
        if not MIN_CARDS <= spec.n_cards <= MAX_CARDS:
            raise HealerError(f"task.n_cards must be between {MIN_CARDS} and {MAX_CARDS}, got {spec.n_cards}")
        if spec.target < 1:
            raise HealerError(f"task.target must be at least 1, got {spec.target}")
        if spec.prompt not in PROMPTS:
            raise HealerError(f"task.prompt {spec.prompt!r} is not a known prompt version ({', '.join(PROMPTS)})")
        if spec.eval_n < 1:
            raise HealerError(f"task.eval_n must be at least 1, got {spec.eval_n}")
        return cls(
            n_cards=spec.n_cards,
            target=spec.target,
            prompt=spec.prompt,
            reward=spec.reward,
            eval_n=spec.eval_n,
            eval_seed=spec.eval_seed,
            holdout_eval=spec.holdout_eval,
        )

    # hands and solutions

    def values(self, ranks: Sequence[int], rule: str) -> tuple[int, ...]:
        return tuple(card_value(r, rule) for r in ranks)

    def solve(self, ranks: Sequence[int], rule: str) -> tuple[str, ...]:
        """The hand's solutions under the rule (empty when it has none)."""
        check_rule(rule)
        return solutions(self.values(ranks, rule), self.target)

    def stats(self, rule: str) -> Stats:
        """Distinct hands (rank multisets; OOD: those with a face card) and how many are solvable under the rule."""
        check_rule(rule)
        hands = [h for h in itertools.combinations_with_replacement(RANKS, self.n_cards) if _allowed(h, rule)]
        return Stats(len(hands), sum(is_solvable(self.values(h, rule), self.target) for h in hands))

    def draw_hand(
        self, rng: random.Random, rule: str, exclude: frozenset[tuple[int, ...]] = frozenset()
    ) -> tuple[int, ...]:
        """A solvable hand drawn as in the paper: ID ranks uniform; OOD n-1 uniform ranks and a face card, shuffled."""
        for _ in range(MAX_FAILED_DRAWS):
            ranks = [rng.randint(1, 13) for _ in range(self.n_cards - (rule == "ood"))]
            if rule == "ood":
                ranks.append(rng.choice(FACE_RANKS))
                rng.shuffle(ranks)
            if tuple(sorted(ranks)) not in exclude and is_solvable(self.values(ranks, rule), self.target):
                return tuple(ranks)
        raise HealerError(
            f"no solvable {self.n_cards}-card hand for target {self.target} in {MAX_FAILED_DRAWS} draws "
            "(with the evaluation hands held out); change task.target, task.n_cards or task.holdout_eval"
        )

    # the Task protocol

    def train_examples(self, split: str, n: int, seed: int) -> list[Example]:
        """SFT examples whose answer holds one solution; evaluation hands are never drawn when holdout_eval is set."""
        check_split(self, split)
        exclude = self._evaluation_hands() if self.holdout_eval else frozenset()
        rng = random.Random(f"{self.name}:{self.n_cards}:{self.target}:{split}:train:{seed}")
        return [self._example(self.draw_hand(rng, split, exclude), split, rng) for _ in range(n)]

    def eval_examples(self, split: str, n: int, seed: int) -> list[Example]:
        """The fixed evaluation set: drawn with replacement, so a smaller n gives a prefix of a larger one."""
        check_split(self, split)
        rng = random.Random(f"{self.name}:{self.n_cards}:{self.target}:{split}:eval:{seed}")
        return [self._example(self.draw_hand(rng, split), split, rng) for _ in range(n)]

    def score(self, example: Example, completion: str) -> Score:
        values = tuple(example.meta["values"])
        target = int(example.meta.get("target", self.target))
        return judge_completion(completion, values, target, solutions(values, target)).score(self.reward)

    def _evaluation_hands(self) -> frozenset[tuple[int, ...]]:
        examples = [e for s in self.splits for e in self.eval_examples(s, self.eval_n, self.eval_seed)]
        return frozenset(tuple(sorted(e.meta["cards"])) for e in examples)

    def _example(self, ranks: tuple[int, ...], rule: str, rng: random.Random) -> Example:
        values = self.values(ranks, rule)
        formula = rng.choice(solutions(values, self.target))
        meta: dict[str, Any] = {
            "cards": list(ranks),
            "names": [card_name(r) for r in ranks],
            "values": list(values),
            "rule": rule,
            "target": self.target,
            "solution": formula,
        }
        return Example(
            prompt=render_prompt(self.prompt, ranks, rule, self.target),
            answer=render_answer(self.prompt, ranks, rule, formula),
            split=rule,
            meta=meta,
        )


def _allowed(ranks: Sequence[int], rule: str) -> bool:
    return rule == "id" or any(r in FACE_RANKS for r in ranks)
