"""Peaks and checkpoint references over stored evaluations (written directly, as evaluation writes them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from healer.errors import HealerError
from healer.evals import find_peaks, peaks_report
from healer.refs import resolve_checkpoint
from healer.stats import wilson
from healer.store import Store


def record(store: Store, run_id: int, step: int, split: str, correct: int, n: int = 100, loss: float = 1.0,
           protocol: str = "single") -> None:  # fmt: skip
    low, high = wilson(correct, n)
    summary = {
        "run_id": run_id, "step": step, "checkpoint_path": f"/c/{step}", "task": "general_points", "split": split,
        "protocol": protocol, "max_attempts": 1, "n": n, "correct": correct, "accuracy": correct / n, "ci_low": low,
        "ci_high": high, "format_error_rate": 0.0, "mean_reward": 0.0, "loss": loss, "outcomes": "{}",
        "settings": json.dumps({"n": n}), "seconds": 0.1,
    }  # fmt: skip
    sample = {"idx": 0, "prompt": "p", "completion": "c", "transcript": None, "outcome": "correct", "reward": 5.0,
              "correct": 1, "attempts": 1, "meta": "{}"}  # fmt: skip
    store.record_eval(summary, [sample])


@pytest.fixture
def run_with_evals(tmp_path: Path) -> tuple[Store, int]:
    """SFT-like curves: ID rises, OOD peaks at step 20 then falls, the ID loss keeps falling."""
    store = Store(tmp_path / "h.db")
    run = store.create_run(kind="sft", method="sft", name="sft", spec={}, model_path="/base")
    curve = {0: (10, 30, 3.0), 10: (40, 35, 2.0), 20: (60, 40, 1.5), 30: (80, 40, 1.0), 40: (90, 25, 0.8)}
    for step, (id_correct, ood_correct, loss) in curve.items():
        if step:
            (tmp_path / f"checkpoint-{step}").mkdir()
            store.add_checkpoint(run.id, step, str(tmp_path / f"checkpoint-{step}"))
        record(store, run.id, step, "id", id_correct, loss=loss)
        record(store, run.id, step, "ood", ood_correct, loss=loss + 1)
    return store, run.id


def test_peaks_name_the_right_checkpoints(run_with_evals: tuple[Store, int]) -> None:
    store, run_id = run_with_evals
    peaks = find_peaks(store.evals(run_id))
    assert {name: p.step for name, p in peaks.items()} == {"peak-ood": 20, "best-id": 40, "last": 40, "loss-pick": 40}
    report = peaks_report(store.evals(run_id))
    assert report["start"]["ood"]["accuracy"] == 0.30
    assert report["peak-ood"]["ood"]["accuracy"] == 0.40 and report["peak-ood"]["id"]["accuracy"] == 0.60


def test_a_smaller_rerun_does_not_replace_the_full_evaluation(run_with_evals: tuple[Store, int]) -> None:
    store, run_id = run_with_evals
    record(store, run_id, 40, "ood", 9, n=10)  # a quick 10-episode look at step 40: 90 %
    assert find_peaks(store.evals(run_id))["peak-ood"].step == 20
    record(store, run_id, 40, "ood", 25)  # the same settings again: replaced, not duplicated
    assert len([e for e in store.evals(run_id) if e.step == 40 and e.split == "ood"]) == 2


def test_references_resolve(run_with_evals: tuple[Store, int], tmp_path: Path) -> None:
    store, run_id = run_with_evals
    assert resolve_checkpoint(store, f"{run_id}@peak-ood").step == 20
    assert resolve_checkpoint(store, f"{run_id}@best-id").step == 40
    assert resolve_checkpoint(store, f"{run_id}@last").path == str(tmp_path / "checkpoint-40")
    assert resolve_checkpoint(store, "sft@10").step == 10
    assert resolve_checkpoint(store, f"{run_id}@0").path == "/base"
    assert resolve_checkpoint(store, "sft").step == 40
    by_path = resolve_checkpoint(store, str(tmp_path / "checkpoint-20"))
    assert (by_path.run and by_path.run.id, by_path.step) == (run_id, 20)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("1@15", "run 1 has no checkpoint at step 15; its checkpoints: 10, 20, 30, 40"),
        ("1@best", "use a step number or one of last, peak-ood, best-id, loss-pick"),
        ("9@last", "no run with id 9"),
    ],
)
def test_bad_references_are_one_line(run_with_evals: tuple[Store, int], ref: str, message: str) -> None:
    store, _ = run_with_evals
    with pytest.raises(HealerError) as info:
        resolve_checkpoint(store, ref)
    assert message in str(info.value)


def test_pruned_or_missing_checkpoints_are_one_line(run_with_evals: tuple[Store, int], tmp_path: Path) -> None:
    store, run_id = run_with_evals
    (tmp_path / "checkpoint-20").rmdir()
    with pytest.raises(HealerError, match=r"run 1@20: the checkpoint directory .* is gone \(pruned or moved\)"):
        resolve_checkpoint(store, f"{run_id}@peak-ood")
    with pytest.raises(HealerError, match="no checkpoint directory at /no/such/dir"):
        resolve_checkpoint(store, "/no/such/dir")


def test_a_run_without_evaluations_has_no_peak(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.db")
    run = store.create_run(kind="sft", method="sft", name="x", spec={})
    store.add_checkpoint(run.id, 10, "/c/10")
    with pytest.raises(HealerError, match="no evaluations to pick from"):
        resolve_checkpoint(store, f"{run.id}@peak-ood")
    with pytest.raises(HealerError, match="not a model directory"):
        resolve_checkpoint(store, str(tmp_path))
