"""RL rewards on the real card_sum task (no trainer, no model), and the checks an RL preset must pass."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import pytest

from healer.errors import HealerError
from healer.presets import RunSpec, load_preset
from healer.tasks import Example, Score, Task, make_task
from healer.train.rl import FormatReward, Scorer, TaskReward, completion_text, outcome_shares, reward_functions
from tests.conftest import REPO, healer

PRESET = str(REPO / "presets/tiny-grpo.toml")
REWARD_NAMES = ["correct", "partial", "wrong_value", "wrong_numbers", "illegal"]  # the outcomes the table pays


def spec_with(*overrides: str) -> RunSpec:
    return load_preset(PRESET, list(overrides)).spec


@pytest.fixture
def setup() -> tuple[RunSpec, Task, list[Example]]:
    spec = spec_with("rl.rewards=['task', 'format']")
    task = make_task(spec.task)
    return spec, task, task.train_examples("id", 20, 0)


def message(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def answers(example: Example) -> dict[str, str]:
    """One completion per outcome, written from the hand's values."""
    values = example.meta["values"]
    terms = "+".join(map(str, values))
    return {
        "correct": example.answer,
        "wrong_value": f"{terms}={sum(values) + 1}",  # the right cards, the wrong total
        "wrong_numbers": f"{terms}+99={sum(values) + 99}",  # one number that is not on the cards
        "illegal": "no idea",  # no sum at all
    }


def test_the_reference_answers_are_what_the_completions_assume(setup: tuple[RunSpec, Task, list[Example]]) -> None:
    _, _, examples = setup
    for e in examples:
        values = e.meta["values"]
        assert e.answer == "+".join(map(str, values)) + f"={sum(values)}"
        assert 99 not in values


def test_task_reward_pays_the_reward_table(setup: tuple[RunSpec, Task, list[Example]]) -> None:
    spec, task, examples = setup
    table = {name: getattr(spec.task.reward, name) for name in REWARD_NAMES}
    assert len(set(table.values())) >= 4  # distinct payments, so a wrong outcome cannot pass for another
    indices, completions, expected = [], [], []
    for i in (0, 3, 7):
        for outcome, text in answers(examples[i]).items():
            indices.append(i)
            completions.append(message(text))
            expected.append(table[outcome])
    rewards = TaskReward(Scorer(task, examples))([[]] * len(completions), completions, indices)
    assert rewards == expected
    # The same answers as plain strings (standard, not conversational, completions) are paid the same.
    plain = [c[0]["content"] for c in completions]
    assert TaskReward(Scorer(task, examples))([""] * len(plain), plain, indices) == expected


def test_each_example_is_scored_against_its_own_hand(setup: tuple[RunSpec, Task, list[Example]]) -> None:
    spec, task, examples = setup
    other = next(i for i, e in enumerate(examples) if sum(e.meta["values"]) != sum(examples[0].meta["values"]))
    reward = TaskReward(Scorer(task, examples))
    completion = [message(examples[0].answer)]
    assert reward([[]], completion, [0]) == [spec.task.reward.correct]
    assert reward([[]], completion, [other]) != [spec.task.reward.correct]


def test_many_wrong_numbers_never_pay_more_than_a_wrong_total(setup: tuple[RunSpec, Task, list[Example]]) -> None:
    """The preset's table orders correct > wrong_value > wrong_numbers >= illegal; spamming numbers must not win."""
    spec, task, examples = setup
    table = spec.task.reward
    assert table.correct > table.wrong_value > table.wrong_numbers >= table.illegal
    spam = "+".join(["99"] * 5)  # 5 uses of a number not on the cards, none of the cards' numbers used
    reward = TaskReward(Scorer(task, examples))
    (paid,) = reward([[]], [message(spam)], [0])
    assert paid <= table.wrong_value, f"{spam!r} is paid {paid}, more than a wrong total ({table.wrong_value})"
    assert paid < table.correct


def test_a_penalty_per_wrong_number_counts_each_one(setup: tuple[RunSpec, Task, list[Example]]) -> None:
    spec = spec_with("task.reward.wrong_numbers=-0.5", "task.reward.per_offence=true")
    task = make_task(spec.task)
    examples = setup[2]
    reward = TaskReward(Scorer(task, examples))
    spam = "+".join(["99"] * 5)
    # 5 uses of a number not on the cards, and each of the hand's cards unused.
    offences = 5 + len(examples[0].meta["values"])
    assert reward([[]], [message(spam)], [0]) == [-0.5 * offences]
    assert reward([[]], [message(answers(examples[0])["wrong_numbers"])], [0]) == [-0.5]


