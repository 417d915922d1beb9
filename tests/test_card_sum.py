"""The card-sum task of the CPU demo: rules, the rule mixture, held-out hands, scoring."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healer.errors import HealerError
from healer.presets import RewardSpec, TaskSpec
from healer.tasks import make_task
from healer.tasks.card_sum import CardSum


@pytest.fixture(scope="module")
def task() -> CardSum:
    made = make_task(TaskSpec(name="card_sum", n_cards=3))
    assert isinstance(made, CardSum)
    return made


def test_reference_answers_are_correct_under_each_rule(task: CardSum) -> None:
    for split in ("id", "ood", "mix"):
        for example in task.train_examples(split, 200, 1):
            assert task.score(example, example.answer).correct
            ranks, values = example.meta["cards"], example.meta["values"]
            faces = dict(zip((11, 12, 13), example.meta["faces"], strict=True))
            assert values == [faces.get(r, r) for r in ranks]
    assert all(e.meta["faces"] == [10, 10, 10] for e in task.train_examples("id", 100, 2))
    assert all(e.meta["faces"] == [11, 12, 13] for e in task.eval_examples("ood", 100, 2))


def test_the_mixture_is_30_20_50(task: CardSum) -> None:
    kinds = Counter(
        {(10, 10, 10): "id", (11, 12, 13): "ood"}.get(tuple(e.meta["faces"]), "random")
        for e in task.train_examples("mix", 4000, 0)
    )
    assert abs(kinds["id"] / 4000 - 0.3) < 0.03 and abs(kinds["ood"] / 4000 - 0.2) < 0.03


def test_evaluation_hands_never_appear_in_training_and_both_splits_share_them(task: CardSum) -> None:
    held_out = task.held_out_hands()
    assert held_out and all(set(hand) & {11, 12, 13} for hand in held_out)
    for split in ("id", "mix"):
        assert not {tuple(sorted(e.meta["cards"])) for e in task.train_examples(split, 3000, 0)} & held_out
    id_hands = [e.meta["cards"] for e in task.eval_examples("id", 100, 0)]
    assert id_hands == [e.meta["cards"] for e in task.eval_examples("ood", 100, 0)]
    assert {tuple(sorted(h)) for h in id_hands} <= held_out
    assert id_hands == [e.meta["cards"] for e in task.eval_examples("id", 100, 0)]  # reproducible
    assert id_hands != [e.meta["cards"] for e in task.eval_examples("id", 100, 1)]


def test_scoring_outcomes(task: CardSum) -> None:
    example = next(e for e in task.eval_examples("ood", 50, 0) if 13 in e.meta["cards"])
    values = example.meta["values"]
    id_values = [10 if v > 10 else v for v in values]  # the rule over-commitment the demo counts
    assert task.score(example, f"{'+'.join(map(str, values))}={sum(values)}").outcome == "correct"
    assert task.score(example, f"{'+'.join(map(str, id_values))}={sum(id_values)}").outcome == "wrong_numbers"
    assert task.score(example, f"{'+'.join(map(str, values))}={sum(values) + 1}").outcome == "wrong_value"
    assert task.score(example, "+".join(map(str, values))).outcome == "wrong_value"  # the total is part of it
    nothing = task.score(example, "no idea")
    assert (nothing.outcome, nothing.format_error) == ("illegal", True)


@given(st.text(max_size=60))
def test_any_string_is_scored_without_raising(completion: str) -> None:
    task = CardSum(reward=RewardSpec())
    example = task.eval_examples("id", 1, 0)[0]
    assert task.score(example, completion).outcome in {"correct", "wrong_value", "wrong_numbers", "illegal"}


def test_bad_options_are_one_line() -> None:
    with pytest.raises(HealerError, match=r"task\.n_cards = 9"):
        make_task(TaskSpec(name="card_sum", n_cards=9))
