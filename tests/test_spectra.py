"""`healer spectra` and `healer edit` on real checkpoints of the tiny model, against independent numpy/scipy SVDs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from safetensors.numpy import load_file

from healer import paths
from healer.errors import HealerError
from healer.refs import CheckpointRef, resolve_checkpoint
from healer.retention import protected
from healer.spectra import angle_bucket, layer_by_module, resolve_reference
from healer.spectral.linalg import FALLBACK_DEG
from healer.store import Status, Store
from tests.conftest import healer
from tests.test_lineage_heal import record

K = 8


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model and a fine-tuned-looking copy: each projection W + 0.05 ‖W‖ · (a rank-4 update) + noise."""
    import torch
    from safetensors.torch import load_file as load_torch
    from safetensors.torch import save_file

    from healer.train.tiny import save_tiny

    root = tmp_path_factory.mktemp("spectra")
    base = save_tiny(root / "base")
    tuned = root / "tuned"
    shutil.copytree(base, tuned)
    tensors = load_torch(str(tuned / "model.safetensors"))
    rng = np.random.default_rng(0)
    for key, w in tensors.items():
        if key.endswith("_proj.weight"):
            m, n = w.shape
            low = rng.standard_normal((m, 4)) @ rng.standard_normal((4, n)) / math.sqrt(m * n)
            update = 0.05 * float(w.norm()) * low / np.linalg.norm(low) * 4 + 0.002 * rng.standard_normal((m, n))
            tensors[key] = (w.double() + torch.from_numpy(update)).float()
    save_file(tensors, str(tuned / "model.safetensors"), metadata={"format": "pt"})
    return base, tuned


