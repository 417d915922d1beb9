"""Start-up stays light: the CLI never imports torch, and the core never imports a UI toolkit."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = [
    "healer.store",
    "healer.presets",
    "healer.runner",
    "healer.report",
    "healer.tasks",
    "healer.paths",
    "healer.tasks.arithmetic",
]


def loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(output.split())


def test_healer_help_does_not_import_torch() -> None:
    modules = loaded_after(
        "from healer.cli import app\nimport typer.main\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert "healer.cli" in modules
    assert not {"torch", "transformers", "trl", "peft", "datasets"} & modules


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_no_ui_and_no_torch(module: str) -> None:
    modules = loaded_after(f"import {module}")
    assert module in modules
    assert not {"textual", "typer", "torch", "transformers"} & modules
