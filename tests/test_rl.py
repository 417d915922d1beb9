"""Real RL runs: a tiny SFT run, then GRPO (and RLOO with LoRA) from its checkpoints, through `healer run --from`
and `healer heal`, each in its own subprocess with TRL's trainers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from healer.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SFT = ["--set", "train.max_steps=30", "--set", "train.save_steps=10", "--set", "train.logging_steps=5",
       "--set", "task.n_train=600", "--set", "train.batch_size=16", "--set", "task.eval_n=40"]  # fmt: skip
RL = ["--set", "train.max_steps=10", "--set", "train.save_steps=5", "--set", "train.logging_steps=1",
      "--set", "task.n_train=200", "--set", "train.batch_size=16", "--set", "rl.num_generations=4",
      "--set", "rl.max_completion_length=12", "--set", "task.eval_n=40", "--set", "eval.batch_size=40"]  # fmt: skip


def healer_in(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real CLI with $HEALER_HOME at `home` (shared by the tests of this module)."""
    env = {**os.environ, "HEALER_HOME": str(home)}
    env.pop("HEALER_DB", None)
    result = subprocess.run([sys.executable, "-m", "healer", *args], capture_output=True, text=True, timeout=600,
                            cwd=REPO, env=env)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"healer {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def lineage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One SFT run; GRPO from its @last; a heal sweep from steps 10 and 20; RLOO with LoRA and KL from @last."""
    home = tmp_path_factory.mktemp("rl") / "home"
    sft = json.loads(healer_in(home, "run", "presets/tiny-sft.toml", *SFT, "-q", "--json").stdout)
    grpo = json.loads(healer_in(home, "run", "presets/tiny-grpo.toml", "--from", f"{sft['id']}@last", *RL, "-q",
                                "--json").stdout)  # fmt: skip
    heal = healer_in(home, "heal", str(sft["id"]), "--preset", "presets/tiny-grpo.toml", "--steps", "10,20", *RL,
                     "--json")  # fmt: skip
    rloo = json.loads(healer_in(home, "run", "presets/tiny-grpo.toml", "--from", f"{sft['id']}@last", *RL,
                                "--set", "method=rloo", "--set", "lora.enabled=true", "--set", "lora.r=4",
                                "--set", "train.lr=1e-3", "--set", "rl.beta=0.01", "-q", "--json").stdout)  # fmt: skip
    return {"home": home, "sft": sft, "grpo": grpo, "heal": json.loads(heal.stdout), "heal_stderr": heal.stderr,
            "rloo": rloo}  # fmt: skip


def test_grpo_from_last_trains_records_rewards_and_lineage(lineage: dict[str, Any]) -> None:
    sft, grpo, home = lineage["sft"], lineage["grpo"], lineage["home"]
    assert (grpo["status"], grpo["kind"], grpo["method"]) == ("done", "rl", "grpo")
    assert (grpo["parent_run"], grpo["parent_step"]) == (sft["id"], 30)
    start = sft["checkpoints"][-1]["path"]
    assert grpo["model_path"] == start
    assert [c["step"] for c in grpo["checkpoints"]] == [5, 10]

    before = load_file(Path(start) / "model.safetensors")
    after = load_file(Path(grpo["checkpoints"][-1]["path"]) / "model.safetensors")
    moved = [name for name in before if not (before[name] == after[name]).all()]
    assert len(moved) > len(before) // 2, f"GRPO moved only {moved}"

    with Store(home / "healer.db") as store:
        names = {m.name for m in store.metrics(grpo["id"])}
        rewards = store.metrics(grpo["id"], "reward")
        shares = {name: store.metrics(grpo["id"], f"outcome/{name}") for name in
                  ("correct", "wrong_value", "wrong_numbers", "partial", "illegal")}  # fmt: skip
    assert {"reward", "reward_std", "completions/mean_length", "loss", "format_error_rate"} <= names
    assert [m.step for m in rewards] == list(range(1, 11)), "one reward row per step at logging_steps=1"
    for i, m in enumerate(rewards):  # the shares of the outcomes add up to 1 on every step, and pay the reward
        total = sum(shares[name][i].value for name in shares)
        assert abs(total - 1) < 1e-6
        paid = (
            1.0 * shares["correct"][i].value
            + 0.3 * shares["wrong_value"][i].value
            + 0.1 * (shares["wrong_numbers"][i].value + shares["partial"][i].value)
        )
        assert abs(paid - m.value) < 1e-4, "reward = the table's pay for the outcome shares (tiny-grpo's table)"

    evaluated = {(e["step"], e["split"]) for e in grpo["evals"]}
    assert evaluated == {(s, split) for s in (0, 5, 10) for split in ("id", "ood")}
    start_ood = next(e for e in grpo["evals"] if e["step"] == 0 and e["split"] == "ood")
    sft_ood = next(e for e in sft["evals"] if e["step"] == 30 and e["split"] == "ood")
    assert start_ood["correct"] == sft_ood["correct"], "step 0 of the RL run is the SFT checkpoint it started from"
    assert [a["id"] for a in grpo["lineage"]] == [sft["id"]]


