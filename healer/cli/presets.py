"""`healer presets ls|show|keys`: the presets healer can find and what they resolve to."""

import re
import tomllib
from typing import Annotated

import typer

from healer.cli.common import App, Column, WideOption, out, print_json, print_table, show_wide
from healer.presets import available_presets, find_preset, load_preset, spec_help
from healer.text import flatten

app = App(help="Presets: TOML files of overrides that resolve to a RunSpec.")


@app.command("ls")
def ls(wide: WideOption = False, json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the presets found in ./presets, healer's own presets and $HEALER_HOME/presets."""
    show_wide(wide)
    rows = [_describe(path) for path in available_presets()]
    if json_out:
        print_json(rows)
    else:
        print_table(
            [
                "name",
                Column("method", drop=2),
                Column("model", cut=True, drop=1),
                Column("description", fold=True, min_width=36),
            ],
            [[r["name"], r["method"], r["model"], r["description"]] for r in rows],
        )


def _describe(path) -> dict:
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        data = {}
    return {
        "name": path.stem,
        "path": str(path),
        "method": data.get("method", "sft"),
        "model": data.get("model", {}).get("path", ""),
        "description": first_sentence(text),
    }


def first_sentence(text: str) -> str:
    """The first sentence of a preset's leading comment, however many lines it spans."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    comment = " ".join(lines)
    return re.split(r"(?<=[.!?])\s", comment, maxsplit=1)[0]


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="preset name or path")],
    overrides: Annotated[list[str] | None, typer.Option("--set", "-s", help="apply an override as `run` does")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the resolved spec as JSON")] = False,
) -> None:
    """Print a preset file and the full spec it resolves to (defaults filled in, paths resolved)."""
    preset = load_preset(name, overrides or [])
    resolved = preset.spec.to_dict()
    if json_out:
        print_json(resolved)
        return
    out.print(f"# {find_preset(name)}", markup=False, style="dim")
    out.print(preset.text.rstrip(), markup=False)
    out.print("\n# resolved", style="dim")
    for key, value in flatten(resolved):
        out.print(f"{key} = {value!r}", markup=False)


@app.command("keys")
def keys(wide: WideOption = False) -> None:
    """List every preset key with its default and meaning."""
    show_wide(wide)
    print_table(["key", Column("default", fold=True), Column("meaning", fold=True, min_width=30)], spec_help())
