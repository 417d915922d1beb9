"""The accuracy panel: `series` on a Lineage built by hand (no database), and the panel in an 80x24 Pilot app."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Static
from textual_plot.plot_widget import ErrorBarPlot, ScatterPlot

from healer.stats import wilson
from healer.tui.panels.accuracy import EMPTY, AccuracyPanel, readout, series
from healer.tui.snapshot import Accuracy, Lineage, Point, Start


def acc(correct: int, n: int = 100) -> Accuracy:
    low, high = wilson(correct, n)
    return Accuracy(correct / n, low, high, correct, n)


def make_lineage() -> Lineage:
    """SFT (run 1, steps 0..800) then RL (run 2) from its step 800; OOD peaks at 200 while the loss keeps falling."""
    ids = [40, 60, 72, 80, 85, 88, 90, 92, 93, 94, 95]
    oods = [30, 45, 52, 48, 44, 40, 37, 35, 33, 45, 50]
    points = []
    for i, (a, b) in enumerate(zip(ids, oods, strict=True)):
        step = 100 * i
        run, run_step = (1, step) if step <= 800 else (2, step - 800)
        points.append(Point(step, run, run_step, acc(a), acc(b), 2.0 / (1 + i), ()))
    # one checkpoint evaluated on ID only: it has no OOD point
    points.insert(3, Point(250, 1, 250, acc(75), None, None, ()))
    return Lineage(
        run=2,
        runs=((1, "sft", 0), (2, "rl", 800)),
        points=tuple(points),
        loss=tuple((s, 2.5 / (1 + s / 100)) for s in range(0, 1001, 50)),
        starts=(Start(300, 3, "rl-early", "grpo"), Start(800, 2, "rl", "grpo")),
        peak_ood=200,
    )


def test_series_matches_points() -> None:
    lineage = make_lineage()
    data = series(lineage)
    assert data.steps == tuple(p.lineage_step for p in lineage.points)
    assert data.id.x == data.steps
    assert data.ood.x == tuple(s for s in data.steps if s != 250)
    for split, name in ((data.id, "id"), (data.ood, "ood")):
        by_step = {p.lineage_step: getattr(p, name) for p in lineage.points if getattr(p, name) is not None}
        for x, y, low, high in zip(split.x, split.y, split.low, split.high, strict=True):
            a = by_step[x]
            assert y == pytest.approx(100 * a.correct / a.n)
            assert (low, high) == pytest.approx((100 * a.ci_low, 100 * a.ci_high))
            assert 0 <= low <= y <= high <= 100  # in %, and the Wilson interval holds the point


def test_series_loss_starts_peak_and_range() -> None:
    lineage = make_lineage()
    data = series(lineage)
    assert data.loss_x == tuple(range(0, 1001, 50))
    assert data.loss_y[0] == pytest.approx(2.5) and data.loss_y == tuple(sorted(data.loss_y, reverse=True))
    assert data.starts == ((300, "rl-early (grpo)"), (800, "rl (grpo)"))
    assert data.peak == 200 and data.peak_y == pytest.approx(52.0)
    assert data.x_range == (0.0, 1000.0)
    assert data.at(4) == 300 and data.at(None) is None and data.at(99) is None and data.at(-1) is None


def test_series_edge_cases() -> None:
    one = Lineage(run=1, runs=((1, "sft", 0),), points=(Point(0, 1, 0, None, acc(10), None, ()),), loss=(), starts=(),
                  peak_ood=0)  # fmt: skip
    data = series(one)
    assert data.id.x == () and data.ood.y == (10.0,) and data.peak_y == 10.0
    assert data.x_range == (0.0, 1.0)  # a single step still gets a non-empty axis
    assert series(Lineage(run=1, runs=(), points=(), loss=(), starts=(), peak_ood=None)).peak_y is None


def test_readout() -> None:
    lineage = make_lineage()
    data = series(lineage)
    text = readout(data, lineage, 2).plain
    assert text.startswith("@200 ") and "OOD 52%" in text and "peak" in text and "loss" in text
    assert "◆" not in readout(data, lineage, 3).plain  # step 250 was evaluated on ID only
    assert "start" in readout(data, lineage, None).plain  # no cursor: the caption is the legend


class Host(App[None]):
    def compose(self) -> ComposeResult:
        yield AccuracyPanel()


def cells(plot, char: str) -> list[tuple[int, int]]:
    canvas = plot.query_one("#plot")
    return [(x, y) for y, row in enumerate(canvas._buffer) for x, c in enumerate(row) if c == char]


async def test_panel_shows_and_follows_cursor() -> None:
    lineage = make_lineage()
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(AccuracyPanel)
        panel.show(lineage, 4)
        await pilot.pause()
        acc, loss = panel.accuracy_plot, panel.loss_plot
        assert not panel.query_one("#acc-empty").display and acc.display and loss.display
        kinds = [type(d) for d in acc._datasets]
        assert kinds.count(ErrorBarPlot) == 2 and kinds.count(ScatterPlot) == 3  # ID, OOD markers and the peak
        scatters = [d for d in acc._datasets if type(d) is ScatterPlot]
        assert [d.marker for d in scatters] == ["●", "◆", "★"]
        assert list(scatters[2].x) == [200]
        # intervals: error bars centred on the interval's midpoint, spanning exactly ci_low..ci_high in %
        bars = [d for d in acc._datasets if type(d) is ErrorBarPlot]
        ood = series(lineage).ood
        assert list(bars[1].y - bars[1].yerr) == pytest.approx(list(ood.low))
        assert list(bars[1].y + bars[1].yerr) == pytest.approx(list(ood.high))
        # starts and the cursor are vertical lines on both charts, the cursor last
        assert [v.x for v in acc._v_lines] == [300, 800, 300] == [v.x for v in loss._v_lines]
        assert (acc._y_min, round(acc._y_max)) == (0, 100)
        assert acc._x_min == loss._x_min and acc._x_max == loss._x_max
        assert cells(acc, "★") and cells(acc, "●") and cells(acc, "◆")
        caption = str(panel.query_one("#acc-caption", Static).render())
        assert "@300" in caption

        panel.show(lineage, 1)  # the cursor moves: only its line moves
        await pilot.pause()
        assert [v.x for v in acc._v_lines] == [300, 800, 100]
        assert "@100" in str(panel.query_one("#acc-caption", Static).render())

        panel.show(lineage, None)
        await pilot.pause()
        assert [v.x for v in acc._v_lines] == [300, 800]

        panel.show(None, None)
        await pilot.pause()
        assert panel.query_one("#acc-empty").display and not acc.display and panel.data is None
        assert EMPTY in str(panel.query_one("#acc-empty", Static).render())


async def test_panel_compact_box_keeps_markers_over_lines() -> None:
    """In a 40x13 box the chart keeps its plot area; the cursor line does not hide the selected checkpoint."""
    lineage = make_lineage()
    app = Host()
    async with app.run_test(size=(40, 13)) as pilot:
        panel = app.query_one(AccuracyPanel)
        panel.show(lineage, 4)  # step 300, which is also a start
        await pilot.pause()
        acc = panel.accuracy_plot
        assert acc.region.height >= 7 and panel.loss_plot.region.height == 5
        assert not acc.query_one("#legend").display  # legend off when small
        cursor_col = acc.get_pixel_from_coordinate(300, 0)[0]
        _, id_row = acc.get_pixel_from_coordinate(300, 80.0)
        assert acc.query_one("#plot").get_pixel(cursor_col, id_row)[0] == "●"
        assert any(x == cursor_col for x, _ in cells(acc, "│"))


async def test_panel_empty_lineage_and_before_mount() -> None:
    panel = AccuracyPanel()
    empty = Lineage(run=1, runs=((1, "sft", 0),), points=(), loss=((10, 1.0),), starts=(), peak_ood=None)
    panel.show(empty, 0)  # before mount: remembered, drawn on mount
    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        await app.query_one(AccuracyPanel).remove()
        await app.mount(panel)
        await pilot.pause()
        assert panel.query_one("#acc-empty").display and panel.data is None


def test_the_legend_wins_a_narrow_caption_and_keeps_the_names_tails() -> None:
    from rich.text import Text

    from healer.tui.panels.accuracy import legend_caption

    cursor = Text("@1800 ●ID 98% 97–99 ◆OOD 6% 5–9 loss 0.0066")
    runs = [(3, "tiny-grpo-from-peak-ood", "red"), (4, "tiny-grpo-from-last", "blue")]
    narrow = legend_caption(cursor.copy(), runs, 40).plain
    assert narrow.startswith("@1800  ◇3 …") and "◇4 " in narrow and narrow.endswith("from-last")
    assert len(narrow) <= 40
    wide = legend_caption(cursor.copy(), runs, 120).plain
    assert wide == cursor.plain + "  ◇3 tiny-grpo-from-peak-ood  ◇4 tiny-grpo-from-last"
    assert legend_caption(cursor.copy(), [], 40).plain == cursor.plain
