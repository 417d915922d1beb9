"""The README starts with the two commands CI runs: the demo and the tests."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_readme_starts_with_the_demo_and_the_test_command() -> None:
    text = (REPO / "README.md").read_text()
    commands = re.findall(r"^# (\d)\. .*\n(.+)$", text, flags=re.MULTILINE)
    assert [n for n, _ in commands[:2]] == ["1", "2"]
    assert commands[0][1].endswith("healer demo")
    assert commands[1][1].endswith("pytest")
    assert text.index(commands[0][1]) < text.index("## A tour")
    assert "readme_command 1" in (REPO / ".ci" / "run").read_text()
