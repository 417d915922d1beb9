"""The rotation pane: the pure grid, forced-zero and legend helpers, and the panel itself under a Pilot."""

from __future__ import annotations

from textual.app import App, ComposeResult

from healer.cli.common import out
from healer.cli.spectra import draw
from healer.spectra import (
    ANGLE_GLYPHS,
    ANGLE_STYLES,
    FORCED_GLYPH,
    all_forced,
    angle_glyph,
    layer_by_module,
    layer_by_step,
    legend,
)
from healer.store import Spectrum
from healer.tui.panels.rotation import EMPTY, RotationPanel, short_angle, short_step, step_window

MODULES = ("q", "k", "v", "o", "gate", "up", "down")


def spectrum(layer: int, module: str, side: str, step: int, angle: float, *, k: int = 8, n: int = 64,
             drift: float = 0.001, ref: str = "base") -> Spectrum:  # fmt: skip
    return Spectrum(
        id=0, run_id=1, step=step, ref=ref, ref_run=None, ref_step=None,
        param=f"model.layers.{layer}.self_attn.{module}_proj.weight", layer=layer, module=module, side=side, k=k, n=n,
        forced_zero=max(0, 2 * k - n), mean_angle_deg=angle, median_angle_deg=angle, max_angle_deg=2 * angle,
        chordal=0.1, chordal_norm=0.1, sigma_rel_drift=drift, energy_diag=None, energy_rotation=None,
        energy_outside=None, gap_rel=None, method="exact", error_deg=None, angles=b"", sigma_drift=b"", seconds=0.0,
        settings="{}", created_at="",
    )  # fmt: skip


def checkpoint(step: int, layers: int = 2, scale: float = 1.0) -> list[Spectrum]:
    """Every module of `layers` layers, both sides; k and v have k = n = 64 (all angles forced to 0), q turns on
    side u only, the others on both sides."""
    rows = []
    for layer in range(layers):
        for i, module in enumerate(MODULES):
            for side in "uv":
                if module in ("k", "v"):
                    rows.append(spectrum(layer, module, side, step, 0.0, k=64, n=64))
                else:
                    angle = scale * (1 + layer + i) * (0.0 if module == "q" and side == "v" else 1.0)
                    rows.append(spectrum(layer, module, side, step, angle, drift=0.002 * (layer + 1)))
    return rows


def test_forced_cells_are_marked_and_left_out_of_the_scale() -> None:
    rows = checkpoint(100)
    grid = layer_by_module(rows, 100, "u")
    assert grid.columns == list(MODULES)
    assert grid.forced == {(i, j) for i in range(2) for j in (1, 2)}, "k and v of both layers"
    assert grid.rows[0][1][1] == 0.0 and grid.is_forced(0, 1) and not grid.is_forced(0, 0)
    assert grid.top == 2 + 6, "layer 1, down: forced cells aside"
    partial = spectrum(0, "q", "u", 100, 0.5, k=40, n=64)  # 16 of 40 angles forced: still a measurement
    assert partial.forced_zero == 16 and not all_forced(partial)
    assert not layer_by_module([partial], 100, "u").forced
    steps = layer_by_step(rows + checkpoint(200, scale=2.0), "k", "u")
    assert steps.columns == ["100", "200"] and steps.forced == {(i, j) for i in range(2) for j in range(2)}
    assert steps.top == 0.0
    assert layer_by_step(rows, "q", "v").forced == frozenset(), "zero by training, not by dimension"
    assert layer_by_module([], 5, "u").forced == frozenset()


def test_legend_and_glyphs() -> None:
    assert legend(12.0) == [("0°", "grey50"), ("2.0°", "cyan"), ("4.0°", "green"), ("6.0°", "yellow"),
                            ("8.0°", "dark_orange"), ("10.0°", "bold red")]  # fmt: skip
    assert [label for label, _ in legend(60.0)] == ["0°", "10°", "20°", "30°", "40°", "50°"]
    assert [label for label, _ in legend(0.3)] == ["0°", "0.050°", "0.100°", "0.150°", "0.200°", "0.250°"]
    assert legend(0.0) == [("0°", ANGLE_STYLES[0])]
    assert len(ANGLE_GLYPHS) == len(ANGLE_STYLES) == len(set(ANGLE_GLYPHS)), "one distinct glyph per colour"
    assert FORCED_GLYPH not in ANGLE_GLYPHS
    assert [angle_glyph(a, 12.0) for a in (0.0, 2.5, 4.5, 6.5, 8.5, 12.0)] == list(ANGLE_GLYPHS)
    assert [short_angle(a) for a in (0.0, 0.05, 0.994, 2.34, 9.96, 45.0)] == ["  0", ".05", ".99", "2.3", " 10", " 45"]
    assert [short_step(s) for s in (200, 1000, 1200, 12_345, 3_000_000)] == ["200", "1k", "1k2", "12k", "3M"]
    assert step_window(5, 4, 8) == (0, 5)
    assert step_window(9, 8, 7) == (3, 9), "the latest, a cell for +3 on the left"
    assert step_window(9, 2, 7) == (0, 6), "the current step stays in, +3 on the right"
    assert step_window(20, 10, 7) == (6, 11), "+N both sides"


