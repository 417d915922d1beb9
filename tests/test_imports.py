"""Start-up stays light: the CLI never imports torch, pandas or pyarrow, and the core never imports a UI toolkit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

TRAINING = {"torch", "transformers", "trl", "peft", "datasets"}
DATA_FRAMES = {"pandas", "pyarrow"}  # sqlite-utils imports them: only a migration may load it
TORCH_PACKAGES = ("healer/train/", "healer/spectral/", "healer/cli/", "healer/tui/")  # torch, or the UI


def _core_modules() -> list[str]:
    """Every module of healer outside the training code, the torch side of spectral and the UI."""
    found = []
    for path in sorted((REPO / "healer").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith(TORCH_PACKAGES) or relative.endswith(("__main__.py", "store/migrations.py")):
            continue
        found.append(relative.removesuffix(".py").removesuffix("/__init__").replace("/", "."))
    return [*found, "healer.spectral"]


CORE = _core_modules()


def loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(output.split())


def test_healer_help_does_not_import_torch() -> None:
    modules = loaded_after(
        "from healer.cli import app\nimport typer.main\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert "healer.cli" in modules
    assert not (TRAINING | DATA_FRAMES) & modules


def test_a_listing_imports_no_torch_and_no_pandas(tmp_path: Path) -> None:
    db = tmp_path / "healer.db"
    code = f"from healer.store import Store\nStore({str(db)!r}).close()"  # made (migrated) by another process
    subprocess.run([sys.executable, "-c", code], check=True)
    for command in (["runs", "ls"], ["runs", "ls", "--json"], ["runs", "tree"], ["queue", "ls"]):
        call = f"app(['--db', {str(db)!r}, *{command!r}])"
        modules = loaded_after(f"from healer.cli import app\ntry:\n    {call}\nexcept SystemExit:\n    pass")
        assert "healer.store.views" in modules, command
        assert not (TRAINING | DATA_FRAMES | {"sqlite_utils"}) & modules, command


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_no_ui_and_no_torch(module: str) -> None:
    modules = loaded_after(f"import {module}")
    assert module in modules
    assert not ({"textual", "typer"} | TRAINING | DATA_FRAMES) & modules
