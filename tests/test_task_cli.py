"""`healer task ...` through typer's CliRunner: the JSON contract, readable text, and one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from healer.cli import app

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, ["task", *args], catch_exceptions=False)


def as_json(*args: str) -> Any:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_check_json_contract() -> None:
    data = as_json("check", "--cards", "3 3 8 8", "--rule", "id", "--formula", "8/(3-8/3)")
    assert data == {"outcome": "correct", "reward": 5.0, "feedback": "", "value": "24"}


@pytest.mark.parametrize(
    ("formula", "outcome", "reward", "value"),
    [
        ("3*8*3*8", "wrong_value", -1.0, "576"),
        ("3+8/3+8", "wrong_value", -1.0, "41/3"),
        ("3*8", "wrong_numbers", -4.0, "24"),
        ("8/(3-", "partial", 1.0, None),
        ("__import__('os')", "illegal", -3.0, None),
        ("(8+8)/(3-3)", "wrong_value", -1.0, None),
    ],
)
def test_check_outcomes(formula: str, outcome: str, reward: float, value: str | None) -> None:
    data = as_json("check", "--cards", "3 3 8 8", "--formula", formula)
    assert (data["outcome"], data["reward"], data.get("value")) == (outcome, reward, value)
    assert data["feedback"]


def test_check_ood_rule_and_text_output() -> None:
    data = as_json("check", "--cards", "A 5 J K", "--rule", "ood", "--formula", "1+5+11+13")
    assert (data["outcome"], data["value"]) == ("wrong_value", "30")
    text = invoke("check", "--cards", "3 3 8 8", "--formula", "3*8").output
    assert text.startswith("wrong_numbers  reward -4") and "uses 3 once" in text


def test_solve_json_contract() -> None:
    data = as_json("solve", "--cards", "A 5 J K", "--rule", "id")
    assert data["solvable"] is True and data["values"] == [1, 5, 10, 10] and data["cards"] == ["A", "5", "J", "K"]
    assert "(10+10+5-1)" not in data["solutions"] and "10+10+5-1" in data["solutions"]
    assert as_json("solve", "--cards", "A 5 J K", "--rule", "ood") == {
        "cards": ["A", "5", "J", "K"],
        "values": [1, 5, 11, 13],
        "solvable": False,
        "solutions": [],
    }


def test_solve_text() -> None:
    assert "8/(3-8/3)" in invoke("solve", "--cards", "3,3,8,8").output
    assert invoke("solve", "--cards", "1 1 1 1").output.startswith("no solution")
    assert as_json("solve", "--cards", "4 6", "--n-cards", "2")["solutions"] == ["4*6", "6*4"]


def test_stats_json_contract() -> None:
    assert as_json("stats", "--rule", "id") == {
        "rule": "id",
        "n_cards": 4,
        "target": 24,
        "hands": 1820,
        "solvable": 1236,
    }
    assert as_json("stats", "--rule", "ood")["hands"] == 1105
    three = as_json("stats", "--rule", "ood", "--n-cards", "3")
    assert (three["hands"], three["solvable"]) == (235, 52)
    assert "1236 of 1820" in invoke("stats").output


def test_sample_prints_prompts_with_their_cards() -> None:
    text = invoke("sample", "--split", "ood", "--n", "2").output
    assert text.count("--- ood episode") == 2 and "count as '11', '12', and '13' respectively" in text
    compact = as_json("sample", "--split", "id", "--n", "3", "--prompt", "compact-v1")
    assert len(compact) == 3 and all(e["prompt"].startswith("J=10 Q=10 K=10|") for e in compact)
    assert all(e["split"] == "id" and len(e["cards"]) == 4 for e in compact)


def test_ls_lists_the_tasks() -> None:
    names = [t["name"] for t in as_json("ls")]
    assert {"general_points", "jsonl", "arithmetic"} <= set(names)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("check", "--cards", "3 3 8 Z", "--formula", "1"), "error: unknown card 'Z'"),
        (("check", "--cards", "3 3 8", "--formula", "1"), "error: expected 4 cards, got 3"),
        (("check", "--cards", "3 3 8 8", "--rule", "odd", "--formula", "1"), "error: unknown rule 'odd'"),
        (("solve", "--cards", "3 3 8 8 8", "--rule", "id"), "error: expected 4 cards, got 5"),
        (("solve", "--cards", "", "--rule", "id"), "error: expected 4 cards, got 0"),
        (("stats", "--rule", "both"), "error: unknown rule 'both'"),
        (("stats", "--n-cards", "9"), "error: --n-cards must be between 2 and 6, got 9"),
        (("stats", "--target", "0"), "error: --target must be at least 1"),
        (("sample", "--split", "test"), "error: unknown split 'test'"),
        (("sample", "--prompt", "v2"), "error: --prompt 'v2' is not a known prompt version"),
        (("sample", "--n", "0"), "error: --n must be at least 1"),
    ],
)
def test_user_errors_are_one_line(args: tuple[str, ...], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_task_commands_do_not_import_torch() -> None:
    probe = (
        "import sys\nfrom healer.cli import app\n"
        "try:\n    app(['task', 'check', '--cards', '3 8', '--n-cards', '2', '--formula', '3*8'])\n"
        "except SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    modules = set(done.stdout.split())
    assert "healer.tasks.general_points" in modules
    assert not {"torch", "transformers", "trl", "datasets"} & modules