def test_outcome_shares_are_logged_for_every_outcome(setup: tuple[RunSpec, Task, list[Example]]) -> None:
    _, task, examples = setup
    # 8 completions: 3 correct, 2 wrong totals, 1 with other numbers, 2 illegal (one with no digits at all).
    batch = [(0, "correct"), (1, "correct"), (2, "correct"), (3, "wrong_value"), (4, "wrong_value"),
             (5, "wrong_numbers"), (6, "illegal")]  # fmt: skip
    completions = [message(answers(examples[i])[o]) for i, o in batch] + [message("1+")]
    indices = [i for i, _ in batch] + [7]
    logged: dict[str, float] = {}
    TaskReward(Scorer(task, examples))([[]] * 8, completions, indices, log_metric=logged.__setitem__)
    counts = {"correct": 3, "partial": 0, "wrong_value": 2, "wrong_numbers": 1, "illegal": 2}
    assert logged == {**{f"outcome/{o}": float(Fraction(c, 8)) for o, c in counts.items()},
                      "format_error_rate": float(Fraction(1, 8))}  # fmt: skip
    assert set(counts) == set(REWARD_NAMES)
    assert sum(v for k, v in logged.items() if k.startswith("outcome/")) == 1.0


def test_outcome_shares_name_unknown_outcomes_too() -> None:
    scores = [Score("correct", 1.0), Score("timeout", 0.0), Score("timeout", 0.0), Score("correct", 1.0)]
    shares = outcome_shares(scores)
    assert list(shares)[: len(REWARD_NAMES)] == REWARD_NAMES
    assert shares == {**dict.fromkeys(REWARD_NAMES, 0.0), "correct": 0.5, "timeout": 0.5}


def test_format_reward_pays_only_answers_that_parse(setup: tuple[RunSpec, Task, list[Example]]) -> None:
    spec, task, examples = setup
    texts = answers(examples[2])
    fmt = FormatReward(Scorer(task, examples), spec.rl.format_reward)
    got = fmt([[]] * 4, [message(t) for t in texts.values()], [2] * 4)
    paid = spec.rl.format_reward
    assert paid != 0
    assert dict(zip(texts, got, strict=True)) == {"correct": paid, "wrong_value": paid, "wrong_numbers": paid,
                                                  "illegal": 0.0}  # fmt: skip
    assert FormatReward(Scorer(task, examples), 0.25)([[]], [message("")], [2]) == [0.0]


def test_format_reward_pays_nothing_for_an_answer_that_does_not_parse(
    setup: tuple[RunSpec, Task, list[Example]],
) -> None:
    spec, task, examples = setup
    texts = ["1+", "3 apples", f"({examples[2].answer}"]
    for text in texts:
        assert not task.score(examples[2], text).correct  # not a well-formed sum
    fmt = FormatReward(Scorer(task, examples), spec.rl.format_reward)
    assert fmt([[]] * 3, [message(t) for t in texts], [2] * 3) == [0.0, 0.0, 0.0]


class CountingTask:
    """The real task, counting how often it is asked to score."""

    def __init__(self, task: Task) -> None:
        self.task, self.calls = task, 0
        self.name, self.splits = task.name, task.splits

    def score(self, example: Example, completion: str) -> Score:
        self.calls += 1
        return self.task.score(example, completion)


def test_a_batch_is_scored_once_for_all_reward_functions(setup: tuple[RunSpec, Task, list[Example]]) -> None:
    spec, task, examples = setup
    counting = CountingTask(task)
    task_fn, format_fn = reward_functions(spec, counting, examples)  # type: ignore[arg-type]
    completions = [message(t) for t in answers(examples[1]).values()]
    indices = [1, 1, 1, 1]
    paid = task_fn([[]] * 4, completions, indices)
    shaped = format_fn([[]] * 4, completions, indices)
    assert counting.calls == 4
    table = spec.task.reward
    assert paid == [table.correct, table.wrong_value, table.wrong_numbers, table.illegal]
    assert shaped == [spec.rl.format_reward] * 3 + [0.0]
    # A new batch is scored anew; so are the same texts for other examples.
    task_fn([[]] * 2, completions[:2], [1, 1])
    assert counting.calls == 6
    assert format_fn([[]] * 2, completions[:2], [1, 2]) == [spec.rl.format_reward] * 2
    assert counting.calls == 8
    assert task_fn([[]] * 2, completions[:2], [1, 2])[1] != table.correct  # example 2's hand, not example 1's
    assert counting.calls == 8


