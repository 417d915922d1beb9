"""GPUs: nvidia-smi's recorded answers parsed, read through a fake `run`, holders from run rows, the panel's lines
at 80 columns, and the panel hidden on a CPU box and shown with GPUs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from textual.app import App, ComposeResult

from healer import gpus, worker
from healer.gpus import QUERY, GpuStat, holders, parse, read
from healer.tui.panels.gpus import GpuPanel, gpu_lines, load_bar, short_name

# Recorded answers of QUERY, whose `--format=csv,noheader,nounits` gives one line per GPU, fields split by ", ", no
# units (memory in MiB, utilisation in percent) and `[N/A]` where the driver does not report a field.
DATA = Path(__file__).parent / "data"
EIGHT_H100 = (DATA / "nvidia-smi-query-gpu.csv").read_text()
ONE_H200 = (DATA / "nvidia-smi-h200.csv").read_text()


def fake_run(stdout: str, returncode: int = 0) -> Any:
    """A `subprocess.run` stand-in that answers QUERY with `stdout` and records what it was asked."""
    calls: list[list[str]] = []

    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        assert kwargs["timeout"] == gpus.TIMEOUT_S and kwargs["text"] and kwargs["capture_output"]
        return subprocess.CompletedProcess(args, returncode, stdout, "")

    run.calls = calls  # type: ignore[attr-defined]
    return run


@pytest.fixture
def smi(monkeypatch: pytest.MonkeyPatch) -> None:
    """nvidia-smi on the PATH, no CUDA_VISIBLE_DEVICES."""
    monkeypatch.setattr(gpus.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_the_recordings_parse_exactly() -> None:
    stats = parse(EIGHT_H100)
    assert [s.index for s in stats] == [str(i) for i in range(8)]
    assert {s.name for s in stats} == {"NVIDIA H100 80GB HBM3"}
    assert stats[0] == GpuStat("0", "NVIDIA H100 80GB HBM3", 98, 74312, 81559)
    assert stats[5].utilization is None and stats[5].memory_used == 1, "[N/A] load: unknown, the row kept"
    assert [s.utilization for s in stats] == [98, 97, 45, 0, 0, None, 12, 100]
    assert parse(ONE_H200) == [GpuStat("0", "NVIDIA H200", 47, 72863, 143771)]


def test_parse_skips_what_is_not_a_gpu_row() -> None:
    text = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
            "1, NVIDIA A100-SXM4-80GB, [Not Supported], 10, 81920\n"
            "2, NVIDIA A100-SXM4-80GB, 5, [N/A], 81920\n\n3, short\n")  # fmt: skip
    assert parse(text) == [GpuStat("1", "NVIDIA A100-SXM4-80GB", None, 10, 81920)]
    assert parse("") == []


def test_read_asks_nvidia_smi_once_with_the_query(smi: None) -> None:
    run = fake_run(EIGHT_H100)
    assert len(read(run)) == 8
    assert run.calls == [QUERY]
    assert read(fake_run(EIGHT_H100, returncode=9)) == [], "a failing nvidia-smi: no GPUs"


def test_read_keeps_the_gpus_cuda_visible_devices_lists(smi: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert [s.index for s in read(fake_run(EIGHT_H100))] == ["2", "5"]
    for hidden in ("-1", ""):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        run = fake_run(EIGHT_H100)
        assert read(run) == [] and run.calls == [], f"CUDA_VISIBLE_DEVICES={hidden!r}: none, nvidia-smi not asked"


def test_read_without_nvidia_smi_or_when_it_hangs(smi: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(args: list[str], **kwargs: Any) -> None:
        raise subprocess.TimeoutExpired(args, kwargs["timeout"])

    assert read(hang) == []
    monkeypatch.setattr(gpus.shutil, "which", lambda name: None)
    run = fake_run(EIGHT_H100)
    assert read(run) == [] and run.calls == []


def test_the_worker_reads_memory_through_the_same_query(smi: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "query_gpus", lambda: gpus.query(fake_run(EIGHT_H100)))
    memory = worker.gpu_memory()
    assert len(memory) == 8 and memory["5"] == (1, 81559) and memory["7"] == (80910, 81559)


def row(run_id: int, name: str, status: str, assigned: str | None) -> SimpleNamespace:
    return SimpleNamespace(id=run_id, name=name, status=status, assigned_gpus=assigned)


def test_holders_are_the_running_runs_by_gpu() -> None:
    rows = [row(14, "rl-gp", "running", "1"), row(12, "sft-gp", "running", "0,1"), row(9, "old", "done", "0"),
            row(15, "next", "queued", None), row(16, "cpu", "running", None)]  # fmt: skip
    assert holders(rows) == {"0": [(12, "sft-gp")], "1": [(12, "sft-gp"), (14, "rl-gp")]}
    assert holders([]) == {}


def test_short_names_and_the_load_bar() -> None:
    assert short_name("NVIDIA H100 80GB HBM3") == "H100"
    assert short_name("NVIDIA H200") == "H200"
    assert short_name("NVIDIA A100-SXM4-80GB") == "A100"
    assert short_name("NVIDIA GeForce RTX 4090") == "RTX 4090"
    assert load_bar(0) == "▕          ▏" and load_bar(None) == load_bar(0)
    assert load_bar(100) == "▕██████████▏"
    assert load_bar(45) == "▕████▌     ▏", "4.5 cells: four full, a half"
    assert load_bar(47) == "▕████▊     ▏", "4.7 cells: 37.6 eighths, rounded to 38"


def test_lines_fit_80_columns_and_name_the_holders() -> None:
    stats = parse(EIGHT_H100)
    held = {"0": [(12, "sft-gp")], "1": [(12, "sft-gp"), (14, "rl-gp")],
            "2": [(123456, "a-very-long-run-name-that-cannot-fit-in-eighty-columns")]}  # fmt: skip
    lines = gpu_lines(stats, held, 80)
    assert len(lines) == 8 and all(len(line) <= 80 for line in lines)
    assert lines[0] == "GPU 0 H100 ▕█████████▊▏  98%  mem 72.6/79.6 GiB  run 12 sft-gp"
    assert lines[1].endswith("runs 12, 14")
    assert lines[2].endswith("…") and "run 123456 a-very" in lines[2]
    assert lines[3].endswith("idle") and "   0%" in lines[3]
    assert "  n/a  mem" in lines[5], "unknown load"
    h200 = gpu_lines(parse(ONE_H200), {"0": [(12, "sft-gp")]}, 80)
    assert h200 == ["GPU 0 H200 ▕████▊     ▏  47%  mem 71.2/140.4 GiB  run 12 sft-gp"]
    assert all(len(line) <= 40 for line in gpu_lines(stats, held, 40)), "a narrow terminal cuts, never wraps"


class Panel(App[None]):
    def compose(self) -> ComposeResult:
        yield GpuPanel()


async def test_the_panel_hides_without_gpus_and_shows_them() -> None:
    app = Panel()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(GpuPanel)
        panel.show([], {})
        await pilot.pause()
        assert not panel.display and panel.region.height == 0, "a CPU box: no panel"
        panel.show(parse(EIGHT_H100), {"0": [(12, "sft-gp")]})
        await pilot.pause()
        assert panel.display and panel.region.height == 8
        first = panel.render_line(0).text
        assert first.startswith("GPU 0 H100") and "run 12 sft-gp" in first
        panel.show([], {})
        await pilot.pause()
        assert not panel.display
