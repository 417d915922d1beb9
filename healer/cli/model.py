"""`healer model tiny`: build the offline tiny model and tokenizer."""

from pathlib import Path
from typing import Annotated, Literal

import typer

from healer.cli.common import App, err, out

app = App(help="Models healer can build itself.")


@app.command("tiny")
def tiny(
    out_dir: Annotated[Path, typer.Argument(help="directory to write the model and tokenizer to")],
    size: Annotated[str, typer.Option(help="tiny (~1M parameters) or small (~6M)")] = "tiny",
    seed: Annotated[int, typer.Option(help="initialisation seed")] = 0,
) -> None:
    """Build a Llama-architecture causal LM and a character-level chat tokenizer, saved with save_pretrained."""
    from healer.cli.common import fail

    if size not in ("tiny", "small"):
        fail(f"--size {size!r}: choose tiny or small")
    if out_dir.exists() and any(out_dir.iterdir()):
        fail(f"{out_dir} exists and is not empty; choose a new directory")
    from healer.train.tiny import save_tiny

    size_name: Literal["tiny", "small"] = "tiny" if size == "tiny" else "small"
    try:
        path = save_tiny(out_dir, size_name, seed)
    except OSError as exc:
        fail(f"cannot write {out_dir}: {exc.strerror or exc}")
    err.print(f"built the {size} model; load it with AutoModelForCausalLM.from_pretrained({str(path)!r})")
    out.print(str(path.resolve()), markup=False)
