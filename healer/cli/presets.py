"""`healer presets ls|show|keys`: the presets healer can find and what they resolve to."""

import tomllib
from typing import Annotated

import typer

from healer.cli.common import App, out, print_json, print_table
from healer.presets import find_preset, load_preset, preset_dirs, spec_help
from healer.report import flatten

app = App(help="Presets: TOML files of overrides that resolve to a RunSpec.")


@app.command("ls")
def ls(json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the presets found in ./presets, healer's own presets and $HEALER_HOME/presets."""
    rows = []
    seen: set[str] = set()
    for directory in preset_dirs():
        for path in sorted(directory.glob("*.toml")):
            if path.stem in seen:
                continue  # an earlier directory shadows it
            seen.add(path.stem)
            rows.append(_describe(path))
    if json_out:
        print_json(rows)
    else:
        print_table(
            ["name", "method", "model", "description"],
            [[r["name"], r["method"], r["model"], r["description"]] for r in rows],
        )


def _describe(path) -> dict:
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        data = {}
    comment = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
    return {
        "name": path.stem,
        "path": str(path),
        "method": data.get("method", "sft"),
        "model": data.get("model", {}).get("path", ""),
        "description": comment,
    }


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
def keys() -> None:
    """List every preset key with its default and meaning."""
    print_table(["key", "default", "meaning"], spec_help())
