"""Lineage (one step axis across SFT -> RL -> RL), run trees, heal start points and the heal table, startable checks.

Everything is written into a Store by hand, as training and evaluation write it; nothing trains or loads a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from healer.errors import HealerError
from healer.heal import choose_starts
from healer.refs import CheckpointRef, check_startable
from healer.stats import wilson
from healer.store import Run, Store
from healer.store.views import Reader, Segment, to_plain
from healer.store.views import segments as chain_segments
from tests.conftest import healer


def record(store: Store, run_id: int, step: int, split: str, correct: int, n: int = 100, *,
           right: Iterable[int] | None = None, settings: dict[str, Any] | None = None,
           loss: float | None = 1.0) -> None:  # fmt: skip
    """One evaluation with `n` samples (idx 0..n-1); the items in `right` (default: the first `correct`) are right."""
    right = set(range(correct) if right is None else right)
    assert len(right) == correct and right <= set(range(n))
    low, high = wilson(correct, n)
    summary = {
        "run_id": run_id, "step": step, "checkpoint_path": f"/c/{run_id}/{step}", "task": "card_sum",
        "split": split, "protocol": "single", "max_attempts": 1, "n": n, "correct": correct,
        "accuracy": correct / n, "ci_low": low, "ci_high": high, "format_error_rate": 0.0, "mean_reward": 0.0,
        "loss": loss, "outcomes": "{}", "settings": json.dumps(settings if settings is not None else {"n": n}),
        "seconds": 0.1,
    }  # fmt: skip
    samples = [
        {"idx": i, "prompt": f"p{i}", "completion": "c", "transcript": None, "outcome": "x", "reward": 0.0,
         "correct": int(i in right), "attempts": 1, "meta": "{}"}
        for i in range(n)
    ]  # fmt: skip
    store.record_eval(summary, samples)


def value_of(run_id: int, step: int, name: str) -> float:
    """The metric value logged for (run, step, name): unique, so a row shows where it came from."""
    return run_id * 10_000 + step + (0.5 if name == "reward" else 0.0)


# -- lineage --------------------------------------------------------------------------------------


def segments(store: Store, run: Run) -> list[Segment]:
    return chain_segments(Reader(store.path).chain(run.id))


def root_of(store: Store, run: Run) -> Run:
    return Reader(store.path).chain(run.id)[0]


def lineage_rows(store: Store, run: Run, name: str | None = None, evals: bool = True) -> list[dict[str, Any]]:
    return to_plain(Reader(store.path).lineage_metrics(run.id, name, evals))


def tree(store: Store, root: Run | None = None) -> list[dict[str, Any]]:
    return to_plain(Reader(store.path).tree(root.id if root else None))


def heal_rows(store: Store, sft: Run, rl_runs: list[Run] | None = None) -> list[dict[str, Any]]:
    ids = None if rl_runs is None else [r.id for r in rl_runs]
    return to_plain(Reader(store.path).heal_sweep(sft.id, ids).rows)


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Store, dict[str, Run]]:
    return build_chain(Store(tmp_path / "h.db"))


def build_chain(store: Store) -> tuple[Store, dict[str, Run]]:
    """SFT 0..300; RL from its step 100 (steps 0..40); RL from that run's step 20 (steps 0..10); plus noise."""
    sft = store.create_run(kind="sft", method="sft", name="sft", spec={}, model_path="/base")
    rl = store.create_run(kind="rl", method="grpo", name="rl", spec={}, model_path="/c/100",
                          parent_run=sft.id, parent_step=100)  # fmt: skip
    rl2 = store.create_run(kind="rl", method="rloo", name="rl2", spec={}, model_path="/c/rl/20",
                           parent_run=rl.id, parent_step=20)  # fmt: skip
    probe = store.create_run(kind="eval", method="eval", name="probe", spec={}, parent_run=sft.id, parent_step=200)
    other = store.create_run(kind="sft", method="sft", name="other", spec={}, model_path="/base")
    for run, steps in ((sft, range(0, 301, 50)), (rl, range(0, 41, 10)), (rl2, range(0, 11, 5)), (other, [0, 5])):
        for step in steps:
            store.log_metrics(run.id, step, {name: value_of(run.id, step, name) for name in ("loss", "reward")})
    # (step, ID correct, OOD correct): SFT's OOD is best at step 0 (the base model), then at 100 among checkpoints.
    for run, table in (
        (sft, [(0, 10, 50), (100, 60, 40), (200, 80, 30), (300, 90, 20)]),
        (rl, [(0, 60, 40), (20, 65, 44), (40, 70, 47)]),
        (rl2, [(0, 65, 44), (10, 66, 45)]),
    ):
        for step, id_correct, ood_correct in table:
            record(store, run.id, step, "id", id_correct)
            record(store, run.id, step, "ood", ood_correct)
    record(store, probe.id, 0, "ood", 33)
    return store, {"sft": sft, "rl": rl, "rl2": rl2, "probe": probe, "other": other}


