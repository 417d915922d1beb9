"""The TUI's settings file: defaults, save/load round trips, and one warning (never an exception) per bad value."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from healer.tui import settings
from healer.tui.settings import PANES, Settings, config_path, load, save, with_pane

GOOD = 'theme = "nord"\nalarm_drop = 12.5\n\n[panes]\nrotation = false\n'
GOOD_SETTINGS = Settings(theme="nord", alarm_drop=12.5, panes=("runs", "accuracy", "gpus"))


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own $XDG_CONFIG_HOME (and $HOME, so warnings show whole paths wherever the temporary
    folder is), so none reads or writes the real user's settings."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return config


def write(text: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_path_follows_xdg_config_home(config_home: Path) -> None:
    assert config_path() == config_home / "healer" / "tui.toml"


@pytest.mark.parametrize("value", [None, "", "relative/config"])
def test_path_falls_back_to_dot_config(value: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, empty and relative $XDG_CONFIG_HOME all mean ~/.config, as the XDG spec says."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    if value is None:
        monkeypatch.delenv("XDG_CONFIG_HOME")
    else:
        monkeypatch.setenv("XDG_CONFIG_HOME", value)
    assert config_path() == tmp_path / "user" / ".config" / "healer" / "tui.toml"


def test_missing_file_gives_defaults_silently() -> None:
    assert load() == (Settings(), [])
    assert Settings() == Settings("textual-dark", 5.0, ("runs", "accuracy", "rotation", "gpus"))


def test_good_file_loads() -> None:
    write(GOOD)
    assert load() == (GOOD_SETTINGS, [])


@pytest.mark.parametrize(
    "chosen",
    [
        Settings(),
        GOOD_SETTINGS,
        Settings(theme="textual-light", alarm_drop=100, panes=("gpus",)),
        Settings(alarm_drop=0.001, panes=("runs", "rotation")),
    ],
)
def test_save_then_load_round_trips(chosen: Settings) -> None:
    path = save(chosen)
    assert path == config_path()
    assert load() == (chosen, [])
    assert path.read_text().startswith("# Settings of `healer tui`")


def test_save_to_a_given_path_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "tui.toml"
    assert save(GOOD_SETTINGS, path) == path
    assert load(path) == (GOOD_SETTINGS, [])
    assert not config_path().exists()


def test_save_replaces_atomically_and_leaves_no_scratch_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """The new text reaches the file through one os.replace from the same folder; nothing else stays behind."""
    path = save(Settings())
    replaced: list[tuple[Path, Path]] = []
    real_replace = settings.os.replace

    def spy(source: str, target: str | Path) -> None:
        replaced.append((Path(source), Path(target)))
        real_replace(source, target)

    monkeypatch.setattr(settings.os, "replace", spy)
    save(GOOD_SETTINGS)
    [(source, target)] = replaced
    assert target == path and source.parent == path.parent and source != path
    assert sorted(path.parent.iterdir()) == [path]
    assert load() == (GOOD_SETTINGS, [])


def test_a_failed_save_keeps_the_old_file_and_no_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(GOOD_SETTINGS)

    def refuse(source: str, target: str | Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(settings.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        save(Settings())
    assert sorted(path.parent.iterdir()) == [path]
    assert load() == (GOOD_SETTINGS, [])


BASE = {"theme": 'theme = "nord"', "alarm_drop": "alarm_drop = 12.5", "panes": "[panes]\nrotation = false"}
SHOWN = GOOD_SETTINGS.panes


@pytest.mark.parametrize(
    ("section", "text", "expected", "loaded"),
    [
        ("theme", 'theme = "neon"', "theme = 'neon': not a Textual theme (known: ansi-dark, ", "textual-dark"),
        ("theme", 'theme = "nrod"', "theme = 'nrod': not a Textual theme (did you mean 'nord'?)", "textual-dark"),
        ("theme", "theme = 3", "theme = 3: not a Textual theme", "textual-dark"),
        ("alarm_drop", "alarm_drop = -3", "alarm_drop = -3: give points between 0 and 100, e.g. 5; using 5", 5.0),
        ("alarm_drop", "alarm_drop = 0", "alarm_drop = 0: give points", 5.0),
        ("alarm_drop", "alarm_drop = 101", "alarm_drop = 101: give points", 5.0),
        ("alarm_drop", "alarm_drop = nan", "alarm_drop = nan: give points", 5.0),
        ("alarm_drop", 'alarm_drop = "5"', "alarm_drop = '5': give points", 5.0),
        ("alarm_drop", "alarm_drop = true", "alarm_drop = true: give points", 5.0),
        ("panes", f"{BASE['panes']}\naccuracy = 0", "panes.accuracy = 0: give true or false; using true", SHOWN),
        ("panes", 'panes = "runs"', "panes = 'runs': give a table, [panes] with runs = true, ", PANES),
    ],
)
def test_a_bad_value_warns_once_and_only_that_key_takes_its_default(
    section: str, text: str, expected: str, loaded: object
) -> None:
    """The other keys keep their good values: one bad line must not throw away the rest of the file."""
    path = write("\n".join({**BASE, section: text}.values()) + "\n")
    [warning] = load()[1]
    assert warning.startswith(f"{path}: {expected}"), warning
    assert load()[0] == dataclasses.replace(GOOD_SETTINGS, **{section: loaded})


def test_not_toml_gives_all_defaults_and_one_warning() -> None:
    path = write('theme = "nord"\nalarm_drop = \n')
    loaded, [warning] = load()
    assert loaded == Settings()
    assert warning.startswith(f"{path}: not valid TOML (")
    assert warning.endswith("); using the defaults")


def test_unreadable_file_gives_defaults_and_one_warning() -> None:
    path = write("")
    path.write_bytes(b'theme = "\xff"\n')
    loaded, [warning] = load()
    assert loaded == Settings() and warning.startswith(f"{path}: cannot be read (")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('them = "nord"\n', "unknown key 'them' (did you mean 'theme'?); ignored"),
        ("colour = 1\n", "unknown key 'colour' (known: theme, alarm_drop, [panes]); ignored"),
        ("[panes]\ngpu = false\n", "[panes] unknown pane 'gpu' (did you mean 'gpus'?); ignored"),
    ],
)
def test_unknown_key_is_named_and_ignored(text: str, expected: str) -> None:
    path = write(text)
    assert load() == (Settings(), [f"{path}: {expected}"])


def test_hiding_every_pane_shows_them_all() -> None:
    write("[panes]\n" + "".join(f"{pane} = false\n" for pane in PANES))
    loaded, [warning] = load()
    assert loaded.panes == PANES and "hides every pane" in warning


def test_warnings_show_the_home_folder_as_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("XDG_CONFIG_HOME")
    write("alarm_drop = -3\n")
    assert load()[1] == ["~/.config/healer/tui.toml: alarm_drop = -3: give points between 0 and 100, e.g. 5; using 5"]


def test_theme_names_are_textuals_builtins() -> None:
    from textual.theme import BUILTIN_THEMES

    assert settings.themes() == sorted(BUILTIN_THEMES)
    assert "nord" in settings.themes() and "neon" not in settings.themes()
    assert Settings().theme in BUILTIN_THEMES


def test_with_pane_keeps_canonical_order() -> None:
    hidden = with_pane(Settings(), "accuracy", shown=False)
    assert hidden.panes == ("runs", "rotation", "gpus")
    assert with_pane(hidden, "accuracy", shown=True).panes == PANES
    assert with_pane(hidden, "runs", shown=True) == hidden
    only = Settings(panes=("gpus",))
    assert with_pane(only, "gpus", shown=False) == only  # the last pane stays
    with pytest.raises(ValueError, match="not a pane"):
        with_pane(hidden, "queue", shown=False)


def test_alarm_drop_fraction_is_what_run_lines_takes() -> None:
    from healer.tui.panels.runs import ALARM_DROP

    assert Settings().alarm_drop_fraction == pytest.approx(ALARM_DROP)


def test_loading_settings_does_not_import_textual() -> None:
    """Only the theme check needs Textual, and it imports it itself; the module alone stays light."""
    code = "import sys, healer.tui.settings; print('textual' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
