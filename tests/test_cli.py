"""The CLI through typer's CliRunner: help everywhere, the JSON contract, and one-line user errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from healer import __version__, paths
from healer.cli import app
from healer.store import Status, Store
from tests.conftest import healer

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def all_commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Typer vendors its own Click, so walk the tree by shape rather than by Click's classes."""
    found = [(path, command)]
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            found.extend(all_commands(sub, (*path, name)))
    return found


COMMANDS = all_commands(typer.main.get_command(app))


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "healer" for p, _ in COMMANDS])
def test_every_command_has_help(path: tuple[str, ...], command: Any) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0
    assert command.help and command.help.strip()
    assert "Usage:" in result.output
    for param in command.params:
        if param.param_type_name == "option" and param.name != "help":
            assert param.help, f"{' '.join(path)} {param.opts} has no help"


def test_the_contract_commands_exist() -> None:
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {
        "run",
        "runs ls",
        "runs show",
        "metrics",
        "db path",
        "sql",
        "presets ls",
        "presets show",
        "model tiny",
        "demo",
    } <= names


def test_version() -> None:
    assert invoke("--version").output.strip() == f"healer {__version__}"


@pytest.fixture
def populated(healer_home: Path) -> Store:
    """A store holding an SFT run with metrics and checkpoints and an RL child, written the way runs write."""
    store = Store(paths.db_path())
    sft = store.create_run(
        kind="sft", method="sft", name="tiny-sft", spec={"seed": 0}, model_path="/m/tiny", total_steps=20
    )
    store.mark_running(sft.id, pid=1, host="elsewhere")
    for step, loss in [(1, 4.0), (10, 2.5), (20, 1.25)]:
        store.log_metrics(sft.id, step, {"loss": loss, "learning_rate": 1e-3})
    store.add_checkpoint(sft.id, 10, "/runs/1/checkpoint-10")
    store.add_checkpoint(sft.id, 20, "/runs/1/checkpoint-20", protected=True)
    store.finish_run(sft.id, Status.DONE, exit_code=0)
    store.create_run(kind="rl", method="grpo", name="heal", spec={}, parent_run=sft.id, parent_step=10)
    return store


def test_runs_ls_json_contract(populated: Store) -> None:
    rows = json.loads(invoke("runs", "ls", "--json").output)
    assert [r["id"] for r in rows] == [1, 2]
    for row in rows:
        assert {"id", "name", "kind", "status", "parent_run", "parent_step", "created_at"} <= set(row)
    assert (rows[0]["status"], rows[0]["step"]) == ("done", 20)
    assert (rows[1]["kind"], rows[1]["parent_run"], rows[1]["parent_step"]) == ("rl", 1, 10)


def test_runs_show_json_contract(populated: Store) -> None:
    detail = json.loads(invoke("runs", "show", "1", "--json").output)
    assert detail["model_path"] == "/m/tiny" and detail["spec"] == {"seed": 0}
    assert [(c["step"], c["path"], c["protected"]) for c in detail["checkpoints"]] == [
        (10, "/runs/1/checkpoint-10", False),
        (20, "/runs/1/checkpoint-20", True),
    ]
    assert detail["last_metrics"]["loss"] == {"step": 20, "value": 1.25}
    assert detail["children"] == [
        {"id": 2, "name": "heal", "status": "queued", "parent_step": 10, "start_ref": None, "waiting_for": None}
    ]
    child = json.loads(invoke("runs", "show", "heal", "--json").output)
    assert child["lineage"] == [{"id": 1, "name": "tiny-sft", "kind": "sft", "step": 10}]


def test_runs_human_views(populated: Store) -> None:
    listing = invoke("runs", "ls").output
    assert "tiny-sft" in listing and "20/20" in listing and "1@10" in listing
    shown = invoke("runs", "show", "1").output
    assert "checkpoint-20" in shown and "loss" in shown and "4.000 -> 1.250" in shown


def test_metrics_json_contract(populated: Store) -> None:
    rows = json.loads(invoke("metrics", "1", "--json").output)
    assert len(rows) == 6 and all(set(r) == {"step", "name", "value", "wall_time"} for r in rows)
    losses = json.loads(invoke("metrics", "1", "--name", "loss", "--json").output)
    assert [(r["step"], r["value"]) for r in losses] == [(1, 4.0), (10, 2.5), (20, 1.25)]
    assert "1.25" in invoke("metrics", "tiny-sft", "--name", "loss").output


def test_sql_prints_rows_and_refuses_writes(populated: Store) -> None:
    rows = json.loads(invoke("sql", "SELECT name, kind FROM runs ORDER BY id", "--json").output)
    assert rows == [{"name": "tiny-sft", "kind": "sft"}, {"name": "heal", "kind": "rl"}]
    result = invoke("sql", "DELETE FROM runs")
    assert result.exit_code == 2 and "only read-only SELECT" in result.output
    assert len(populated.runs()) == 2


def test_db_path_follows_the_option_and_the_environment(tmp_path: Path, healer_home: Path) -> None:
    assert invoke("db", "path").output.strip() == str(healer_home / "healer.db")
    assert invoke("--db", str(tmp_path / "x.db"), "db", "path").output.strip() == str(tmp_path / "x.db")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("runs", "show", "42"), "error: no run with id 42"),
        (("metrics", "nope"), "error: no run with id or name 'nope'"),
        (("run", "no-such-preset"), "error: preset 'no-such-preset' not found"),
        (("run", "tiny-sft", "--set", "train.lrr=1"), "unknown key 'train.lrr' (did you mean train.lr?)"),
        (("run", "tiny-sft", "--set", "model.path=/nowhere", "--set", "model.build=''"), "'/nowhere' does not exist"),
        (("presets", "show", "tiny-sft", "--set", "train.max_steps=x"), "train.max_steps must be int"),
        (("model", "tiny", "/tmp", "--size", "huge"), "error: --size 'huge'"),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(populated: Store, args: tuple[str, ...], message: str) -> None:
    before = populated.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert populated.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == before