def test_heal_sweep_runs_rl_from_each_start_and_reports_recovery(lineage: dict[str, Any]) -> None:
    rows, sft = lineage["heal"], lineage["sft"]
    assert [r["start"]["step"] for r in rows] == [10, 20]
    assert all(r["status"] == "done" and r["method"] == "grpo" for r in rows)
    sft_ood = {e["step"]: e for e in sft["evals"] if e["split"] == "ood"}
    peak = max(sft_ood.values(), key=lambda e: (e["correct"], -e["step"]))
    for r in rows:
        assert r["start"]["ood"]["correct"] == sft_ood[r["start"]["step"]]["correct"]
        assert r["after"]["step"] == 10 and set(r["after"]) >= {"id", "ood"}
        delta = (r["after"]["ood"]["correct"] - r["start"]["ood"]["correct"]) / 40
        assert r["delta_ood"] == pytest.approx(delta)
        lost = (peak["correct"] - r["start"]["ood"]["correct"]) / 40
        assert r["lost"] == pytest.approx(lost) and r["ood_peak"]["step"] == peak["step"]
        assert r["recovered"] == (pytest.approx(delta / lost) if lost > 0 else None)
        flips = r["flips_ood"]
        assert flips["gained"] - flips["lost"] == r["after"]["ood"]["correct"] - r["start"]["ood"]["correct"]
    assert "heal 1/2" in lineage["heal_stderr"] and "heal 2/2" in lineage["heal_stderr"]

    table = healer_in(lineage["home"], "heal", str(sft["id"]), "--report").stdout
    assert "recovered" in table and f"{sft['id']}@10" in table and f"{sft['id']}@20" in table


def test_runs_tree_and_lineage_metrics(lineage: dict[str, Any]) -> None:
    home, sft = lineage["home"], lineage["sft"]
    (tree,) = json.loads(healer_in(home, "runs", "tree", "--json").stdout)
    assert tree["id"] == sft["id"]
    assert sorted((c["parent_step"], c["method"]) for c in tree["children"]) == [
        (10, "grpo"), (20, "grpo"), (30, "grpo"), (30, "rloo")]  # fmt: skip
    text = healer_in(home, "runs", "tree", str(lineage["grpo"]["id"])).stdout
    lines = text.splitlines()
    assert any(line.startswith(f"{sft['id']} tiny-sft ") for line in lines), text
    assert any(line.startswith("├─ @10 ") for line in lines) and any(line.startswith("└─ @30 ") for line in lines)

    grpo = lineage["heal"][0]["rl_run"]  # started from step 10
    rows = json.loads(healer_in(home, "metrics", str(grpo), "--lineage", "--json").stdout)
    losses = [(r["run"], r["step"], r["lineage_step"]) for r in rows if r["name"] == "loss"]
    assert all(step <= 10 for run, step, _ in losses if run == sft["id"]), "SFT points after the branch are cut"
    assert [ls for run, s, ls in losses if run == grpo] == [10 + s for run, s, _ in losses if run == grpo]
    accuracy = [(r["run"], r["lineage_step"]) for r in rows if r["name"] == "eval/ood/accuracy"]
    assert accuracy == [(sft["id"], 0), (sft["id"], 10), (grpo, 15), (grpo, 20)]


def test_rloo_with_lora_trains_adapters(lineage: dict[str, Any]) -> None:
    rloo = lineage["rloo"]
    assert (rloo["status"], rloo["method"]) == ("done", "rloo")
    first, last = (Path(c["path"]) for c in (rloo["checkpoints"][0], rloo["checkpoints"][-1]))
    assert (last / "adapter_config.json").exists()
    a, b = load_file(first / "adapter_model.safetensors"), load_file(last / "adapter_model.safetensors")
    assert any(not (a[k] == b[k]).all() for k in a if "lora_B" in k), "the adapters moved between checkpoints"
    assert {e["step"] for e in rloo["evals"]} == {0, 5, 10}
    with Store(lineage["home"] / "healer.db") as store:
        kl = store.metrics(rloo["id"], "kl")
    assert len(kl) == 10, "rl.beta > 0: the KL to the start model is logged on every step"
    assert abs(kl[0].value) < 1e-6 and any(abs(m.value) > 1e-6 for m in kl[1:]), "0 at the start, then it moves"
