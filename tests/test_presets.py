"""Presets: every shipped preset loads; every mistake is one error naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from healer.errors import HealerError
from healer.presets import RunSpec, load_preset, parse_override, spec_help

REPO = Path(__file__).resolve().parent.parent
PRESETS = sorted((REPO / "presets").glob("*.toml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


TINY = '[model]\npath = "{home}/models/tiny"\nbuild = "tiny"\n'


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_shipped_preset_loads(path: Path) -> None:
    preset = load_preset(str(path))
    assert preset.spec.name == path.stem
    assert Path(preset.spec.model.path).is_absolute() or "/" in preset.spec.model.path
    assert preset.text == path.read_text()


def test_a_preset_holds_only_overrides_and_defaults_fill_the_rest(tmp_path: Path, healer_home: Path) -> None:
    spec = load_preset(str(write(tmp_path, TINY + "[train]\nlr = 1\n"))).spec
    assert spec.train.lr == 1.0 and isinstance(spec.train.lr, float)
    assert spec.train.batch_size == RunSpec().train.batch_size
    assert spec.model.path == str(healer_home / "models" / "tiny")


def test_set_overrides_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, TINY)
    spec = load_preset(
        str(path),
        ["train.lr=1e-4", "train.max_steps=7", "lora.enabled=true", "lora.target_modules=['q_proj']", "name=my run"],
    ).spec
    assert (spec.train.lr, spec.train.max_steps, spec.lora.enabled) == (1e-4, 7, True)
    assert spec.lora.target_modules == ("q_proj",) and spec.name == "my run"


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (TINY + "[train]\nlrr = 1\n", [], r"p\.toml: unknown key 'train\.lrr' \(did you mean train\.lr\?\)"),
        ("bogus = 1\n" + TINY, [], r"unknown key 'bogus'"),
        (TINY + "[train]\nmax_steps = '10'\n", [], r"train\.max_steps must be int, got str '10'"),
        (TINY + "[train]\nmax_steps = 1.5\n", [], r"train\.max_steps must be int"),
        (TINY + "[lora]\nenabled = 1\n", [], r"lora\.enabled must be bool"),
        ("precision = 'fp8'\n" + TINY, [], r"precision = 'fp8' is not one of"),
        ("model = 'x'\n", [], r"model must be a table"),
        (TINY + "[train]\nmax_steps = 0\n", [], r"train\.max_steps must be at least 1"),
        (TINY + "[task]\nname = 'nope'\n", [], r"task\.name 'nope' is not a known task"),
        ('[model]\npath = "/does/not/exist"\n', [], r"model\.path '/does/not/exist' does not exist"),
        ("[model]\n", [], r"model\.path is required"),
        ("[model\npath=1", [], r"not valid TOML"),
        (TINY, ["train.lrr=3"], r"with --set train\.lrr=3: unknown key 'train\.lrr'"),
        (TINY, ["train.lr=abc"], r"train\.lr must be float, got str 'abc'"),
        (TINY, ["nokey"], r"--set 'nokey': expected KEY=VALUE"),
        (TINY, ["name.x=1"], r"'name' is a value, not a section"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path: Path, text: str, overrides: list[str], message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(HealerError, match=message) as info:
        load_preset(str(path), overrides)
    assert str(path) in str(info.value) or overrides
    assert "\n" not in str(info.value)


def test_a_hub_id_passes_validation(tmp_path: Path) -> None:
    spec = load_preset(str(write(tmp_path, '[model]\npath = "Qwen/Qwen2.5-0.5B-Instruct"\n'))).spec
    assert spec.model.path == "Qwen/Qwen2.5-0.5B-Instruct"


def test_presets_are_found_by_name(tmp_path: Path) -> None:
    assert load_preset("tiny-sft").path == (REPO / "presets" / "tiny-sft.toml").resolve()
    for name in ("gp-sft-qwen2.5-7b", "gp-grpo-qwen2.5-7b"):  # names with dots in them are names, not suffixes
        assert load_preset(name).path == (REPO / "presets" / f"{name}.toml").resolve()
    with pytest.raises(HealerError, match=r"preset 'nope' not found.*tiny-sft"):
        load_preset("nope")


def test_override_values_are_toml_literals_or_strings() -> None:
    assert parse_override("a=1") == ("a", 1)
    assert parse_override("a.b = 'x'") == ("a.b", "x")
    assert parse_override("a=/some/path") == ("a", "/some/path")
    assert parse_override("a=[1, 2]") == ("a", [1, 2])


def test_every_key_has_help() -> None:
    rows = spec_help()
    keys = [key for key, _, _ in rows]
    assert "train.lr" in keys and "lora.r" in keys and "model.path" in keys and "seed" in keys
    assert all(text for _, _, text in rows)
