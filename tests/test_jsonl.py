"""The JSONL task: splits from the file, seeded selection with holdout, exact and numeric scoring, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healer.errors import HealerError
from healer.presets import TaskSpec
from healer.tasks import Example, make_task
from healer.tasks.jsonl import JsonlTask


def write(tmp_path: Path, rows: list[object]) -> str:
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


def task(tmp_path: Path, rows: list[object], **options: object) -> JsonlTask:
    return JsonlTask.from_spec(TaskSpec(name="jsonl", path=write(tmp_path, rows), **options))  # type: ignore[arg-type]


ROWS = [{"prompt": f"{i}+{i}=", "answer": str(2 * i), "split": "ood" if i >= 30 else "id"} for i in range(40)]


def test_splits_and_seeded_selection(tmp_path: Path) -> None:
    items = task(tmp_path, ROWS, eval_n=10)
    assert items.splits == ("id", "ood")
    first = items.eval_examples("id", 10, 0)
    assert first == items.eval_examples("id", 10, 0) and first != items.eval_examples("id", 10, 1)
    assert len({e.prompt for e in first}) == 10 and all(e.split == "id" for e in first)
    assert len(items.eval_examples("ood", 50, 0)) == 10  # a split smaller than n gives all of it


def test_holdout_keeps_evaluation_items_out_of_training(tmp_path: Path) -> None:
    items = task(tmp_path, ROWS, eval_n=10)
    held = {e.prompt for e in items.eval_examples("id", 10, 0)}
    train = items.train_examples("id", 100, 0)
    assert len(train) == 100 and not {e.prompt for e in train} & held
    assert len({e.prompt for e in train}) == 20  # the 30 ID items less the 10 evaluation ones, cycled
    with pytest.raises(HealerError, match="no items left for training"):
        task(tmp_path, ROWS, eval_n=30).train_examples("id", 5, 0)
    assert len(task(tmp_path, ROWS, eval_n=30, holdout_eval=False).train_examples("id", 5, 0)) == 5


def test_the_default_split_is_id(tmp_path: Path) -> None:
    items = task(tmp_path, [{"prompt": "p", "answer": "a"}, "", {"prompt": "q", "answer": 3}])
    assert items.splits == ("id",) and {e.answer for e in items.eval_examples("id", 5, 0)} == {"a", "3"}
    assert make_task(TaskSpec(name="jsonl", path=items.path)).splits == ("id",)


def test_exact_match(tmp_path: Path) -> None:
    items = task(tmp_path, ROWS)
    example = items.eval_examples("id", 1, 0)[0]
    assert items.score(example, f"  {example.answer}\n").outcome == "correct"
    assert items.score(example, example.answer + "0").outcome == "wrong_value"
    assert items.score(example, "").outcome == "wrong_value"


@pytest.mark.parametrize(
    ("answer", "completion", "outcome"),
    [
        ("42", "The answer is 42.", "correct"),
        ("0.5", "1/2", "correct"),
        ("1/3", "0.3333333333333", "correct"),
        ("1e3", "1000", "correct"),
        ("-7", "x = -7", "correct"),
        ("42", "43", "wrong_value"),
        ("42", "1e999999999", "wrong_value"),
        ("42", "no number here", "illegal"),
    ],
)
def test_numeric_match(tmp_path: Path, answer: str, completion: str, outcome: str) -> None:
    items = task(tmp_path, [{"prompt": "q", "answer": answer}], match="numeric")
    score = items.score(items.eval_examples("id", 1, 0)[0], completion)
    assert score.outcome == outcome
    assert score.format_error == (outcome == "illegal")
    assert score.reward == getattr(items.reward, outcome)


@given(st.text(max_size=200))
def test_numeric_scoring_never_raises(completion: str) -> None:
    items = JsonlTask(path="-", items=(), match="numeric")
    assert items.score(Example("q", "42", "id"), completion).outcome in ("correct", "wrong_value", "illegal")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["{not json"], r"items\.jsonl:1: not valid JSON"),
        ([{"prompt": "p", "answer": "a"}, {"answer": "a"}], r'items\.jsonl:2: missing "prompt"'),
        ([{"prompt": "p"}], r'items\.jsonl:1: missing "answer"'),
        ([[1, 2]], r"items\.jsonl:1: expected a JSON object"),
        ([{"prompt": 3, "answer": "a"}], r'items\.jsonl:1: "prompt" must be a string'),
        ([{"prompt": "p", "answer": "a", "split": ""}], r'"split" must be a non-empty string'),
        ([""], r"holds no items"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, rows: list[object], message: str) -> None:
    with pytest.raises(HealerError, match=message) as info:
        task(tmp_path, rows)
    assert "\n" not in str(info.value)


def test_missing_file_unknown_split_and_non_numeric_answers(tmp_path: Path) -> None:
    with pytest.raises(HealerError, match=r"task\.path: no such file"):
        JsonlTask.from_spec(TaskSpec(name="jsonl", path=str(tmp_path / "nope.jsonl")))
    with pytest.raises(HealerError, match=r"task\.path is required"):
        JsonlTask.from_spec(TaskSpec(name="jsonl"))
    with pytest.raises(HealerError, match="has no split 'ood'"):
        task(tmp_path, [{"prompt": "p", "answer": "a"}]).eval_examples("ood", 1, 0)
    with pytest.raises(HealerError, match=r"items\.jsonl:1: \"answer\" holds no number"):
        task(tmp_path, [{"prompt": "p", "answer": "abc"}], match="numeric")
