"""`healer export`: the heal, sweep and rotation tables in every format against golden files (reviewed like code),
every number of the LaTeX table checked against its `evals` row, a LaTeX table that compiles, Markdown that parses as
a table, seeds grouped to mean ± std, figures through the CLI, a copy of the store taken while a run writes, and bad
input as one line with nothing written."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import threading
from pathlib import Path

import pytest

from healer.errors import HealerError
from healer.export import Provenance, heal_table, render, spectra_table, sweep_table
from healer.stats import wilson
from healer.store import Status, Store
from healer.store.views import Reader
from tests.conftest import healer
from tests.test_tui import seed

GOLDEN = Path(__file__).parent / "golden" / "export"
PROVENANCE = Provenance("healer.db", "healer export (golden)", "0.1.0")  # fixed: the goldens must not move
UPDATE = os.environ.get("HEALER_UPDATE_GOLDEN") == "1"  # HEALER_UPDATE_GOLDEN=1 pytest tests/test_export.py


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    path = tmp_path / "healer.db"
    return path, seed(path)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; run with HEALER_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} differs from its golden file; review the change, then update it"


@pytest.mark.parametrize("fmt", ["latex", "markdown", "csv", "json"])
def test_tables_match_their_golden_files(store: tuple[Path, dict[str, int]], fmt: str) -> None:
    path, runs = store
    suffix = {"latex": "tex", "markdown": "md", "csv": "csv", "json": "json"}[fmt]
    with Reader(path) as reader:
        tables = {"heal": heal_table(reader, [str(runs["sft"])]), "sweep": sweep_table(reader, str(runs["sft"])),
                  "spectra": spectra_table(reader, f"{runs['sft']}@40")}  # fmt: skip
    for name, table in tables.items():
        _golden(f"{name}.{suffix}", render(table, fmt, PROVENANCE, "brackets", comment=True))
    with Reader(path) as reader:
        table = heal_table(reader, [str(runs["sft"])])
    _golden(f"heal-pm.{suffix}", render(table, fmt, PROVENANCE, "pm", comment=fmt != "csv"))


def _latex_rows(text: str) -> list[list[str]]:
    body = text.split("\\midrule\n")[1].split("\\bottomrule")[0]
    return [[c.strip() for c in line.rstrip().removesuffix("\\\\").split("&")] for line in body.strip().splitlines()]


def test_every_number_of_the_latex_table_is_its_evals_row(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    with Reader(path) as reader:
        table = heal_table(reader, [str(runs["sft"]), str(runs["grpo-from-20"])], group_by="none")
        text = render(table, "latex", PROVENANCE)
        evals = {(e.run_id, e.step, e.split): e for r in runs.values() for e in reader.evals(r)}
    sources = re.findall(r"^% (.+?): base (\d+)@(\d+); peak-ood (\d+)@(\d+); sft-end (\d+)@(\d+); rl-end (\d+)@(\d+)",
                         text, re.MULTILINE)  # fmt: skip
    lines = _latex_rows(text)  # each row: its values, then its intervals on a line of their own
    values, intervals = lines[0::2], lines[1::2]
    assert len(values) == len(intervals) == len(sources) == 3  # the SFT run's two RL runs, grpo-from-20 named again
    checked = 0
    for row, under, (_, *where) in zip(values, intervals, sources, strict=True):
        checkpoints = [(int(where[i]), int(where[i + 1])) for i in range(0, 8, 2)]
        for k, (run, step) in enumerate(checkpoints):
            for j, split in enumerate(("id", "ood")):
                e = evals[(run, step, split)]
                low, high = wilson(e.correct, e.n)
                assert (e.ci_low, e.ci_high) == pytest.approx((low, high))
                column = 1 + 2 * k + j
                assert row[column].removeprefix("\\textbf{").removesuffix("}") == f"{100 * e.correct / e.n:.1f}"
                assert under[column] == f"{{\\scriptsize [{100 * e.ci_low:.1f}, {100 * e.ci_high:.1f}]}}"
                checked += 1
    assert checked == 24


def test_the_latex_table_compiles(store: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is missing on CI: .ci/run installs texlive-latex-base and texlive-latex-recommended")
        pytest.skip("pdflatex is not installed here (Debian: apt install texlive-latex-base texlive-latex-recommended)")
    path, runs = store
    result = healer("--db", str(path), "export", "table", str(runs["sft"]), "--format", "latex")
    assert result.returncode == 0, result.stderr
    sweep = healer("--db", str(path), "export", "sweep", str(runs["sft"]), "--format", "latex", "--ci", "pm")
    spectra = healer("--db", str(path), "export", "spectra", str(runs["sft"]), "--format", "latex")
    document = ("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + result.stdout + sweep.stdout
                + spectra.stdout + "\\end{document}\n")  # fmt: skip
    (tmp_path / "paper.tex").write_text(document)
    compiled = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert compiled.returncode == 0, compiled.stdout[-3000:]
    assert (tmp_path / "paper.pdf").read_bytes().startswith(b"%PDF")
    assert "Overfull" not in compiled.stdout or "table" in document  # wide tables may overflow a page: still valid


def test_markdown_parses_as_a_table(store: tuple[Path, dict[str, int]]) -> None:
    from markdown_it import MarkdownIt

    path, runs = store
    result = healer("--db", str(path), "export", "table", str(runs["sft"]), "--format", "markdown")
    assert result.returncode == 0, result.stderr
    tokens = MarkdownIt("commonmark").enable("table").parse(result.stdout)
    kinds = [t.type for t in tokens]
    assert kinds.count("table_open") == 1
    assert kinds.count("th_open") == 10 and kinds.count("tr_open") == 3  # a header row and two rows
    assert kinds.count("td_open") == 20


def _grouped_store(path: Path) -> dict[str, int]:
    """Two SFT runs that differ only by seed, each with GRPO from its OOD peak, and a third with another lr."""
    counts = {0: ((10, 12), (40, 30), (60, 15), (50, 25)), 1: ((10, 12), (44, 34), (66, 19), (52, 31)),
              2: ((10, 12), (30, 20), (50, 18), (45, 19))}  # fmt: skip
    ids = {}
    with Store(path) as store:
        for seed_, ((b_id, b_ood), (p_id, p_ood), (e_id, e_ood), (r_id, r_ood)) in counts.items():
            lr = 1e-4 if seed_ < 2 else 3e-4
            sft = store.create_run(kind="sft", method="sft", name=f"sft-s{seed_}",
                                   spec={"train": {"seed": seed_ % 2, "lr": lr}}, queued=0)  # fmt: skip
            for step, (c_id, c_ood) in ((0, (b_id, b_ood)), (10, (p_id, p_ood)), (20, (e_id, e_ood))):
                _eval(store, sft.id, step, c_id, c_ood)
            store.finish_run(sft.id, Status.DONE, exit_code=0)
            rl = store.create_run(kind="rl", method="grpo", name=f"grpo-s{seed_}", spec={"train": {"seed": seed_ % 2}},
                                  parent_run=sft.id, parent_step=10, queued=0)  # fmt: skip
            _eval(store, rl.id, 0, p_id, p_ood)
            _eval(store, rl.id, 5, r_id, r_ood)
            store.finish_run(rl.id, Status.DONE, exit_code=0)
            ids[f"sft{seed_}"] = sft.id
    return ids


def _eval(store: Store, run_id: int, step: int, id_correct: int, ood_correct: int) -> None:
    for split, correct in (("id", id_correct), ("ood", ood_correct)):
        low, high = wilson(correct, 100)
        store.record_eval({"run_id": run_id, "step": step, "checkpoint_path": None, "task": "general_points",
                           "split": split, "protocol": "single", "max_attempts": 1, "n": 100, "correct": correct,
                           "accuracy": correct / 100, "ci_low": low, "ci_high": high, "format_error_rate": 0.0,
                           "mean_reward": None, "loss": None, "outcomes": "{}", "settings": "{}", "seconds": 1.0},
                          [])  # fmt: skip


def test_runs_that_differ_only_by_seed_collapse_to_mean_and_std(tmp_path: Path) -> None:
    path = tmp_path / "healer.db"
    ids = _grouped_store(path)
    refs = [str(i) for i in ids.values()]
    with Reader(path) as reader:
        grouped = heal_table(reader, refs, group_by="seed")
        apart = heal_table(reader, refs, group_by="none")
    assert [r.label for r in grouped.rows] == ["sft-s0 → grpo-s0 (2 seeds)", "sft-s2 → grpo-s2"]
    assert len(apart.rows) == 3
    text = render(grouped, "markdown", PROVENANCE)
    row = next(line for line in text.splitlines() if line.startswith("| sft-s0")).split(" | ")
    mean, std = statistics.fmean([0.30, 0.34]), statistics.stdev([0.30, 0.34])  # OOD at the peak, both seeds
    assert row[4] == f"**{100 * mean:.1f} ± {100 * std:.1f}**"  # and the best of its column (the other: 20.0)
    assert "mean ± standard deviation over the runs" in text
    sources = [line for line in text.splitlines() if line.startswith("  sft-s0 → grpo-s0 (2 seeds): base")]
    assert [s.split("rl-end ")[1].split(";")[0] for s in sources] == ["2@5", "4@5"]  # each seed's checkpoints named


def test_bad_input_is_one_line_and_writes_nothing(store: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    path, runs = store
    db = ("--db", str(path))
    out = tmp_path / "t.tex"
    for args, words in (
        (("export", "table", "nope"), "no run with id or name 'nope'"),
        (("export", "table", str(runs["live"]), "-o", str(out)), "no evaluation of the model it started from"),
        (("export", "table", str(runs["sft"]), "--stages", "base,control", "-o", str(out)), "no SFT control"),
        (("export", "table", str(runs["sft"]), "--stages", "base,later"), "--stages 'base,later'"),
        (("export", "table", str(runs["sft"]), "--format", "docx"), "--format 'docx'"),
        (("export", "table", str(runs["sft"]), "-o", str(tmp_path / "missing" / "t.tex")), "does not exist"),
        (("export", "sweep", str(runs["grpo-from-20"])), "no RL runs started from its checkpoints"),
        (("export", "spectra", f"{runs['grpo-from-20']}"), "has no spectra"),
        (("export", "figure", "pie", "1", "-o", str(tmp_path / "f.pdf")), "'pie' is not a figure"),
        (("export", "figure", "accuracy", "1", "-o", str(tmp_path / "f.gif")), "ending in .pdf"),
        (("export", "db", "-o", str(path)), "is the store itself"),
    ):
        result = healer(*db, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "f.pdf").exists() and not (tmp_path / "missing").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_output_files_are_written_whole_with_provenance(store: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    path, runs = store
    out = tmp_path / "table.md"
    result = healer("--db", str(path), "export", "table", str(runs["sft"]), "-o", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.startswith("<!--\n  healer ") and f"database: {path}" in text and "export table" in text
    assert "| gp-sft → grpo-from-20 |" in text  # Markdown, from the suffix
    csv_plain = healer("--db", str(path), "export", "table", str(runs["sft"]), "--format", "csv")
    csv_noted = healer("--db", str(path), "export", "table", str(runs["sft"]), "--format", "csv", "--provenance")
    assert csv_plain.stdout.startswith("row,column,value") and csv_noted.stdout.startswith("# healer ")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_figures_through_the_cli_carry_a_sidecar(store: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    path, runs = store
    out = tmp_path / "accuracy.pdf"
    result = healer("--db", str(path), "export", "figure", "accuracy", str(runs["sft"]), str(runs["grpo-from-20"]),
                    "-o", str(out), "--width", "double")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(b"%PDF")
    sidecar = json.loads((tmp_path / "accuracy.pdf.json").read_text())
    assert sidecar["runs"] == [runs["sft"], runs["grpo-from-20"]] and "export figure accuracy" in sidecar["command"]
    assert sidecar["database"] == str(path)


def test_a_copy_of_the_store_taken_while_a_run_writes_is_whole(store: tuple[Path, dict[str, int]],
                                                               tmp_path: Path) -> None:  # fmt: skip
    path, runs = store
    stop = threading.Event()

    def write() -> None:
        with Store(path) as writer:
            step = 1000
            while not stop.is_set():
                writer.log_metrics(runs["live"], step, {"loss": 1 / step, "learning_rate": 1e-5})
                step += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        copy = tmp_path / "copy.db"
        result = healer("--db", str(path), "export", "db", "-o", str(copy))
    finally:
        stop.set()
        thread.join()
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        copied = conn.execute("SELECT COUNT(*) FROM metrics WHERE run_id = ?", [runs["live"]]).fetchone()[0]
    assert copied >= 240  # the seed's 120 steps of 2 metrics, and what the writer had committed
    assert not (tmp_path / "copy.db-wal").exists()
    shown = healer("tui", "--db", str(copy), "--read-only", "--once", "--width", "80", "--height", "24")
    assert shown.returncode == 0, shown.stderr
    assert "gp-sft" in shown.stdout and "read-only: actions off" in shown.stdout  # said in the footer


def test_an_rl_run_not_evaluated_yet_is_left_out_and_said_so(store: tuple[Path, dict[str, int]]) -> None:
    path, runs = store
    with Store(path) as writer:
        queued = writer.create_run(kind="rl", method="grpo", name="grpo-later-too", spec={}, parent_run=runs["sft"],
                                   parent_step=40, queued=1)  # fmt: skip
    with Reader(path) as reader:
        table = heal_table(reader, [str(runs["sft"])])
        assert [r.label for r in table.rows] == ["gp-sft → grpo-from-20", "gp-sft → grpo-from-60"]
        assert f"left out: run {queued.id} (grpo-later-too), queued, no evaluated checkpoint yet" in table.notes
        with pytest.raises(HealerError, match="no evaluated checkpoint"):
            heal_table(reader, [str(queued.id)])  # named on its own: an error, not a silent gap


def test_an_accuracy_figure_starts_at_the_earliest_run_asked_for(store: tuple[Path, dict[str, int]],
                                                                  tmp_path: Path) -> None:  # fmt: skip
    """SFT continued from another SFT run (as the demo's stage 1 continues stage 0): asked for alone, the figure draws
    it from its own step 0, without the run it started from; an RL run brings its SFT parent."""
    from healer import figures
    from tests.test_tui import _eval as seed_eval

    path, runs = store
    with Store(path) as writer:
        child = writer.create_run(kind="sft", method="sft", name="sft-more", spec={}, parent_run=runs["sft"],
                                  parent_step=40, queued=0)  # fmt: skip
        for step, (id_correct, ood_correct) in ((0, (60, 14)), (10, (65, 11))):
            seed_eval(writer, child.id, step, "id", id_correct)
            seed_eval(writer, child.id, step, "ood", ood_correct)
    (tmp_path / "figs").mkdir()
    with Reader(path) as reader:
        alone = figures.accuracy(reader, [child.id], tmp_path / "figs" / "a.png")
        with_rl = figures.accuracy(reader, [runs["grpo-from-20"]], tmp_path / "figs" / "b.png")
    assert {(c["run"], c["step"]) for c in alone["checkpoints"]} == {(child.id, 0), (child.id, 10)}
    assert {c["run"] for c in with_rl["checkpoints"]} == {runs["sft"], runs["grpo-from-20"]}