def test_the_cli_heatmap_marks_forced_cells_and_prints_the_legend() -> None:
    with out.capture() as captured:
        draw(layer_by_module(checkpoint(100), 100, "u"))
    text = captured.get()
    assert "0° 1.3° 2.7° 4.0° 5.3° 6.7° up to 8.00°" in text and "= all angles 0 by dimension" in text
    row = next(line for line in text.splitlines() if line.startswith("0 "))
    assert row.split()[:4] == ["0", "1.00", "=", "="]


class Pane(App[None]):
    CSS = "RotationPanel { width: 40; height: 12; }"

    def __init__(self, rows: list[Spectrum], all_rows: list[Spectrum], label: str) -> None:
        super().__init__()
        self.feed = (rows, all_rows, label)

    def compose(self) -> ComposeResult:
        yield RotationPanel()

    def on_mount(self) -> None:
        panel = self.query_one(RotationPanel)
        panel.show(*self.feed)
        panel.focus()


def rendered(app: App[None]) -> list[str]:
    panel = app.query_one(RotationPanel)
    return [panel.render_line(y).text.rstrip() for y in range(panel.size.height)]


def plain(line: str) -> list[str]:
    """A rendered line's words, the shade glyphs taken for spaces."""
    return "".join(" " if c in ANGLE_GLYPHS else c for c in line).split()


async def test_the_panel_cycles_modules_and_sides() -> None:
    run = checkpoint(100) + checkpoint(200, scale=2.0) + checkpoint(300, scale=3.0)
    other_ref = [spectrum(0, "q", "u", 100, 80.0, ref="other")]  # another reference: not drawn
    now = [r for r in run if r.step == 200]
    app = Pane(now, run + other_ref, "1@200")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        lines = rendered(app)
        assert lines[0] == "rotation  module q  side u  step 1@200"
        assert lines[1].split() == ["L", "q", "k", "v", "o", "gat", "up", "dwn", "σ", "Δ%"]
        assert lines[2] == " 0  2.0   =   =▒8.0▒ 10▓ 12█ 14 0.17%", "layer 0 at step 200, k and v forced"
        assert lines[4].split() == ["L", "100", "200", "300", "σ", "Δ%"]
        assert lines[5] == " 0  1.0 2.0·3.0                 0.20%", "q, side u: layer 0 over the steps, drift aligned"
        assert lines[7] == " 0°·2.7°░5.3°▒8.0°▓10.7°█13.3° =k≥n", "the scale: 16° is the largest angle"
        assert not any(lines[8:]) and "80" not in [word for line in lines for word in plain(line)]
        await pilot.press("m")
        lines = rendered(app)
        assert lines[0] == "rotation  module k  side u  step 1@200"
        assert plain(lines[5])[:4] == ["0", "=", "=", "="], "k: every angle forced to 0, not 'no rotation'"
        await pilot.press("m", "m", "v")
        lines = rendered(app)
        assert lines[0] == "rotation  module o  side v  step 1@200"
        assert plain(lines[5])[:4] == ["0", "4.0", "8.0", "12"]
        await pilot.press("m", "m", "m", "m")  # gate, up, down, and round to q
        lines = rendered(app)
        assert lines[0] == "rotation  module q  side v  step 1@200"
        assert plain(lines[2])[:2] == ["0", "0"] and plain(lines[5])[:4] == ["0", "0", "0", "0"]


async def test_the_panel_says_what_does_not_fit_and_when_there_is_nothing() -> None:
    run = [r for step in (100, 200, 300, 400, 500, 600, 700, 800, 900) for r in checkpoint(step, layers=28)]
    app = Pane([r for r in run if r.step == 900], run, "2@900")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        lines = rendered(app)
        assert len(lines) == 12 and all(len(line) <= 40 for line in lines) and all(lines)
        assert lines[5] == "+25 layers" and lines[10] == "+25 layers", "3 of 28 layers in each map"
        assert lines[6].split() == ["L", "+3", "400", "500", "600", "700", "800", "900", "σ", "Δ%"], "the latest"
    empty = Pane([], [], "1@0")
    async with empty.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        lines = [line for line in rendered(empty) if line]
        assert " ".join(lines) == EMPTY and len(lines) == 3, "one sentence, wrapped in 40 columns"
