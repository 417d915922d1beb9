"""`healer demo --quick` end to end, as a user runs it in a fresh home: every stage through the queue with real
training, a progress line per stage and per checkpoint, the verdicts as JSON, and the next commands with this
store's ids."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from healer.store import Status, Store
from tests.conftest import REPO, healer, live_processes, wait_until

pytestmark = pytest.mark.slow  # minutes: the quick demo trains every stage


def test_quick_demo_end_to_end(healer_home: Path) -> None:
    result = healer("demo", "--quick", "--json", timeout=900)
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: a heal run that failed, said in the tables
    document = json.loads(result.stdout)  # stdout carries the JSON document only
    assert document["quick"] is True and Path(document["database"]) == healer_home / "healer.db"
    claims = [v["claim"] for v in document["verdicts"]]
    assert len(claims) == 5 and len(set(claims)) == 5
    assert all(isinstance(v["shown"], bool) and v["seeds"] == 1 for v in document["verdicts"])

    log = result.stderr
    for stage in (0, 1, 2):
        assert re.search(rf"^\d\d:\d\d:\d\d stage {stage}: .*; about \d+ (s|min)$", log, re.M), log[-3000:]
        assert re.search(rf"^\d\d:\d\d:\d\d stage {stage} done in ", log, re.M), log[-3000:]
    stage1 = document["runs"]["stage1"]
    checkpoints = re.findall(rf"^\d\d:\d\d:\d\d   {stage1}@(\d+)/150: ID [\d.]+, OOD [\d.]+; ", log, re.M)
    assert checkpoints == ["0", "50", "100", "150"], log[-3000:]
    assert "worker" not in log  # the worker's own lines only with --verbose
    assert "200 items per split, --quick: wider intervals" in log
    assert f"healer export table {stage1} -o heal.tex" in log and f"healer runs show {stage1}" in log

    with Store(document["database"]) as store:
        evals = store.evals(stage1)
        assert {e.n for e in evals} == {200}  # fewer hands, as said
        assert store.spectra(stage1)  # the rotation of its checkpoints, measured in the run
        assert [r.status for r in store.runs() if r.id in document["runs"]["rl"]] == ["done", "done"]


def test_ctrl_c_cancels_the_demo_and_leaves_no_process(healer_home: Path) -> None:
    demo = subprocess.Popen([sys.executable, "-m", "healer", "demo", "--quick"], cwd=REPO, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:

        def training() -> bool:
            assert demo.poll() is None, demo.communicate()
            if not (healer_home / "healer.db").exists():
                return False
            with Store(healer_home / "healer.db") as store:
                return any(store.metrics(r.id, "loss") for r in store.runs(status=[Status.RUNNING]))

        wait_until(training, "stage 0 to train", timeout=240, poll=0.5)
        demo.send_signal(signal.SIGINT)
        _, stderr = demo.communicate(timeout=120)
    finally:
        demo.kill()
    assert demo.returncode == 130 and "demo interrupted; its runs are cancelled" in stderr, stderr[-2000:]
    with Store(healer_home / "healer.db") as store:
        runs = [r for r in store.runs() if not r.is_checkpoint_job]
    assert len(runs) == 5 and {r.status for r in runs} == {"cancelled"}, [(r.id, r.status) for r in runs]
    left = lambda: live_processes(b"healer.train", f"HEALER_HOME={healer_home}")  # noqa: E731
    wait_until(lambda: not left(), "the demo's training processes to be gone", timeout=60)