# Where each run's steps land on the lineage axis of rl2, worked out by hand from the branch points 100 and 20.
RL2_AXIS = {("sft", 0): 0, ("sft", 50): 50, ("sft", 100): 100, ("rl", 10): 110, ("rl", 20): 120, ("rl2", 5): 125,
            ("rl2", 10): 130}  # fmt: skip
RL2_EVALS = {("sft", 0): (10, 50), ("sft", 100): (60, 40), ("rl", 20): (65, 44), ("rl2", 10): (66, 45)}


def test_segments_offset_each_run_by_the_steps_before_it(chain: tuple[Store, dict[str, Run]]) -> None:
    store, runs = chain
    got = [(s.run.name, s.offset, s.until, s.first_step) for s in segments(store, runs["rl2"])]
    assert got == [("sft", 0, 100, 0), ("rl", 100, 20, 1), ("rl2", 120, None, 1)]
    assert [(s.run.name, s.offset) for s in segments(store, runs["sft"])] == [("sft", 0)]
    assert root_of(store, runs["rl2"]).id == runs["sft"].id


def test_lineage_metrics_lie_on_one_axis_without_the_other_branch(chain: tuple[Store, dict[str, Run]]) -> None:
    store, runs = chain
    names = {r.id: key for key, r in runs.items()}
    rows = lineage_rows(store, runs["rl2"], evals=False)
    want = sorted((axis, name, key, step) for (key, step), axis in RL2_AXIS.items() for name in ("loss", "reward"))
    assert [(r["lineage_step"], r["name"], names[r["run"]], r["step"]) for r in rows] == want
    for r in rows:
        assert r["value"] == value_of(r["run"], r["step"], r["name"])
        assert r["run_name"] == names[r["run"]] and r["kind"] == runs[names[r["run"]]].kind
    # SFT after its branch point (150..300) and the RL run after its own (30, 40) belong to other branches;
    # the children's step 0 repeats their parent's branch point, so it is not a second point on the axis.
    assert not [r for r in rows if names[r["run"]] == "sft" and r["step"] > 100]
    assert not [r for r in rows if names[r["run"]] == "rl" and r["step"] > 20]
    assert not [r for r in rows if names[r["run"]] != "sft" and r["step"] == 0]
    axis = [r["lineage_step"] for r in rows]
    assert axis == sorted(axis) and len(set(axis)) == len(RL2_AXIS)


def test_lineage_includes_eval_accuracies(chain: tuple[Store, dict[str, Run]]) -> None:
    store, runs = chain
    names = {r.id: key for key, r in runs.items()}
    rows = [r for r in lineage_rows(store, runs["rl2"]) if r["name"].startswith("eval/")]
    want = sorted(
        (RL2_AXIS.get(key, key[1]), f"eval/{split}/accuracy", key) for key in RL2_EVALS for split in ("id", "ood")
    )
    assert [(r["lineage_step"], r["name"], (names[r["run"]], r["step"])) for r in rows] == want
    for r in rows:
        correct = RL2_EVALS[(names[r["run"]], r["step"])][0 if "/id/" in r["name"] else 1]
        assert (r["n"], r["correct"], r["value"]) == (100, correct, correct / 100)
        assert r["ci_low"] < r["value"] < r["ci_high"] and r["protocol"] == "single" and r["wall_time"] is None


def test_lineage_name_filter(chain: tuple[Store, dict[str, Run]]) -> None:
    store, runs = chain
    loss = lineage_rows(store, runs["rl2"], name="loss")
    assert [r["lineage_step"] for r in loss] == sorted(RL2_AXIS.values())
    assert {r["name"] for r in loss} == {"loss"}
    ood = lineage_rows(store, runs["rl2"], name="eval/ood/accuracy")
    assert [(r["lineage_step"], r["correct"]) for r in ood] == [(0, 50), (100, 40), (120, 44), (130, 45)]
    assert lineage_rows(store, runs["rl2"], name="nothing") == []
    # The middle run: SFT up to 100, then all of its own steps after 0.
    rl = lineage_rows(store, runs["rl"], name="loss")
    assert [r["lineage_step"] for r in rl] == [0, 50, 100, 110, 120, 130, 140]
    # The root alone: every step of its own, nothing of its children.
    assert [r["lineage_step"] for r in lineage_rows(store, runs["sft"], name="loss")] == list(range(0, 301, 50))


