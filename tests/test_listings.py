"""Every listing fits an 80-column terminal, says what it means instead of `None` or `?`, and stays whole when piped.

The store is a real SQLite file filled through the store's own writes with what a day of work leaves: an SFT run with
evaluated checkpoints and spectra, an RL run from its OOD peak, one queued from a pick not made yet, an edit, a
failed run with a long reason, and checkpoint jobs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from healer import paths
from healer.presets import load_preset
from healer.queue import add as queue_add
from healer.queue import enqueue_job
from healer.runner import create_run
from healer.stats import wilson
from healer.store import Status, Store
from tests.conftest import REPO

pytestmark = pytest.mark.slow
SFT_STEPS = (50, 100, 150, 200, 250, 300)
ACCURACY = {0: (0.99, 0.92), 50: (0.90, 0.29), 100: (0.90, 0.28), 150: (0.94, 0.14), 200: (0.99, 0.04),
            250: (1.0, 0.10), 300: (0.98, 0.06)}  # fmt: skip
PLACEHOLDERS = re.compile(r"\bNone\b|@None|/\?|\bnan\b")


def _checkpoint_dir(root: Path, step: int) -> str:
    """A checkpoint folder a run can start from: config and tokenizer files (the listings never load weights)."""
    directory = root / f"checkpoint-{step}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text("{}")
    (directory / "tokenizer_config.json").write_text("{}")
    return str(directory)


def _record_eval(store: Store, run_id: int, step: int, split: str, accuracy: float, n: int = 500) -> None:
    correct = round(accuracy * n)
    low, high = wilson(correct, n)
    summary = {"run_id": run_id, "step": step, "checkpoint_path": None, "task": "card_sum", "split": split,
               "protocol": "single", "max_attempts": 1, "n": n, "correct": correct, "accuracy": correct / n,
               "ci_low": low, "ci_high": high, "format_error_rate": 0.0, "mean_reward": None,
               "loss": 0.1 * (1 - accuracy),
               "outcomes": json.dumps({"correct": correct, "wrong_value": n - correct}), "settings": "{}",
               "seconds": 1.0}  # fmt: skip
    store.record_eval(summary, [])


def _record_spectra(store: Store, run_id: int, step: int, ref_run: int) -> None:
    rows = []
    for layer in range(4):
        for module in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
            for side in ("u", "v"):
                angle = step / 30 + layer + (side == "v")
                rows.append({"param": f"model.layers.{layer}.self_attn.{module}.weight", "layer": layer,
                             "module": module, "side": side, "k": 16, "n": 128, "forced_zero": 0,
                             "mean_angle_deg": angle, "median_angle_deg": angle, "max_angle_deg": 2 * angle,
                             "chordal": 0.5, "chordal_norm": 0.1, "sigma_rel_drift": 0.0001 * step,
                             "energy_diag": 0.5, "energy_rotation": 0.3, "energy_outside": 0.2, "gap_rel": 0.1,
                             "method": "exact", "error_deg": None, "seconds": 0.01, "angles_deg": [angle] * 16,
                             "sigma_drift": [0.01] * 16})  # fmt: skip
    store.record_spectra(run_id, step, "start", ref_run, 0, {"k": 16}, rows)


@pytest.fixture
def busy_store(healer_home: Path) -> dict[str, int]:
    """The store after a day of work; the ids of the runs by role."""
    healer_home.mkdir(parents=True, exist_ok=True)
    with Store(paths.db_path()) as store:
        sft_preset = load_preset("tiny-sft", ['name="tiny-sft-with-a-rather-long-name-for-the-paper"'])
        sft = create_run(store, sft_preset)
        root = Path(sft.out_dir or healer_home)
        store.mark_running(sft.id, pid=os.getpid(), host="elsewhere")
        for step in range(1, 301):
            store.log_metrics(sft.id, step, {"loss": 2.0 / step, "learning_rate": 1e-3}, wall_time=1000.0 + step)
        for step in SFT_STEPS:
            store.add_checkpoint(sft.id, step, _checkpoint_dir(root, step))
        for step, (id_acc, ood_acc) in ACCURACY.items():
            _record_eval(store, sft.id, step, "id", id_acc)
            _record_eval(store, sft.id, step, "ood", ood_acc)
            if step:
                _record_spectra(store, sft.id, step, sft.id)
        store.finish_run(sft.id, Status.DONE, exit_code=0)
        job = enqueue_job(store, store.run(sft.id), 300, str(root / "checkpoint-300"))
        assert job is not None
        store.finish_run(job.id, Status.DONE, exit_code=0)

        grpo = load_preset("tiny-grpo")
        rl = create_run(store, grpo, parent_run=sft.id, parent_step=50)
        store.mark_running(rl.id, pid=os.getpid(), host="elsewhere")
        for step in range(1, 101):
            store.log_metrics(rl.id, step, {"loss": 0.01, "reward": step / 100}, wall_time=2000.0 + step)
        store.add_checkpoint(rl.id, 100, _checkpoint_dir(Path(rl.out_dir or healer_home), 100))
        _record_eval(store, rl.id, 0, "id", 0.90)
        _record_eval(store, rl.id, 0, "ood", 0.29)
        _record_eval(store, rl.id, 100, "id", 1.0)
        _record_eval(store, rl.id, 100, "ood", 0.25)
        store.finish_run(rl.id, Status.DONE, exit_code=0)

        running = create_run(store, load_preset("tiny-sft"), queued=1)
        store.claim(running.id, worker="elsewhere:1", host="elsewhere", assigned_gpus="0")
        store.mark_running(running.id, pid=1, host="elsewhere")
        for step in range(1, 41):
            store.log_metrics(running.id, step, {"loss": 1.0 / step, "learning_rate": 1e-3}, wall_time=3000.0 + step)
        waiting = queue_add(store, grpo, start=f"{running.id}@peak-ood", after=str(rl.id))
        failed = create_run(store, load_preset("tiny-sft"))
        store.finish_run(failed.id, Status.FAILED, exit_code=1, reason="RuntimeError: " + "a long failure " * 12)
        edit = store.create_run(kind="edit", method="edit", name="tiny-sft-edit-top16-from-50", spec={},
                                model_path=_checkpoint_dir(healer_home / "edit", 0), parent_run=sft.id,
                                parent_step=300)  # fmt: skip
        _record_eval(store, edit.id, 0, "id", 0.87)
        _record_eval(store, edit.id, 0, "ood", 0.276)
        store.finish_run(edit.id, Status.DONE, exit_code=0)
    return {"sft": sft.id, "rl": rl.id, "running": running.id, "waiting": waiting.id, "failed": failed.id,
            "edit": edit.id}  # fmt: skip


def _healer(*args: str, columns: int | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "healer", *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)  # fmt: skip


LISTINGS = [
    ("runs", "ls"), ("runs", "ls", "--all"), ("runs", "show", "{sft}"), ("runs", "show", "{waiting}"),
    ("runs", "show", "{running}"), ("runs", "show", "{edit}"), ("runs", "show", "{failed}"),
    ("runs", "show", "{rl}", "--spec"), ("runs", "tree"),
    ("queue", "ls"), ("queue", "ls", "--all"), ("heal", "{sft}", "--report"), ("metrics", "{rl}", "--lineage"),
    ("presets", "ls"), ("presets", "keys"), ("task", "ls"), ("spectra", "show", "{sft}"),
    ("sql", "SELECT id, name, status, reason, out_dir, spec FROM runs"),
]  # fmt: skip


@pytest.mark.parametrize("command", LISTINGS, ids=lambda c: " ".join(c))
def test_every_listing_fits_80_columns_without_placeholders(busy_store: dict[str, int], command: tuple) -> None:
    args = [part.format(**busy_store) for part in command]
    result = _healer(*args, columns=80)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the listing printed nothing"
    for stream in (result.stdout, result.stderr):
        too_long = [line for line in stream.splitlines() if len(line) > 80]
        assert not too_long, f"{len(too_long)} lines over 80 columns, e.g.:\n" + "\n".join(too_long[:3])
        assert not PLACEHOLDERS.findall(stream), stream


def test_queued_runs_say_where_they_will_start_and_what_they_wait_for(busy_store: dict[str, int]) -> None:
    sft, waiting = busy_store["running"], busy_store["waiting"]
    shown = _healer("runs", "show", str(sft), columns=200).stdout
    assert f"run {waiting} tiny-grpo from {sft}@peak-ood, waiting for run {sft} to finish" in shown
    tree = _healer("runs", "tree", columns=200).stdout
    assert f"@peak-ood {waiting} tiny-grpo" in tree
    listed = _healer("runs", "ls", columns=80).stdout
    row = next(line for line in listed.splitlines() if line.split()[0] == str(waiting))
    assert f"{sft}@peak-ood" in row


def test_piped_output_keeps_every_column_and_wide_shows_them_at_80(busy_store: dict[str, int]) -> None:
    headers = ("kind", "loss", "reward", "from", "created")
    narrow = _healer("runs", "ls", columns=80)
    assert not all(h in narrow.stdout.splitlines()[0].split() for h in headers)
    assert "--wide shows them" in narrow.stderr
    for result in (_healer("runs", "ls", columns=None), _healer("runs", "ls", "--wide", columns=80)):
        assert all(h in result.stdout.splitlines()[0].split() for h in headers), result.stdout
        assert all(line == line.rstrip() for line in result.stdout.splitlines())
    reason = _healer("runs", "ls", columns=None).stdout  # a piped table never folds a cell over two lines
    assert len(reason.splitlines()) == 1 + len(json.loads(_healer("runs", "ls", "--json", columns=None).stdout))


def test_markup_like_text_is_printed_as_written(busy_store: dict[str, int]) -> None:
    keys = _healer("presets", "keys", columns=None).stdout
    assert "with [rl] and the task's reward" in keys
    assert all(line.split()[1] for line in _healer("task", "ls", columns=None).stdout.splitlines()[1:])
