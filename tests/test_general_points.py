"""GeneralPoints: rules, seeded draws, holdout, the solver against an independent brute force, scoring and rewards."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healer.errors import HealerError
from healer.presets import RewardSpec, TaskSpec
from healer.tasks import Example, make_task
from healer.tasks import general_points as gp
from healer.tasks.formula import IllegalFormula, parse
from healer.tasks.general_points import GeneralPoints, check, parse_cards

TASK = GeneralPoints()
ALL_HANDS = list(itertools.combinations_with_replacement(range(1, 14), 4))


def brute_force_solvable(numbers: list[Fraction], target: int = 24) -> bool:
    """An independent solver: combine any two numbers with any operator until one is left."""
    if len(numbers) == 1:
        return numbers[0] == target
    for i, j in itertools.permutations(range(len(numbers)), 2):
        rest = [numbers[k] for k in range(len(numbers)) if k not in (i, j)]
        a, b = numbers[i], numbers[j]
        results = [a + b, a - b, a * b] + ([a / b] if b else [])
        if any(brute_force_solvable([*rest, r], target) for r in results):
            return True
    return False


# -- rules, cards and the solver ---------------------------------------------------------------------


def test_card_names_and_rule_values() -> None:
    assert parse_cards("A 5 j K") == (1, 5, 11, 13)
    assert parse_cards("10,T,q,1") == (10, 10, 12, 1)
    assert [gp.card_value(r, "id") for r in (1, 10, 11, 12, 13)] == [1, 10, 10, 10, 10]
    assert [gp.card_value(r, "ood") for r in (1, 10, 11, 12, 13)] == [1, 10, 11, 12, 13]


@pytest.mark.parametrize(
    ("text", "n", "message"),
    [("3 3 8 Z", 4, "unknown card 'Z'"), ("3 3 8", 4, "expected 4 cards, got 3"), ("3", None, "2 to 6 cards")],
)
def test_bad_cards_are_one_line_errors(text: str, n: int | None, message: str) -> None:
    with pytest.raises(HealerError, match=message):
        parse_cards(text, n)


def test_the_paper_example_is_correct() -> None:
    assert TASK.solve((3, 3, 8, 8), "id") == ("8/(3-8/3)",)
    assert check((3, 3, 8, 8), "id", "8/(3-8/3)").outcome == "correct"
    assert check((3, 3, 8, 8), "id", "8/(3-8/3) = 24").reward == 5.0


def test_stats_for_four_cards_and_24() -> None:
    assert TASK.stats("id") == gp.Stats(hands=1820, solvable=1236)
    assert TASK.stats("ood") == gp.Stats(hands=1820 - 715, solvable=796)  # 715 hands hold no face card


def test_stats_for_three_cards() -> None:
    three = GeneralPoints(n_cards=3)
    assert three.stats("id") == gp.Stats(hands=455, solvable=101)
    assert three.stats("ood") == gp.Stats(hands=455 - 220, solvable=52)


@pytest.mark.parametrize(
    "ranks", [(1, 1, 1, 1), (3, 3, 8, 8), (1, 5, 11, 13), (4, 4, 10, 10), (1, 2, 7, 7), (5, 5, 5, 1), (13, 13, 13, 13)]
)
@pytest.mark.parametrize("rule", ["id", "ood"])
def test_solvability_agrees_with_an_independent_brute_force(ranks: tuple[int, ...], rule: str) -> None:
    values = [Fraction(gp.card_value(r, rule)) for r in ranks]
    assert bool(TASK.solve(ranks, rule)) == brute_force_solvable(values)


def test_the_table_covers_every_hand_and_only_solvable_ones() -> None:
    table = gp._table(4, 24)
    sample = ALL_HANDS[::37]  # 50 hands spread over the whole space
    assert all((hand in table) == brute_force_solvable([Fraction(v) for v in hand]) for hand in sample)
    assert len(table) == 1362  # the classic count of solvable 24-game hands over 1..13


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL_HANDS), st.sampled_from(["id", "ood"]))
def test_every_listed_solution_is_accepted(ranks: tuple[int, ...], rule: str) -> None:
    for formula in TASK.solve(ranks, rule):
        assert check(ranks, rule, formula).outcome == "correct", formula


def every_tree(numbers: tuple[int, ...]) -> Iterator[tuple[tuple[str, int], Fraction | None]]:
    """Every binary tree over the numbers in this order, printed as the solver prints, with its value."""
    if len(numbers) == 1:
        yield (str(numbers[0]), gp.ATOM), Fraction(numbers[0])
        return
    for cut in range(1, len(numbers)):
        for left, a in every_tree(numbers[:cut]):
            for right, b in every_tree(numbers[cut:]):
                for op in "+-*/":
                    value = None if a is None or b is None or (op == "/" and not b) else OPS[op](a, b)
                    yield gp._join(op, left, right), value


OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


@pytest.mark.parametrize("values", [(1, 2, 3, 4), (3, 3, 8, 8), (1, 5, 10, 10), (2, 3, 4, 12), (6, 6, 6, 6)])
def test_the_solutions_are_exactly_all_distinct_formulas(values: tuple[int, ...]) -> None:
    expected = set()
    for order in set(itertools.permutations(values)):
        expected |= {text for (text, _), value in every_tree(order) if value == 24}
    assert gp.solutions(values, 24) == tuple(sorted(expected))
    assert all(Counter(parse(f).numbers) == Counter(values) for f in expected)


@pytest.mark.parametrize(("n", "ranks"), [(2, (4, 6)), (3, (2, 3, 4)), (5, (1, 2, 3, 4, 5)), (6, (1, 1, 2, 2, 3, 3))])
def test_other_hand_sizes(n: int, ranks: tuple[int, ...]) -> None:
    task = GeneralPoints(n_cards=n)
    found = task.solve(ranks, "id")
    assert found
    if n > gp.TABLE_MAX_CARDS:
        assert len(found) <= gp.SOLUTION_LIMIT
    assert all(check(ranks, "id", f).outcome == "correct" for f in found)


def test_the_table_persists_and_is_loaded_without_solving(healer_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = gp.load_table(3, 24)
    path = gp.table_path(3, 24)
    assert path.is_file() and path.parent == healer_home / "cache"

    def no_solving(*args: object) -> None:
        raise AssertionError("the cache file should have been read")

    monkeypatch.setattr(gp, "build_table", no_solving)
    assert gp.load_table(3, 24) == built


def test_a_damaged_cache_file_is_rebuilt(healer_home: Path) -> None:
    path = gp.table_path(2, 24)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    table = gp.load_table(2, 24)
    assert table == gp.build_table(2, 24) and table[(3, 8)] == ("3*8", "8*3")
    assert json.loads(path.read_text())["n_cards"] == 2


# -- draws ---------------------------------------------------------------------------------------------


def test_id_and_ood_draws_follow_their_rules() -> None:
    for split in ("id", "ood"):
        examples = TASK.eval_examples(split, 300, seed=3) + TASK.train_examples(split, 300, seed=3)
        for example in examples:
            ranks, values = example.meta["cards"], example.meta["values"]
            assert example.split == example.meta["rule"] == split and len(ranks) == 4
            assert values == [gp.card_value(r, split) for r in ranks]
            assert all(1 <= r <= 13 for r in ranks)
            assert TASK.solve(ranks, split), "unsolvable hands are redrawn"
            assert split == "id" or any(r >= 11 for r in ranks), "every OOD hand holds a face card"
    id_ranks = Counter(r for e in TASK.eval_examples("id", 500, 1) for r in e.meta["cards"])
    assert set(id_ranks) == set(range(1, 14)), "ID hands draw every rank, face cards included"


def test_draws_are_deterministic_by_seed() -> None:
    again = GeneralPoints()
    assert TASK.eval_examples("ood", 20, 0) == again.eval_examples("ood", 20, 0)
    assert TASK.train_examples("id", 20, 5) == again.train_examples("id", 20, 5)
    assert TASK.train_examples("id", 20, 5) != TASK.train_examples("id", 20, 6)
    assert TASK.eval_examples("id", 20, 0) != TASK.train_examples("id", 20, 0)
    assert TASK.eval_examples("id", 5, 0) == TASK.eval_examples("id", 50, 0)[:5]


def test_meta_is_json_serialisable_and_prompts_do_not_change_hands() -> None:
    compact = GeneralPoints(prompt="compact-v1")
    for paper, short in zip(TASK.eval_examples("ood", 5, 0), compact.eval_examples("ood", 5, 0), strict=True):
        assert json.loads(json.dumps(paper.meta)) == paper.meta == short.meta


def hands(examples: list[Example]) -> set[tuple[int, ...]]:
    return {tuple(sorted(e.meta["cards"])) for e in examples}


def test_holdout_keeps_evaluation_hands_out_of_training() -> None:
    held = hands(TASK.eval_examples("id", 234, 0) + TASK.eval_examples("ood", 234, 0))
    for split in ("id", "ood"):
        assert not hands(TASK.train_examples(split, 2000, 0)) & held
    leaky = GeneralPoints(holdout_eval=False)
    assert hands(leaky.train_examples("id", 2000, 0)) & held, "without holdout the same draw would overlap"


def test_an_impossible_draw_is_a_clear_error() -> None:
    with pytest.raises(HealerError, match="no solvable 2-card hand for target 1000"):
        GeneralPoints(n_cards=2, target=1000).eval_examples("id", 1, 0)


# -- prompts and answers -----------------------------------------------------------------------------


def test_paper_prompt_states_the_rule_and_the_cards() -> None:
    prompt = gp.render_prompt("paper-v1", (1, 5, 11, 13), "id", 24)
    assert "You are an expert 24 points card game player. You will receive a set of 4 cards." in prompt
    assert "Note that 'J', 'Q', and 'K' count as '10', and each card must be used once." in prompt
    assert "Cards: ['A', '5', 'J', 'K']" in prompt
    assert "\"formula\": 'an equation that equals 24'," in prompt
    ood = gp.render_prompt("paper-v1", (1, 5, 11, 13), "ood", 24)
    assert "count as '11', '12', and '13' respectively" in ood
    three = gp.render_prompt("paper-v1", (1, 5, 11), "id", 24)
    assert "[x, y, z]" in three and "a, b, and c are the numbers" in three


def test_compact_prompt_is_short() -> None:
    assert gp.render_prompt("compact-v1", (1, 5, 11, 13), "id", 24) == "J=10 Q=10 K=10|A 5 J K|24:"
    assert gp.render_prompt("compact-v1", (1, 5, 11, 13), "ood", 24) == "J=11 Q=12 K=13|A 5 J K|24:"


@pytest.mark.parametrize("prompt", gp.PROMPTS)
def test_training_answers_hold_one_solution_and_score_correct(prompt: str) -> None:
    task = GeneralPoints(prompt=prompt)
    for example in task.train_examples("id", 30, 0) + task.eval_examples("ood", 30, 0):
        assert example.meta["solution"] in task.solve(example.meta["cards"], example.split)
        if prompt == "paper-v1":
            answer = json.loads(example.answer)
            assert answer["number"] == example.meta["values"] and answer["formula"] == example.meta["solution"]
            assert answer["cards"] == example.meta["names"]
        else:
            assert example.answer == example.meta["solution"]
        assert task.score(example, example.answer).outcome == "correct"


# -- scoring -------------------------------------------------------------------------------------------

EXAMPLE = Example(prompt="", answer="", split="id", meta={"cards": [3, 3, 8, 8], "values": [3, 3, 8, 8], "rule": "id"})


@pytest.mark.parametrize(
    ("completion", "outcome", "reward", "feedback"),
    [
        ('{"formula": "8/(3-8/3)=24"}', "correct", 5, ""),
        ('{"formula": "8/(3-8/3) = 20"}', "correct", 5, ""),
        ("8/(3-8/", "partial", 1, "incomplete"),
        ("8/(3-", "partial", 1, "incomplete"),
        ("(3+3)*(8-8", "illegal", -3, "never closed"),
        ("3*8*3*8", "wrong_value", -1, "evaluates to 576, not 24"),
        ("3+3+8/8", "wrong_value", -1, "evaluates to 7, not 24"),
        ("8/(3-3)*8*3", "wrong_numbers", -2, "uses 3 three times"),
        ("(8+8)/(3-3)", "wrong_value", -1, "divides by zero"),
        ("3*8", "wrong_numbers", -4, "uses 3 once, but the cards have it twice"),
        ("3*8+3-3+7-7", "wrong_numbers", -8, "uses 7, which is not on the cards"),
        ("24", "wrong_numbers", -10, "uses 24, which is not on the cards"),
        ("8**(3-8/3)", "illegal", -3, "operator ** is not allowed"),
        ("__import__('os').system('true')", "illegal", -3, "holds no formula"),
        ("I cannot solve this.", "illegal", -3, "holds no formula"),
        ("", "illegal", -3, "holds no formula"),
    ],
)
def test_outcomes_rewards_and_feedback(completion: str, outcome: str, reward: float, feedback: str) -> None:
    score = TASK.score(EXAMPLE, completion)
    assert (score.outcome, score.reward) == (outcome, reward)
    assert feedback in score.feedback
    assert score.format_error == ("holds no formula" in feedback)


HOSTILE_COMPLETIONS = [
    "(" * 5000 + "3" + ")" * 5000,
    "3+" * 500_000 + "3",
    "x" * 1_000_000,
    '{"formula": "' + "(" * 100_000 + '"}',
    "{" * 100_000,
    '{"formula": "２４"}',
    '{"formula": "٨/(٣-٨/٣)"}',
    '{"formula": "9**9**9**9"}',
    '{"formula": "1/0"}',
    '{"formula": "99999999999999999999*3"}',
    '{"formula": null}',
    '{"formula": ["3*8"]}',
]


@pytest.mark.parametrize("completion", HOSTILE_COMPLETIONS, ids=range(len(HOSTILE_COMPLETIONS)))
def test_hostile_completions_get_an_outcome(completion: str) -> None:
    assert TASK.score(EXAMPLE, completion).outcome in gp.OUTCOMES


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.text(alphabet="0123456789+-*/() =", max_size=40)))
def test_random_completions_never_raise(completion: str) -> None:
    score = TASK.score(EXAMPLE, completion)
    assert score.outcome in gp.OUTCOMES


REWARDS = st.builds(RewardSpec, *[st.floats(-100, 100, allow_nan=False) for _ in range(5)])
COMPLETIONS = st.one_of(
    st.sampled_from(["8/(3-8/3)", "8/(3-8/", "3*8", "3*8*3*8", "24", "2**3", "nothing", "(8+8)/(3-3)", "7+3+3+8+8"]),
    st.text(alphabet="0123456789+-*/()", max_size=16),
)


@settings(max_examples=200, deadline=None)
@given(REWARDS, COMPLETIONS)
def test_the_reward_table_is_applied_as_written(reward: RewardSpec, completion: str) -> None:
    score = GeneralPoints(reward=reward).score(EXAMPLE, completion)
    if score.outcome != "wrong_numbers":
        assert score.reward == getattr(reward, score.outcome)
        return
    used = Counter(parse(completion).numbers)
    offences = sum(((used - Counter([3, 3, 8, 8])) + (Counter([3, 3, 8, 8]) - used)).values())
    charged = offences if reward.per_offence else 1  # per offending number (the paper's penalty), or once
    assert offences > 0 and score.reward == pytest.approx(reward.wrong_numbers * charged)


def test_partial_needs_an_unparseable_prefix_of_a_known_solution() -> None:
    with pytest.raises(IllegalFormula):
        parse("8/(3-8/")
    assert TASK.score(EXAMPLE, "8/(3-8/3)*").outcome == "illegal"  # not a prefix of any solution
    assert TASK.score(EXAMPLE, "8/3").outcome == "wrong_numbers"  # a prefix that parses is judged as a formula


# -- construction from a spec -------------------------------------------------------------------------


def test_the_default_task_is_general_points() -> None:
    task = make_task(TaskSpec())
    assert isinstance(task, GeneralPoints) and task.splits == ("id", "ood")
    assert (task.n_cards, task.target, task.prompt, task.eval_n) == (4, 24, "paper-v1", 234)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_cards": 1}, "task.n_cards must be between 2 and 6, got 1"),
        ({"n_cards": 7}, "task.n_cards must be between 2 and 6, got 7"),
        ({"target": 0}, "task.target must be at least 1"),
        ({"prompt": "paper-v9"}, "task.prompt 'paper-v9' is not a known prompt version"),
        ({"eval_n": 0}, "task.eval_n must be at least 1"),
    ],
)
def test_bad_options_are_one_line_errors(options: dict, message: str) -> None:
    with pytest.raises(HealerError, match=message) as info:
        GeneralPoints.from_spec(TaskSpec(**options))
    assert "\n" not in str(info.value)


def test_an_unknown_split_or_rule_is_an_error() -> None:
    with pytest.raises(HealerError, match="has no split 'test'"):
        TASK.eval_examples("test", 1, 0)
    with pytest.raises(HealerError, match="unknown rule 'x'"):
        TASK.solve((1, 2, 3, 4), "x")