def independent(w_b: np.ndarray, w_t: np.ndarray, k: int) -> dict[str, object]:
    """The spectra numbers of one matrix from numpy's full SVD and scipy's subspace angles."""
    u_b, s_b, vh_b = np.linalg.svd(w_b.astype(np.float64), full_matrices=False)
    u_t, s_t, vh_t = np.linalg.svd(w_t.astype(np.float64), full_matrices=False)
    k = min(k, *w_b.shape)
    delta = w_t.astype(np.float64) - w_b
    c = u_b[:, :k].T @ delta @ vh_b[:k].T
    total = float((delta**2).sum())
    return {
        "u": np.sort(np.degrees(scipy.linalg.subspace_angles(u_b[:, :k], u_t[:, :k]))),
        "v": np.sort(np.degrees(scipy.linalg.subspace_angles(vh_b[:k].T, vh_t[:k].T))),
        "drift": (s_t[:k] - s_b[:k]) / s_b[:k],
        "rotation": (float((c**2).sum()) - float((np.diag(c) ** 2).sum())) / total,
        "diag": float((np.diag(c) ** 2).sum()) / total,
    }


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_spectra_json_full_matches_an_independent_svd(pair: tuple[Path, Path], method: str) -> None:
    base, tuned = pair
    result = healer("spectra", str(tuned), "--ref", str(base), "--k", str(K), "--method", method, "--json", "--full",
                    check=True)  # fmt: skip
    rows = json.loads(result.stdout)
    w_b, w_t = load_file(str(base / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    params = sorted({r["param"] for r in rows})
    assert len(params) == 28 and len(rows) == 56, "4 layers x 7 projections x 2 sides"
    worst = 0.0
    for r in rows:
        truth = independent(w_b[r["param"]], w_t[r["param"]], K)
        angles = np.array(r["angles_deg"])
        assert r["k"] == K and len(angles) == K and np.all(np.diff(angles) >= -1e-9)
        worst = max(worst, float(np.abs(angles - truth[r["side"]]).max()))
        assert math.isclose(r["mean_angle_deg"], float(np.mean(angles)), abs_tol=1e-9)
        assert math.isclose(
            r["max_angle_deg"], float(truth[r["side"]].max()), abs_tol=0.5 if method == "fast" else 1e-4
        )
        assert np.allclose(r["sigma_drift"], truth["drift"], atol=1e-5)
        assert math.isclose(r["sigma_rel_drift"], float(np.abs(truth["drift"]).mean()), abs_tol=1e-5)
        assert math.isclose(r["energy_rotation"], truth["rotation"], abs_tol=1e-6)
        assert math.isclose(r["energy_diag"], truth["diag"], abs_tol=1e-6)
        n = w_t[r["param"]].shape[0 if r["side"] == "u" else 1]
        assert r["n"] == n and r["forced_zero"] == max(0, 2 * K - n)
        assert math.isclose(r["chordal"], math.sqrt(sum(math.sin(math.radians(a)) ** 2 for a in angles)), abs_tol=1e-9)
    assert worst < (0.5 if method == "fast" else 1e-4), worst
    assert worst > 0 or method == "exact"
    assert max(r["mean_angle_deg"] for r in rows) > 0.5, "the update rotated something"


def test_spectra_are_stored_and_the_reference_is_decomposed_once(pair: tuple[Path, Path], healer_home: Path) -> None:
    base, tuned = pair
    first = json.loads(healer("spectra", str(tuned), "--ref", str(base), "--k", "4", "--json", check=True).stdout)
    cached = list((healer_home / "cache" / "spectra").rglob("*.safetensors"))
    assert len(cached) == 28, "one entry per reference matrix"
    again = json.loads(healer("spectra", str(tuned), "--ref", str(base), "--k", "4", "--json", "--full",
                              check=True).stdout)  # fmt: skip
    assert [round(r["mean_angle_deg"], 5) for r in first] == [round(r["mean_angle_deg"], 5) for r in again]
    assert len(list((healer_home / "cache" / "spectra").rglob("*.safetensors"))) == 28
    with Store(paths.db_path()) as store:
        holder = next(r for r in store.runs() if r.model_path == str(tuned))
        rows = store.spectra(holder.id)
    assert len(rows) == 56 and {r.ref for r in rows} == {str(base)}, "a rerun replaced the rows, it did not add"
    printed = {(r["param"], r["side"]): r for r in again}
    assert all(s.angles_deg == pytest.approx(printed[s.param, s.side]["angles_deg"], abs=1e-4) for s in rows)
    table = healer("spectra", str(tuned), "--ref", str(base), "--k", "64", "--modules", "k,v", check=True).stdout
    assert "forced 0" in table and "angles forced to 0 by dimension" in table, "k/v: 64 of 64 rows"


def test_spectra_bad_input_is_one_line(pair: tuple[Path, Path]) -> None:
    base, tuned = pair
    layers = ("edit", str(tuned), "--ref", str(base), "--restore", "vectors", "--top", "1", "--layers", "5-2", "-o",
              "/tmp/x")  # fmt: skip
    for args, needle in [
        (("spectra", str(tuned), "--ref", "/nowhere"), "no checkpoint directory at /nowhere"),
        (("spectra", str(tuned), "--ref", str(base), "--modules", "q,attn"), "modules attn: choose from"),
        (("spectra", str(tuned), "--ref", "start"), "needs a run's checkpoint"),
        (("spectra", str(tuned), "--ref", str(base), "--method", "quick"), "--method 'quick'"),
        (("spectra", "show", "7"), "no run with id 7"),
        (("edit", str(tuned), "--ref", str(base), "--restore", "values", "--top", "2", "-o", "/tmp/x"), "--restore"),
        (("edit", str(tuned), "--ref", str(base), "--restore", "vectors", "-o", "/tmp/x"), "which ranks"),
        (layers, "runs backwards"),
        ((*layers[:-4], "-o", str(base / "config.json")), "config.json is a file; give a new directory"),
        (("presets", "show", "tiny-sft", "--set", "spectra.ref='3@peak'"), "spectra.ref = '3@peak'"),
    ]:
        result = healer(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], result.stderr


def test_an_edit_of_layers_or_modules_the_model_lacks_is_refused_before_anything_is_written(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    base, tuned = pair
    out = tmp_path / "edited"
    before = healer("runs", "ls", "--all", "--json", check=True).stdout
    for option, value, needle in [
        ("--layers", "0-99", "--layers reaches layer 99: the model has 4 layers (0-3)"),
        ("--layers", "", "--layers '' selects no layer: the model has 4 layers (0-3)"),
        ("--modules", "nope", "modules nope: choose from q,k,v,o,gate,up,down"),
    ]:
        result = healer("edit", str(tuned), "--ref", str(base), "--restore", "vectors", "--top", "1", option, value,
                        "-o", str(out), "--no-evaluate")  # fmt: skip
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], result.stderr
    assert not out.exists()
    assert healer("runs", "ls", "--all", "--json", check=True).stdout == before, "no edit run was added"


def test_a_full_rank_swap_of_vectors_and_values_is_a_reset_and_partial_swaps_say_so(
    pair: tuple[Path, Path], tmp_path: Path, healer_home: Path
) -> None:
    base, tuned = pair
    out = tmp_path / "reset"
    result = healer("edit", str(tuned), "--ref", str(base), "--restore", "vectors+values", "--top-frac", "1",
                    "--modules", "q,down", "--layers", "0-1", "-o", str(out), "--no-evaluate", check=True)  # fmt: skip
    assert "the swap covers the whole rank" in result.stderr and "full reset" in result.stderr
    w_b, w_t, w_e = (load_file(str(d / "model.safetensors")) for d in (base, tuned, out))
    for key in w_e:
        reset = any(f"layers.{i}.{m}" in key for i in (0, 1) for m in ("self_attn.q_proj", "mlp.down_proj"))
        assert np.allclose(w_e[key], w_b[key] if reset else w_t[key], atol=1e-5), key
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()

    partial = tmp_path / "top2"
    result = healer("edit", str(tuned), "--ref", str(base), "--restore", "vectors", "--top", "2", "--bottom", "1",
                    "-o", str(partial), "--no-evaluate", check=True)  # fmt: skip
    assert "not an orthonormal basis" in result.stderr
    key = "model.layers.2.mlp.up_proj.weight"
    u_t, s_t, vh_t = np.linalg.svd(w_t[key].astype(np.float64), full_matrices=False)
    u_b, _, vh_b = np.linalg.svd(w_b[key].astype(np.float64), full_matrices=False)
    swap = [0, 1, len(s_t) - 1]
    u_t[:, swap], vh_t[swap] = u_b[:, swap], vh_b[swap]
    expected = (u_t * s_t) @ vh_t  # numpy's signs differ from torch's, but each pair (u_i, v_i) flips together
    assert np.allclose(load_file(str(partial / "model.safetensors"))[key], expected, atol=1e-5)

    again = healer("edit", str(tuned), "--ref", str(base), "--restore", "vectors", "--top", "1", "-o", str(partial))
    assert again.returncode == 2 and "is not empty" in again.stderr
    with Store(paths.db_path()) as store:
        edits = [r for r in store.runs() if r.kind == "edit"]
    assert len(edits) == 2 and all(r.status == Status.DONE for r in edits)
    params = json.loads(edits[1].params)
    assert (params["restore"], params["top"], params["bottom"], params["ref"]) == ("vectors", 2, 1, str(base))


def test_references_by_name_follow_the_lineage(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.db")
    root = store.create_run(kind="sft", method="sft", name="pre", spec={}, model_path="/hub/base")
    sft = store.create_run(kind="sft", method="sft", name="sft", spec={}, model_path="/c/pre/100", parent_run=root.id,
                           parent_step=100)  # fmt: skip
    for step in (10, 20):
        directory = tmp_path / f"c{step}"
        directory.mkdir()
        (directory / "config.json").write_text("{}")
        store.add_checkpoint(sft.id, step, str(directory))
        record(store, sft.id, step, "id", 50)
        record(store, sft.id, step, "ood", 30 if step == 10 else 20)
    rl = store.create_run(kind="rl", method="grpo", name="rl", spec={}, model_path=str(tmp_path / "c20"),
                          parent_run=sft.id, parent_step=20)  # fmt: skip
    target = CheckpointRef(store.run(rl.id), 5, "/c/rl/5")
    assert (resolve_reference(store, target, "start").path, resolve_reference(store, target, "start").step) == (
        str(tmp_path / "c20"), 0)  # fmt: skip
    assert resolve_reference(store, target, "base").run.id == root.id
    assert resolve_reference(store, target, "base").path == "/hub/base"
    peak = resolve_reference(store, target, "parent@peak-ood")
    assert (peak.run.id, peak.step) == (sft.id, 10)
    with pytest.raises(HealerError, match="did not start from another run"):
        resolve_reference(store, CheckpointRef(store.run(root.id), 0, "/hub/base"), "parent@last")
    # a checkpoint used as a spectra reference is never pruned
    store.record_spectra(rl.id, 5, f"{sft.id}@20", sft.id, 20, {}, [])
    assert store.spectra_reference_steps(sft.id) == set()  # no rows, no reference
    assert resolve_checkpoint(store, f"{sft.id}@20").step == 20


def test_heatmap_helpers() -> None:
    assert [angle_bucket(a, 12.0) for a in (0.0, 1.0, 2.0, 6.0, 11.9, 12.0, 30.0)] == [0, 0, 1, 3, 5, 5, 5]
    assert angle_bucket(3.0, 0.0) == 0
    assert layer_by_module([], 5, "u").rows == []


def test_retention_keeps_a_spectra_reference(healer_home: Path) -> None:
    from healer.presets import load_preset
    from healer.runner import create_run

    store = Store(paths.db_path())
    run = create_run(store, load_preset("tiny-sft", ["train.keep='last:1'", "eval.every_checkpoint=false"]))
    for step in (10, 20, 30):
        directory = healer_home / f"c{step}"
        directory.mkdir(parents=True)
        store.add_checkpoint(run.id, step, str(directory))
    row = {"param": "p", "layer": 0, "module": "q", "side": "u", "k": 1, "n": 2, "forced_zero": 0,
           "mean_angle_deg": 1.0, "median_angle_deg": 1.0, "max_angle_deg": 1.0, "chordal": 0.0, "chordal_norm": 0.0,
           "sigma_rel_drift": 0.0, "energy_diag": None, "energy_rotation": None, "energy_outside": None,
           "gap_rel": None, "method": "exact", "error_deg": None, "seconds": 0.0, "angles_deg": [1.0],
           "sigma_drift": [0.0]}  # fmt: skip
    store.record_spectra(run.id, 30, f"{run.id}@10", run.id, 10, {"k": 1}, [row])
    assert protected(store, store.run(run.id))[10] == "a spectra reference"
    healer("runs", "prune", str(run.id), check=True)
    assert [c.step for c in store.checkpoints(run.id)] == [10, 30]
    assert store.spectra(run.id)[0].angles_deg == [1.0]


@pytest.mark.slow
def test_every_checkpoint_gets_spectra_fast_agrees_with_exact_and_an_edit_is_evaluated(
    healer_home: Path, tmp_path: Path
) -> None:
    tiny = ["--set", "train.max_steps=30", "--set", "train.save_steps=10", "--set", "task.eval_n=20",
            "--set", "task.n_train=600", "--set", "spectra.k=8", "-q"]  # fmt: skip
    healer("run", "tiny-sft", *tiny, check=True)
    with Store(paths.db_path()) as store:
        rows = store.spectra(1)
    assert sorted({r.step for r in rows}) == [10, 20, 30] and len(rows) == 3 * 56, "every checkpoint, inline"
    assert {r.ref for r in rows} == {"1@0"} and all(r.k == 8 for r in rows)
    assert [r.mean_angle_deg for r in rows if r.param.endswith("0.self_attn.q_proj.weight") and r.side == "u"] == \
        sorted(r.mean_angle_deg for r in rows if r.param.endswith("0.self_attn.q_proj.weight") and r.side == "u"), \
        "the rotation grows as SFT goes on"  # fmt: skip
    for step in (10, 30):
        command = ("spectra", f"1@{step}", "--ref", "start", "--k", "8", "--json", "--full", "--method")
        fast, exact = (json.loads(healer(*command, method, check=True).stdout) for method in ("fast", "exact"))
        error = max(abs(a - b) for f, e in zip(fast, exact, strict=True)
                    for a, b in zip(f["angles_deg"], e["angles_deg"], strict=True))  # fmt: skip
        assert error <= 0.5, (step, error)
        for f, e in zip(fast, exact, strict=True):
            off = max(abs(a - b) for a, b in zip(f["angles_deg"], e["angles_deg"], strict=True))
            if f["method"] == "fast":
                assert off <= f["error_deg"] <= FALLBACK_DEG, "its own bound holds"
            else:
                assert f["method"] == "exact (fast fell back)" and f["error_deg"] > FALLBACK_DEG and off < 1e-6
    shown = healer("spectra", "show", "1", check=True).stdout
    assert "per layer × module" in shown and "per layer × checkpoint step" in shown and "σ drift %" in shown

    out = tmp_path / "edited"
    healer("edit", "1@30", "--ref", "1@10", "--restore", "vectors", "--top", "4", "-o", str(out), check=True)
    detail = json.loads(healer("runs", "show", "2", "--json", check=True).stdout)
    assert (detail["kind"], detail["parent_run"], detail["parent_step"], detail["model_path"]) == (
        "edit", 1, 30, str(out))  # fmt: skip
    assert {(e["step"], e["split"]) for e in detail["evals"]} == {(0, "id"), (0, "ood")}
    assert detail["params"]["ref"] == "1@10" and detail["params"]["top"] == 4
    assert "└─ @30 2 edit-1@30 " in healer("runs", "tree", check=True).stdout


def test_reference_keys_are_checksummed_once_per_file_version(
    pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from healer.spectral import cache as cache_module
    from healer.spectral.analyze import Settings, analyse

    base, tuned = pair
    reference = tmp_path / "reference"
    shutil.copytree(base, reference)
    checksummed: list[str] = []
    real = cache_module.content_key
    monkeypatch.setattr(cache_module, "content_key", lambda t: checksummed.append("x") or real(t))
    cache = cache_module.ReferenceCache(tmp_path / "cache")
    settings = Settings(k=4, device="cpu")
    first = list(analyse(str(tuned), str(reference), settings, cache))
    assert len(checksummed) == 28, "every reference matrix once"
    again = list(analyse(str(tuned), str(reference), settings, cache))
    assert len(checksummed) == 28, "the same file again: no checksum"
    for a, b in zip(again, first, strict=True):  # the first used the float64 decomposition, the cache keeps float32
        assert a["angles_deg"] == pytest.approx(b["angles_deg"], abs=1e-5)
    weights = reference / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # rewritten, as far as we know
    list(analyse(str(tuned), str(reference), settings, cache))
    assert len(checksummed) == 56, "a file with a new modification time is checksummed again"


def test_matrices_computed_two_at_a_time_come_back_in_order_and_errors_surface() -> None:
    import time

    from healer.spectral.analyze import in_order

    def slow_square(x: int) -> int:
        time.sleep(0.02 if x % 3 == 0 else 0.0)  # the early ones finish last
        if x == 7:
            raise HealerError("matrix 7 is damaged")
        return x * x

    assert list(in_order(slow_square, list(range(7)), workers=2)) == [x * x for x in range(7)]
    assert list(in_order(slow_square, list(range(5)), workers=1)) == [x * x for x in range(5)]
    out = []
    with pytest.raises(HealerError, match="matrix 7"):
        for value in in_order(slow_square, list(range(10)), workers=2):
            out.append(value)
    assert out == [x * x for x in range(7)], "every result before the bad one, in order"
