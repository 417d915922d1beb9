"""`healer export figure`'s figures: each kind in each format is a real, one-page, non-blank file of a paper's column
width, written atomically, with provenance naming the checkpoints it drew; nothing to draw is one clear error. The
store is the TUI tests' seeded one (OOD peaking at step 20, GRPO from steps 20 and 60, spectra at every checkpoint)."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from healer import __version__, figures
from healer.errors import HealerError
from healer.spectra import layer_by_step
from healer.store import Store
from healer.store.views import Reader
from tests.test_imports import loaded_after
from tests.test_tui import MODULES, _eval, seed

Draw = Callable[[Reader, dict[str, int], Path, str], dict[str, Any]]
KINDS: dict[str, Draw] = {
    "accuracy": lambda r, runs, p, w: figures.accuracy(r, [runs["grpo-from-20"], runs["grpo-from-60"]], p, w),
    "rotation": lambda r, runs, p, w: figures.rotation(r, runs["sft"], None, p, w),
    "drift": lambda r, runs, p, w: figures.drift(r, runs["sft"], p, w),
    "sweep": lambda r, runs, p, w: figures.sweep(r, runs["sft"], p, w),
}
MAGIC = {".pdf": b"%PDF", ".png": b"\x89PNG"}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Reader, dict[str, int]]:
    """One seeded store for the module (read only here; seeding takes most of a second)."""
    path = tmp_path_factory.mktemp("store") / "healer.db"
    runs = seed(path)
    return Reader(path), runs


def _png_width(data: bytes) -> int:
    return struct.unpack(">I", data[16:20])[0]


def _assert_not_blank(path: Path) -> None:
    from matplotlib.image import imread

    pixels = imread(path)
    assert pixels.std() > 0.05
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::7].tolist()}) > 20  # lines, bands, text


@pytest.mark.parametrize("suffix", [".pdf", ".png", ".svg"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_saves_each_format(seeded: tuple[Reader, dict[str, int]], tmp_path: Path, kind: str,
                                     suffix: str) -> None:  # fmt: skip
    reader, runs = seeded
    (folder := tmp_path / "out").mkdir()  # tmp_path also holds the test's config folder (matplotlib's too)
    path = folder / f"{kind}{suffix}"
    provenance = KINDS[kind](reader, runs, path, "single")
    data = path.read_bytes()
    if suffix == ".svg":
        assert "<svg" in data[:400].decode()
    else:
        assert data.startswith(MAGIC[suffix])
    if suffix == ".pdf":
        assert len(re.findall(rb"/Type\s*/Page(?!s)", data)) == 1
    if suffix == ".png":
        assert abs(_png_width(data) - 3.3 * 300) <= 2
        _assert_not_blank(path)
    assert [p.name for p in folder.iterdir()] == [path.name]  # the temporary file was renamed, none left
    assert provenance["figure"] == kind
    assert (provenance["healer"], provenance["database"], provenance["width_in"]) == (__version__, str(reader.path),
                                                                                      3.3)  # fmt: skip
    assert provenance["checkpoints"]


@pytest.mark.parametrize("kind", ["accuracy", "rotation"])  # an outside legend; two panels and a colour bar
def test_double_width_is_seven_inches(seeded: tuple[Reader, dict[str, int]], tmp_path: Path, kind: str) -> None:
    reader, runs = seeded
    provenance = KINDS[kind](reader, runs, tmp_path / "figure.png", "double")
    assert abs(_png_width((tmp_path / "figure.png").read_bytes()) - 7 * 300) <= 2
    assert provenance["width_in"] == 7.0


def test_accuracy_names_the_checkpoints_it_drew(seeded: tuple[Reader, dict[str, int]], tmp_path: Path) -> None:
    reader, runs = seeded
    sft = figures.accuracy(reader, [runs["sft"]], tmp_path / "sft.svg")
    assert sft["runs"] == [runs["sft"]]
    assert {(c["run"], c["step"]) for c in sft["checkpoints"]} == {(runs["sft"], s) for s in (0, 20, 40, 60)}
    assert {(c["split"], c["protocol"], c["n"]) for c in sft["checkpoints"]} == {("id", "single", 100),
                                                                                ("ood", "single", 100)}  # fmt: skip
    rl = figures.accuracy(reader, [runs["grpo-from-20"]], tmp_path / "rl.svg")
    assert rl["runs"] == [runs["grpo-from-20"]]  # its lineage: the SFT run up to step 20, then its own step 10
    assert {(c["run"], c["step"]) for c in rl["checkpoints"]} == {(runs["sft"], 0), (runs["sft"], 20),
                                                                   (runs["grpo-from-20"], 10)}  # fmt: skip


def test_spectra_figures_name_their_steps_and_reference(seeded: tuple[Reader, dict[str, int]], tmp_path: Path) -> None:
    reader, runs = seeded
    latest = figures.rotation(reader, runs["sft"], None, tmp_path / "rotation.svg")
    assert latest["step"] == 60
    assert [c["step"] for c in latest["checkpoints"]] == [0, 20, 40, 60]
    assert {(c["ref"], c["side"], c["matrices"]) for c in latest["checkpoints"]} == {("1@0", "u", 16)}
    assert figures.rotation(reader, runs["sft"], 20, tmp_path / "rotation.svg")["step"] == 20
    with pytest.raises(HealerError, match=rf"run {runs['sft']} has no spectra at step 30; .*0, 20, 40, 60"):
        figures.rotation(reader, runs["sft"], 30, tmp_path / "rotation.svg")
    drift = figures.drift(reader, runs["sft"], tmp_path / "drift.svg")
    assert (drift["runs"], [c["step"] for c in drift["checkpoints"]]) == ([runs["sft"]], [0, 20, 40, 60])


def test_sweep_names_each_rl_runs_start_and_end(seeded: tuple[Reader, dict[str, int]], tmp_path: Path) -> None:
    reader, runs = seeded
    sweep = figures.sweep(reader, runs["sft"], tmp_path / "sweep.svg")
    rl = (runs["grpo-from-20"], runs["grpo-from-60"])
    assert sweep["runs"] == [runs["sft"], *rl]
    # the starts were evaluated in the RL runs themselves (their step 0); the peak is the SFT run's step 20
    assert [(c["run"], c["step"]) for c in sweep["checkpoints"]] == [(runs["sft"], 20), (rl[0], 0), (rl[0], 10),
                                                                      (rl[1], 0), (rl[1], 10)]  # fmt: skip
    assert {c["split"] for c in sweep["checkpoints"]} == {"ood"}


def test_the_same_numbers_give_the_same_bytes(seeded: tuple[Reader, dict[str, int]], tmp_path: Path) -> None:
    reader, runs = seeded
    for suffix in (".pdf", ".svg"):
        first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
        figures.drift(reader, runs["sft"], first)
        figures.drift(reader, runs["sft"], second)
        assert first.read_bytes() == second.read_bytes(), suffix


def test_a_forced_cell_is_left_out_of_the_mean_over_modules(seeded: tuple[Reader, dict[str, int]]) -> None:
    reader, runs = seeded
    rows = [s for s in reader.spectra(runs["sft"], angles=False) if s.side == "u"]
    mean = figures._mean_over_modules([layer_by_step(rows, m, "u") for m in MODULES])
    layer3 = next(cells for layer, cells, _ in mean.rows if layer == "3")
    # layer 3's k is 0 by dimension: the mean is over q, v, o only (seed angle step/20 + 3 + index/2)
    assert layer3[mean.columns.index("60")] == pytest.approx(3 + 3 + (0 + 1 + 1.5) / 3)
    assert not mean.forced
    only_k = figures._mean_over_modules([layer_by_step(rows, "k", "u")])
    assert only_k.forced == {(3, j) for j in range(4)}


def test_nothing_to_draw_is_an_error_naming_the_run(tmp_path: Path) -> None:
    with Store(tmp_path / "healer.db") as store:
        empty = store.create_run(kind="sft", method="sft", name="empty", spec={}, total_steps=10, queued=1)
        parent = store.create_run(kind="sft", method="sft", name="parent", spec={}, total_steps=10, queued=1)
        child = store.create_run(kind="rl", method="grpo", name="child", spec={}, parent_run=parent.id, parent_step=5,
                                 total_steps=10, queued=1)  # fmt: skip
        _eval(store, parent.id, 5, "ood", 10)
    reader, out = Reader(tmp_path / "healer.db"), tmp_path / "figure.png"
    with pytest.raises(HealerError, match=rf"^run {empty.id} has no evaluations yet; `healer eval {empty.id}` first$"):
        figures.accuracy(reader, [empty.id], out)
    with pytest.raises(HealerError, match=rf"^run {child.id} has no evaluations yet"):
        figures.accuracy(reader, [child.id], out)  # its parent's alone would draw someone else's numbers
    for draw in (figures.drift, lambda r, run, p: figures.rotation(r, run, None, p)):
        with pytest.raises(HealerError, match=rf"^run {empty.id} has no spectra; `healer spectra measure {empty.id}@"):
            draw(reader, empty.id, out)
    no_rl = rf"^run {empty.id} has no RL runs started from its checkpoints; `healer heal {empty.id} --preset"
    with pytest.raises(HealerError, match=no_rl):
        figures.sweep(reader, empty.id, out)
    with pytest.raises(HealerError, match=rf"^the RL runs of run {parent.id} \({child.id}\) have no OOD evaluations"):
        figures.sweep(reader, parent.id, out)
    assert not out.exists()
    with Store(tmp_path / "healer.db") as store:
        _eval(store, child.id, 3, "ood", 12)
    drawn = figures.accuracy(reader, [child.id], tmp_path / "ood-only.svg")  # no ID evaluation anywhere: still drawn
    assert [(c["run"], c["step"], c["split"]) for c in drawn["checkpoints"]] == [(parent.id, 5, "ood"),
                                                                               (child.id, 3, "ood")]  # fmt: skip


def test_a_bad_suffix_or_width_writes_nothing(seeded: tuple[Reader, dict[str, int]], tmp_path: Path) -> None:
    reader, runs = seeded
    (folder := tmp_path / "out").mkdir()
    with pytest.raises(HealerError, match=r"\.pdf, \.png or \.svg"):
        figures.drift(reader, runs["sft"], folder / "drift.jpg")
    with pytest.raises(HealerError, match="unknown width 'triple'; give single or double"):
        figures.drift(reader, runs["sft"], folder / "drift.png", "triple")
    assert list(folder.iterdir()) == []


def test_importing_the_figures_loads_no_matplotlib() -> None:
    modules = loaded_after("import healer.figures")
    assert "healer.figures" in modules
    assert not {m for m in modules if m.split(".")[0] == "matplotlib"}