def test_unwritable_database_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("--db", str(blocker / "healer.db"), "queue", "pause")
    assert result.exit_code == 2
    assert result.output == f"error: --db {blocker / 'healer.db'}: {blocker} is not a folder; fix the path\n"
    assert blocker.read_text() == ""


def test_a_database_in_a_missing_folder_is_one_line_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing"
    db = missing / "x.db"
    listed = healer("--db", str(db), "runs", "ls")
    monkeypatch.setenv("HEALER_DB", str(db))
    queued = healer("queue", "add", "tiny-sft")
    problem = f"the folder {missing} does not exist; create it or fix the path"
    for result, option in ((listed, "--db"), (queued, "$HEALER_DB")):
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr == f"error: {option} {db}: {problem}\n"
    assert not missing.exists()


def test_reads_of_a_store_not_created_yet_are_empty_and_create_nothing(tmp_path: Path, healer_home: Path) -> None:
    for args in (("runs", "ls", "--json"), ("queue", "ls", "--json"), ("--db", str(tmp_path / "x.db"), "runs", "ls")):
        result = healer(*args)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == [] if "--json" in args else "no runs yet" in result.stderr
    shown = healer("runs", "show", "1")
    assert shown.returncode == 2 and shown.stderr.startswith("error: no run with id 1")
    assert not healer_home.exists() and not (tmp_path / "x.db").exists()
    healer("queue", "pause", check=True)
    healer("--db", str(tmp_path / "x.db"), "queue", "pause", check=True)
    assert (healer_home / "healer.db").exists() and (tmp_path / "x.db").exists(), "a write creates the store"


def test_presets_ls_show_and_keys() -> None:
    listed = json.loads(invoke("presets", "ls", "--json").output)
    assert "tiny-sft" in [p["name"] for p in listed]
    shown = json.loads(invoke("presets", "show", "tiny-sft", "--set", "train.lr=0.5", "--json").output)
    assert shown["train"]["lr"] == 0.5 and shown["model"]["build"] == "tiny"
    assert "train.lr" in invoke("presets", "keys").output


def test_model_tiny_builds_a_loadable_model(tmp_path: Path) -> None:
    result = invoke("model", "tiny", str(tmp_path / "m"))
    assert result.exit_code == 0
    assert (tmp_path / "m" / "model.safetensors").exists() and (tmp_path / "m" / "tokenizer.json").exists()
    again = invoke("model", "tiny", str(tmp_path / "m"))
    assert again.exit_code == 2 and "not empty" in again.output


def test_demo_reuses_a_stage0_run_whose_spec_predates_new_keys(tmp_path: Path) -> None:
    """The stage-0 cache survives keys added to RunSpec later (their defaults fill in), not a changed value."""
    from healer.cli.demo import STAGE0, cached_stage0
    from healer.presets import load_preset

    preset = load_preset(STAGE0)
    old = preset.spec.to_dict()
    del old["rl"]  # written before the [rl] section existed
    del old["task"]["reward"]["per_offence"]
    store = Store(tmp_path / "h.db")
    checkpoint = tmp_path / "checkpoint-1500"
    checkpoint.mkdir()

    def stored(spec: dict) -> int:
        run = store.create_run(kind="sft", method="sft", name=STAGE0, spec=spec, model_path="/m")
        store.add_checkpoint(run.id, 1500, str(checkpoint))
        store.finish_run(run.id, Status.DONE, exit_code=0)
        return run.id

    changed = {**old, "train": {**old["train"], "lr": 1e-2}}
    stored(changed)
    assert cached_stage0(store, preset) is None, "a changed value must not be reused"
    reusable = stored(old)
    stored({**old, "bogus": 1})  # a spec that no longer parses is skipped, not an error
    found = cached_stage0(store, preset)
    assert found is not None and found.id == reusable


def test_demo_rebuilds_a_stage0_run_that_failed_or_whose_checkpoint_is_gone(tmp_path: Path) -> None:
    from healer.cli.demo import STAGE0, cached_stage0
    from healer.presets import load_preset

    preset = load_preset(STAGE0)
    store = Store(tmp_path / "h.db")
    checkpoint = tmp_path / "checkpoint-1200"
    checkpoint.mkdir()
    failed = store.create_run(kind="sft", method="sft", name=STAGE0, spec=preset.spec.to_dict(), model_path="/m")
    store.add_checkpoint(failed.id, 1200, str(checkpoint))
    store.finish_run(failed.id, Status.FAILED, exit_code=1)
    assert cached_stage0(store, preset) is None
    done = store.create_run(kind="sft", method="sft", name=STAGE0, spec=preset.spec.to_dict(), model_path="/m")
    store.add_checkpoint(done.id, 1200, str(checkpoint))
    store.finish_run(done.id, Status.DONE, exit_code=0)
    assert cached_stage0(store, preset).id == done.id
    checkpoint.rmdir()  # deleted by hand: the demo trains stage 0 again
    assert cached_stage0(store, preset) is None


def test_demo_in_a_home_it_cannot_create_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("demo", "--home", str(blocker / "home"), "--quick")
    assert result.exit_code == 2 and "cannot create the demo's home" in result.output
    assert "Traceback" not in result.output