@pytest.mark.parametrize("names", [("task", "format"), ("format", "task"), ("task",), ("format",)])
def test_reward_functions_follow_rl_rewards(setup: tuple[RunSpec, Task, list[Example]], names: tuple[str]) -> None:
    _, task, examples = setup
    spec = spec_with(f"rl.rewards={json.dumps(list(names))}")
    functions = reward_functions(spec, task, examples)
    assert [f.__name__ for f in functions] == list(names)
    kinds = {"task": TaskReward, "format": FormatReward}
    assert [type(f) for f in functions] == [kinds[n] for n in names]
    assert len({id(f.scorer) for f in functions}) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("completion", "text"),
    [
        ([{"role": "assistant", "content": "3+4=7"}], "3+4=7"),
        ([{"role": "assistant", "content": "3+4"}, {"role": "assistant", "content": "=7"}], "3+4=7"),
        ([{"role": "assistant"}, "stray", {"content": 12}], "12"),
        ("3+4=7", "3+4=7"),
        (7, "7"),
    ],
)
def test_completion_text(completion: Any, text: str) -> None:
    assert completion_text(completion) == text


# -- the checks of an RL preset ---------------------------------------------------------------------

ZERO_TABLE = [f"task.reward.{name}=0" for name in REWARD_NAMES]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["rl.rewards=[]"], ["rl.rewards", "needs a reward"]),
        (["rl.rewards=['task', 'bogus']"], ["rl.rewards", "unknown reward 'bogus'"]),
        ([*ZERO_TABLE], ["every reward in rl.rewards pays 0", "task.reward"]),
        ([*ZERO_TABLE, "rl.rewards=['format']", "rl.format_reward=0"], ["pays 0", "rl.format_reward"]),
        (["rl.rewards=['format']", "rl.format_reward=0"], ["pays 0"]),
        (["train.batch_size=60"], ["train.batch_size", "rl.num_generations = 8", "train.batch_size = 56"]),
        (["train.batch_size=4"], ["= 4 completions", "train.batch_size = 8"]),
        (["train.batch_size=10", "train.grad_accum=3"], ["= 30 completions", "multiple of rl.num_generations"]),
        (["rl.num_generations=1"], ["rl.num_generations must be at least 2"]),
        (["task.reward.per_offence=true"], ["task.reward.wrong_numbers", "per_offence"]),
        (["method=rloo", "rl.loss_type='dapo'"], ["rl.loss_type", "rloo"]),
        (["method=rloo", "rl.scale_rewards='none'"], ["rl.scale_rewards", "rloo"]),
        (["rl.temperature=0"], ["rl.temperature"]),
        (["rl.max_completion_length=0"], ["rl.max_completion_length"]),
    ],
)
def test_rl_preset_mistakes_name_the_key(overrides: list[str], words: list[str]) -> None:
    with pytest.raises(HealerError) as info:
        load_preset(PRESET, overrides)
    text = str(info.value)
    assert "\n" not in text and "tiny-grpo.toml" in text
    for word in words:
        assert word in text


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=rloo"],
        [*ZERO_TABLE, "rl.rewards=['task', 'format']"],  # the format reward alone still pays something
        ["train.batch_size=7", "train.grad_accum=8"],  # 56 completions: 7 groups of 8
        ["rl.num_generations=2", "train.batch_size=2"],
        ["method=sft", "rl.rewards=[]"],  # SFT ignores [rl]
    ],
)
def test_valid_rl_presets(overrides: list[str]) -> None:
    spec = load_preset(PRESET, overrides).spec
    assert spec.method == next((o.split("=")[1] for o in overrides if o.startswith("method=")), "grpo")


def test_cli_run_with_no_reward_is_one_error_line_and_no_run() -> None:
    result = healer("run", "presets/tiny-grpo.toml", "--set", "rl.rewards=[]")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "rl.rewards" in lines[0]
    assert result.stdout == ""
    assert json.loads(healer("runs", "ls", "--json", check=True).stdout) == []
