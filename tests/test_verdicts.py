"""The demo's verdicts on seeded numbers, no training: each claim shown, not shown and borderline, decided from the
Wilson intervals and McNemar's exact test on the same items, never from point estimates alone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from healer.stats import mcnemar, wilson
from healer.store import Eval, Spectrum, Store
from healer.store.views import Reader
from healer.verdicts import Verdict, edit_restores, forgetting, loss_pick, of_lineage, rl_heals, rotation


def _eval(store: Store, run: int, step: int, split: str, right: list[bool], loss: float | None = None) -> Eval:
    correct, n = sum(right), len(right)
    low, high = wilson(correct, n)
    summary = {"run_id": run, "step": step, "checkpoint_path": None, "task": "general_points", "split": split,
               "protocol": "single", "max_attempts": 1, "n": n, "correct": correct, "accuracy": correct / n,
               "ci_low": low, "ci_high": high, "format_error_rate": 0.0, "mean_reward": None, "loss": loss,
               "outcomes": "{}", "settings": "{}", "seconds": 1.0}  # fmt: skip
    samples = [{"idx": i, "prompt": "", "completion": "", "transcript": None, "outcome": "ok" if r else "wrong",
                "reward": None, "correct": r, "attempts": 1, "meta": "{}"} for i, r in enumerate(right)]  # fmt: skip
    return store.record_eval(summary, samples)


def _right(correct: int, n: int = 200, offset: int = 0) -> list[bool]:
    """`correct` items right out of `n`, starting at item `offset` (so two lists overlap where their ranges do)."""
    return [(i - offset) % n < correct for i in range(n)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "healer.db")


def _sft(store: Store, ood: dict[int, int], loss: dict[int, float] | None = None) -> list[Eval]:
    run = store.create_run(kind="sft", method="sft", name="sft", spec={})
    for step, correct in ood.items():
        _eval(store, run.id, step, "id", _right(150), (loss or {}).get(step))
        _eval(store, run.id, step, "ood", _right(correct))
    return store.evals(run.id)


def test_mcnemar_is_the_exact_binomial_test() -> None:
    assert mcnemar(0, 0) == 1.0 and mcnemar(5, 5) == 1.0
    assert mcnemar(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar(12, 3) == pytest.approx(2 * (1 + 15 + 105 + 455) / 2**15)
    assert mcnemar(3, 12) == mcnemar(12, 3)
    with pytest.raises(ValueError):
        mcnemar(-1, 2)


def test_forgetting_needs_disjoint_intervals(store: Store) -> None:
    shown = forgetting(_sft(store, {0: 180, 20: 170, 40: 120}))
    assert shown.shown is True and "at the starting model" in shown.evidence and "disjoint" in shown.evidence
    overlap = forgetting(_sft(store, {0: 150, 20: 140, 40: 135}))  # 75 % -> 67.5 %: a fall, inside the noise
    assert overlap.shown is False and "overlap" in overlap.evidence
    rising = forgetting(_sft(store, {0: 100, 20: 120, 40: 140}))
    assert rising.shown is False and "the last checkpoint is the best" in rising.evidence
    assert forgetting(_sft(store, {0: 100})).shown is None


def test_loss_pick_differs_only_when_its_ood_is_below_the_peaks_interval(store: Store) -> None:
    apart = loss_pick(_sft(store, {0: 100, 20: 160, 40: 90}, loss={20: 0.5, 40: 0.2}))
    assert apart.shown is True and "lowest ID loss at step 40" in apart.evidence
    near = loss_pick(_sft(store, {0: 100, 20: 160, 40: 150}, loss={20: 0.5, 40: 0.2}))
    assert near.shown is False and "overlap" in near.evidence
    same = loss_pick(_sft(store, {0: 100, 20: 160, 40: 90}, loss={20: 0.1, 40: 0.2}))
    assert same.shown is False and "the same checkpoint" in same.evidence


def _spectra(angles: dict[int, float], drift: dict[int, float]) -> list[Spectrum]:
    rows = []
    for step, angle in angles.items():
        for layer in range(2):
            rows.append(Spectrum(id=0, run_id=1, step=step, ref="1@0", ref_run=1, ref_step=0, param=f"l{layer}",
                                 layer=layer, module="q", side="u", k=8, n=64, forced_zero=0, mean_angle_deg=angle,
                                 median_angle_deg=angle, max_angle_deg=angle, chordal=0.0, chordal_norm=0.0,
                                 sigma_rel_drift=drift[step], energy_diag=None, energy_rotation=None,
                                 energy_outside=None, gap_rel=None, method="exact", error_deg=None, seconds=0.0,
                                 angles=b"", sigma_drift=b"", settings="{}", created_at=""))  # fmt: skip
    return rows


def test_rotation_grows_while_values_hold() -> None:
    holds = rotation(_spectra({20: 4.0, 40: 9.0}, {20: 0.01, 40: 0.02}))
    assert holds.shown is True and "4.00° at step 20 → 9.00° at step 40" in holds.evidence
    assert math.sin(math.radians(9.0)) >= 2 * 0.02
    values_move = rotation(_spectra({20: 4.0, 40: 9.0}, {20: 0.05, 40: 0.12}))
    assert values_move.shown is False  # sin 9° = 0.156 < 2 × 12 %
    flat = rotation(_spectra({20: 6.0, 40: 5.5}, {20: 0.01, 40: 0.01}))
    assert flat.shown is False
    assert rotation(_spectra({20: 4.0}, {20: 0.01})).shown is None


def test_rl_heals_by_mcnemar_on_the_same_items(store: Store, tmp_path: Path) -> None:
    rl = store.create_run(kind="rl", method="grpo", name="rl", spec={})
    control = store.create_run(kind="sft", method="sft", name="control", spec={})
    rl_evals = [_eval(store, rl.id, 10, "ood", _right(110))]
    control_evals = [_eval(store, control.id, 10, "ood", _right(90))]
    with Reader(tmp_path / "healer.db") as reader:
        beyond = rl_heals((rl.id, rl_evals), (control.id, control_evals), reader.eval_items)
        assert beyond.shown is True and beyond.p_value == pytest.approx(mcnemar(20, 0))
        assert "20 items right only after RL" in beyond.evidence
        churn = [_eval(store, rl.id, 20, "ood", _right(100, offset=50))]  # 100 right, but other items
        mixed = rl_heals((rl.id, churn), (control.id, control_evals), reader.eval_items)
        assert mixed.shown is False and mixed.p_value is not None and mixed.p_value > 0.05
        assert rl_heals((rl.id, rl_evals), None, reader.eval_items).shown is None
        worse = edit_restores(control_evals[0], rl_evals[0], reader.eval_items)
        assert worse.shown is False and "0 items right only edited, 20 only before the edit" in worse.evidence


def test_a_lineage_without_control_or_edit_leaves_those_untested(store: Store, tmp_path: Path) -> None:
    _sft(store, {0: 180, 20: 170, 40: 120}, loss={20: 0.5, 40: 0.2})
    with Reader(tmp_path / "healer.db") as reader:
        verdicts = of_lineage(reader, 1, [], None, None)
    assert [(v.claim, v.shown) for v in verdicts] == [("forgetting", True), ("loss-pick", True), ("rotation", None),
                                                      ("rl-heals", None), ("edit-restores", None)]  # fmt: skip
    line = Verdict("forgetting", True, "OOD 90 → 60").line()
    assert line.startswith("shown") and line.endswith("(1 seed)")


def test_a_second_demo_in_the_same_home_is_one_line_naming_the_first(tmp_path: Path) -> None:
    import fcntl

    from tests.conftest import healer

    home = tmp_path / "demo-home"
    home.mkdir()
    with (home / "demo.lock").open("a+") as held:  # what a running demo holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        result = healer("demo", "--home", str(home))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "a demo is already running" in line and "pid 4242" in line
    assert not (home / "healer.db").exists()  # nothing queued behind the first demo's back


def test_open_tui_needs_a_terminal_and_says_so_before_anything_runs(tmp_path: Path) -> None:
    from tests.conftest import healer

    home = tmp_path / "demo-home"
    result = healer("demo", "--home", str(home), "--open-tui")  # a pipe, not a terminal
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        == "error: --open-tui needs a terminal; run `healer tui` on the store once the demo is done"
    )
    assert not (home / "healer.db").exists()