def test_tree_nests_children_under_parents(chain: tuple[Store, dict[str, Run]]) -> None:
    store, runs = chain

    def shape(node: dict[str, Any]) -> tuple[Any, ...]:
        return (node["name"], node["parent_step"], [shape(c) for c in node["children"]])

    nodes = tree(store)
    assert [shape(n) for n in nodes] == [("sft", None, [("rl", 100, [("rl2", 20, [])])]), ("other", None, [])]
    assert "probe" not in json.dumps(nodes)  # an evaluation run is no branch of the tree
    sft = nodes[0]
    assert (sft["kind"], sft["method"], sft["step"], sft["parent_run"]) == ("sft", "sft", 300, None)
    assert sft["last_eval"] == {"step": 300, "id": 0.9, "ood": 0.2}
    assert sft["peak_ood"] == {"step": 100, "ood": 0.4}  # the base model's 0.5 at step 0 is no checkpoint of the run
    rl = sft["children"][0]
    assert (rl["id"], rl["parent_run"], rl["step"]) == (runs["rl"].id, runs["sft"].id, 40)
    assert rl["last_eval"] == {"step": 40, "id": 0.7, "ood": 0.47}
    assert [shape(n) for n in tree(store, root_of(store, runs["rl2"]))] == [shape(sft)]
    assert [shape(n) for n in tree(store, runs["other"])] == [("other", None, [])]


def test_cli_metrics_lineage_and_runs_tree(healer_home: Path) -> None:
    store, runs = build_chain(Store(healer_home / "healer.db"))
    names = {r.id: key for key, r in runs.items()}
    store.close()
    result = healer("metrics", "rl2", "--lineage", "--json", check=True)
    rows = json.loads(result.stdout)
    metric_rows = [(r["lineage_step"], r["name"], names[r["run"]], r["step"]) for r in rows if r["name"] == "loss"]
    assert metric_rows == sorted((axis, "loss", key, step) for (key, step), axis in RL2_AXIS.items())
    ood = [(r["lineage_step"], r["correct"], r["n"]) for r in rows if r["name"] == "eval/ood/accuracy"]
    assert ood == [(0, 50, 100), (100, 40, 100), (120, 44, 100), (130, 45, 100)]
    assert len(rows) == 2 * len(RL2_AXIS) + 2 * len(RL2_EVALS)

    nested = json.loads(healer("runs", "tree", "--json", check=True).stdout)
    assert [n["id"] for n in nested] == [runs["sft"].id, runs["other"].id]
    rl = nested[0]["children"]
    assert [(c["id"], c["parent_step"]) for c in rl] == [(runs["rl"].id, 100)]
    assert [(c["id"], c["parent_step"]) for c in rl[0]["children"]] == [(runs["rl2"].id, 20)]

    text = healer("runs", "tree", check=True).stdout
    lines = text.splitlines()
    assert any(line.startswith(f"└─ @100 {runs['rl'].id} rl ") for line in lines), text
    assert any(line.startswith(f"   └─ @20 {runs['rl2'].id} rl2 ") for line in lines), text
    assert "probe" not in text


# -- heal: start points ---------------------------------------------------------------------------

# step: (ID correct, OOD correct, ID loss) of the SFT run; OOD is best at step 0 (the base model), then at step 20.
SFT_CURVE = {0: (10, 60, 3.0), 10: (40, 50, 2.0), 20: (60, 52, 1.5), 30: (70, 20, 1.0), 40: (80, 30, 0.8),
             50: (90, 25, 0.7)}  # fmt: skip


@pytest.fixture
def sft(tmp_path: Path) -> tuple[Store, Run, Path]:
    store = Store(tmp_path / "h.db")
    run = store.create_run(kind="sft", method="sft", name="sft", spec={}, model_path="/base")
    for step, (id_correct, ood_correct, loss) in SFT_CURVE.items():
        if step:
            (tmp_path / f"checkpoint-{step}").mkdir()
            store.add_checkpoint(run.id, step, str(tmp_path / f"checkpoint-{step}"))
        record(store, run.id, step, "id", id_correct, loss=loss)
        record(store, run.id, step, "ood", ood_correct, loss=loss + 1)
    return store, run, tmp_path


def steps_of(starts: list[Any]) -> list[int]:
    return [s.step for s in starts]


def test_default_starts_are_the_ood_peak_and_the_last_checkpoint(sft: tuple[Store, Run, Path]) -> None:
    store, run, tmp_path = sft
    starts = choose_starts(store, run)
    assert steps_of(starts) == [20, 50]
    assert set(starts[0].labels) == {"peak-ood"}
    assert set(starts[1].labels) == {"best-id", "last", "loss-pick"}
    assert starts[0].ref.path == str(tmp_path / "checkpoint-20") and starts[0].ref.run.id == run.id


@pytest.mark.parametrize(
    ("kwargs", "steps"),
    [
        ({"at": "last,peak-ood,20,last"}, [20, 50]),
        ({"at": "best-id"}, [50]),
        ({"at": " 30 , 10 "}, [10, 30]),
        ({"steps": "50,10,10,30"}, [10, 30, 50]),
        ({"around": "peak-ood", "count": 3}, [10, 20, 30]),
        ({"around": "peak-ood", "count": 4}, [10, 20, 30, 40]),
        ({"around": "peak-ood", "count": 1}, [20]),
        ({"around": "10", "count": 3}, [10, 20, 30]),  # clamped at the first checkpoint
        ({"around": "last", "count": 3}, [30, 40, 50]),  # clamped at the last
        ({"around": "40", "count": 4}, [20, 30, 40, 50]),
        ({"around": "peak-ood", "count": 9}, [10, 20, 30, 40, 50]),  # more than there are: all of them
    ],
)
def test_chosen_starts(sft: tuple[Store, Run, Path], kwargs: dict[str, Any], steps: list[int]) -> None:
    store, run, _ = sft
    assert steps_of(choose_starts(store, run, **kwargs)) == steps


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"at": "last", "around": "peak-ood"}, "give one of --at, --around and --steps"),
        ({"at": "last", "steps": "10"}, "give one of --at, --around and --steps"),
        ({"around": "last", "steps": "10"}, "give one of --at, --around and --steps"),
        ({"steps": "15"}, "no checkpoint at step 15; its checkpoints: 10, 20, 30, 40, 50"),
        ({"at": "peak-ood,15"}, "no checkpoint at step 15"),
        ({"steps": "10,ten"}, "--steps: 'ten' is not a step number"),
        ({"steps": "-10"}, "is not a step number"),
        ({"steps": " , "}, "--steps: give a comma-separated list"),
        ({"at": "best"}, "use a step number or one of"),
        ({"around": "peak-ood", "count": 0}, "--count must be at least 1"),
    ],
)
def test_bad_start_points_are_one_line(sft: tuple[Store, Run, Path], kwargs: dict[str, Any], message: str) -> None:
    store, run, _ = sft
    with pytest.raises(HealerError) as info:
        choose_starts(store, run, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("centre", ["25", "0"])
def test_around_a_step_without_a_checkpoint_is_one_line(sft: tuple[Store, Run, Path], centre: str) -> None:
    """`--around 25` (no checkpoint there) or `--around 0` (the base model) is a user error, not a traceback."""
    store, run, _ = sft
    with pytest.raises(HealerError) as info:
        choose_starts(store, run, around=centre, count=3)
    assert centre in str(info.value) and "\n" not in str(info.value)


def test_a_start_whose_checkpoint_is_gone_fails_before_anything_runs(sft: tuple[Store, Run, Path]) -> None:
    store, run, tmp_path = sft
    (tmp_path / "checkpoint-50").rmdir()
    with pytest.raises(HealerError, match=r"@50: the checkpoint directory .*checkpoint-50 is gone"):
        choose_starts(store, run)
    assert steps_of(choose_starts(store, run, steps="10,20")) == [10, 20]


# -- heal: the table --------------------------------------------------------------------------------


def rl_child(store: Store, sft: Run, step: int, name: str, kind: str = "rl") -> Run:
    return store.create_run(kind=kind, method="grpo", name=name, spec={}, model_path=f"/c/{step}",
                            parent_run=sft.id, parent_step=step)  # fmt: skip


def frac(correct: int, n: int = 100) -> Fraction:
    return Fraction(correct, n)


def test_heal_rows_recover_exact_fractions_of_the_lost_ood(sft: tuple[Store, Run, Path]) -> None:
    store, run, _ = sft
    # From step 30 (SFT OOD 20 %): the RL run measures its start at 24 % and ends at 34 %.
    a = rl_child(store, run, 30, "from-30")
    start_a, after_a = set(range(24)), set(range(10, 44))
    record(store, a.id, 0, "id", 70)
    record(store, a.id, 0, "ood", 24, right=start_a)
    record(store, a.id, 25, "ood", 28)
    record(store, a.id, 50, "id", 75)
    record(store, a.id, 50, "ood", 34, right=after_a)
    # From step 10, with no evaluation of its own at step 0: the start is the SFT run's evaluation at step 10.
    b = rl_child(store, run, 10, "from-10")
    after_b = set(range(3, 58))
    record(store, b.id, 40, "id", 45)
    record(store, b.id, 40, "ood", 55, right=after_b)
    # From the last checkpoint: 25 % -> 40 %, of 35 points lost.
    c = rl_child(store, run, 50, "from-50")
    record(store, c.id, 0, "ood", 25)
    record(store, c.id, 50, "ood", 40)
    rl_child(store, run, 20, "more-sft", kind="sft")  # not RL: not in the table
    rl_child(store, run, 20, "an-eval", kind="eval")

    rows = heal_rows(store, run)
    assert [(r["rl_name"], r["start"]["step"]) for r in rows] == [("from-10", 10), ("from-30", 30), ("from-50", 50)]
    row_b, row_a, row_c = rows
    peak = frac(60)  # the base model's OOD, at step 0

    assert row_a["start"]["ood"]["correct"] == 24 and row_a["start"]["id"]["correct"] == 70
    assert row_a["after"]["step"] == 50 and row_a["after"]["ood"]["correct"] == 34
    assert row_a["delta_ood"] == float(frac(34) - frac(24)) and row_a["delta_id"] == float(frac(75) - frac(70))
    assert row_a["ood_peak"] == {"step": 0, "ood": 0.6}
    assert row_a["lost"] == float(peak - frac(20))  # o(s) is the SFT run's own OOD at step 30
    assert row_a["recovered"] == float(Fraction(1, 4))
    assert row_a["flips_ood"] == {"gained": len(after_a - start_a), "lost": len(start_a - after_a)}
    assert row_a["flips_ood"] == {"gained": 20, "lost": 10}
    assert row_a["start"]["labels"] == [] and row_a["rl_run"] == a.id and row_a["method"] == "grpo"

    assert row_b["start"]["ood"]["correct"] == 50 and row_b["start"]["id"]["correct"] == 40
    assert row_b["lost"] == float(peak - frac(50))
    assert row_b["recovered"] == float((frac(55) - frac(50)) / (peak - frac(50))) == 0.5
    assert row_b["flips_ood"] == {"gained": len(after_b - set(range(50))), "lost": len(set(range(50)) - after_b)}
    assert row_b["delta_id"] == float(frac(45) - frac(40))

    assert row_c["recovered"] == float(Fraction(3, 7))  # 15 of 35 points, as an exact fraction
    assert row_c["delta_id"] is None  # no ID evaluation after
    assert set(row_c["start"]["labels"]) == {"best-id", "last", "loss-pick"}

    assert [r["rl_name"] for r in heal_rows(store, run, [a])] == ["from-30"]


def test_nothing_lost_means_nothing_to_recover(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.db")
    run = store.create_run(kind="sft", method="sft", name="sft", spec={}, model_path="/base")
    for step, ood in ((0, 30), (10, 50), (20, 40)):
        record(store, run.id, step, "ood", ood)
    rl = rl_child(store, run, 10, "from-peak")
    record(store, rl.id, 0, "ood", 50)
    record(store, rl.id, 30, "ood", 45)
    (row,) = heal_rows(store, run)
    assert row["ood_peak"] == {"step": 10, "ood": 0.5}
    assert row["lost"] == 0.0 and row["recovered"] is None
    assert row["delta_ood"] == float(frac(45) - frac(50)) and row["delta_id"] is None


def test_an_rl_run_without_evaluations_after_its_start(sft: tuple[Store, Run, Path]) -> None:
    store, run, _ = sft
    rl = rl_child(store, run, 30, "unevaluated")
    record(store, rl.id, 0, "ood", 20)
    (row,) = heal_rows(store, run)
    assert row["after"] is None and row["delta_ood"] is None and row["recovered"] is None
    assert row["flips_ood"] is None and row["lost"] == float(frac(60) - frac(20))


def test_evaluations_measured_differently_are_not_compared(sft: tuple[Store, Run, Path]) -> None:
    store, run, _ = sft
    # Measured with another seed than the SFT run's evaluations: no peak or loss from them.
    seeded = {"n": 100, "seed": 7}
    a = rl_child(store, run, 30, "other-seed")
    record(store, a.id, 0, "ood", 24, settings=seeded)
    record(store, a.id, 50, "ood", 34, right=range(10, 44), settings={**seeded, "batch_size": 8})  # speed only
    # After on 50 items against a start on 100: no paired flips.
    b = rl_child(store, run, 40, "other-n")
    record(store, b.id, 0, "ood", 30)
    record(store, b.id, 50, "ood", 20, n=50)
    row_a, row_b = heal_rows(store, run)
    assert row_a["ood_peak"] is None and row_a["lost"] is None and row_a["recovered"] is None
    assert row_a["flips_ood"] == {"gained": 20, "lost": 10}  # batch_size does not change which items were asked
    assert row_b["flips_ood"] is None
    assert row_b["ood_peak"] == {"step": 0, "ood": 0.6} and row_b["lost"] == float(frac(60) - frac(30))


def test_flips_need_the_same_items(sft: tuple[Store, Run, Path]) -> None:
    store, run, _ = sft
    rl = rl_child(store, run, 30, "x")
    record(store, rl.id, 0, "ood", 20)
    record(store, rl.id, 50, "ood", 30)
    store.conn.execute("DELETE FROM eval_samples WHERE eval_id = (SELECT MAX(id) FROM evals) AND idx = 99")
    store.conn.commit()
    (row,) = heal_rows(store, run)
    assert row["flips_ood"] is None and row["delta_ood"] == float(frac(30) - frac(20))


# -- startable checkpoints ------------------------------------------------------------------------


def model_dir(path: Path, *files: str, **json_files: dict[str, Any]) -> Path:
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_text("{}")
    for name, data in json_files.items():
        (path / f"{name}.json").write_text(json.dumps(data))
    return path


def test_a_checkpoint_without_a_tokenizer_cannot_start_a_run(tmp_path: Path) -> None:
    bare = model_dir(tmp_path / "bare", "config.json", "model.safetensors")
    with pytest.raises(HealerError) as info:
        check_startable(CheckpointRef(None, 0, str(bare)))
    assert str(bare) in str(info.value) and "tokenizer" in str(info.value)
    empty = model_dir(tmp_path / "empty")
    with pytest.raises(HealerError, match="holds no model"):
        check_startable(CheckpointRef(None, 0, str(empty)))


def test_startable_checkpoints(tmp_path: Path) -> None:
    full = model_dir(tmp_path / "full", "config.json", "tokenizer_config.json")
    check_startable(CheckpointRef(None, 0, str(full)))
    base = model_dir(tmp_path / "base", "config.json", "tokenizer_config.json")
    adapter = model_dir(tmp_path / "adapter", adapter_config={"base_model_name_or_path": str(base)})
    check_startable(CheckpointRef(None, 0, str(adapter)))
    hub = model_dir(tmp_path / "hub-adapter", adapter_config={"base_model_name_or_path": "Qwen/Qwen2.5-0.5B"})
    check_startable(CheckpointRef(None, 0, str(hub)))
    check_startable(CheckpointRef(None, 0, "Qwen/Qwen2.5-0.5B"))  # step 0 of a run that started from a hub id


def test_an_adapter_whose_base_has_no_tokenizer_cannot_start_a_run(tmp_path: Path) -> None:
    base = model_dir(tmp_path / "base", "config.json")
    adapter = model_dir(tmp_path / "adapter", adapter_config={"base_model_name_or_path": str(base)})
    with pytest.raises(HealerError, match="tokenizer") as info:
        check_startable(CheckpointRef(None, 0, str(adapter)))
    assert str(adapter) in str(info.value)


def test_cli_run_from_a_checkpoint_without_a_tokenizer(tmp_path: Path) -> None:
    bare = model_dir(tmp_path / "no-tokenizer", "config.json")
    result = healer("run", "presets/tiny-grpo.toml", "--from", str(bare))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "tokenizer" in lines[0]
    assert str(bare.resolve()) in lines[0]
    assert json.loads(healer("runs", "ls", "--json", check=True).stdout) == []
