"""The run-local journal (a run on a cluster node writes it instead of the database; its worker ingests it), and the
store of the ranks of a multi-process run that are not the main one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from healer.store import Status, Store
from healer.store.follower import FollowerStore
from healer.store.journal import JournalStore, ingest, outcome, read_records, take_snapshot


def spectra_row(layer: int, angle: float) -> dict[str, Any]:
    return {"param": f"model.layers.{layer}.self_attn.q_proj.weight", "layer": layer, "module": "q", "side": "u",
            "k": 2, "n": 8, "forced_zero": 0, "mean_angle_deg": angle, "median_angle_deg": angle,
            "max_angle_deg": angle, "chordal": 0.1, "chordal_norm": 0.05, "sigma_rel_drift": 0.01,
            "energy_diag": 0.9, "energy_rotation": 0.1, "energy_outside": 0.0, "gap_rel": 0.5, "method": "exact",
            "error_deg": 0.0, "seconds": 0.01, "angles_deg": [angle, angle / 2],
            "sigma_drift": [0.01, 0.02]}  # fmt: skip


def eval_summary(run_id: int, step: int, correct: int) -> dict[str, Any]:
    return {"run_id": run_id, "step": step, "checkpoint_path": f"/ckpt/{step}", "task": "card_sum", "split": "ood",
            "protocol": "single", "max_attempts": 1, "loss": 1.5, "seconds": 0.1, "settings": "{}", "n": 4,
            "correct": correct, "accuracy": correct / 4, "ci_low": 0.0, "ci_high": 1.0, "format_error_rate": 0.0,
            "mean_reward": 0.5, "outcomes": "{}"}  # fmt: skip


def sample(idx: int, correct: bool) -> dict[str, Any]:
    return {"idx": idx, "prompt": f"p{idx}", "completion": "1+2=3", "transcript": None, "outcome": "correct",
            "reward": 1.0, "correct": int(correct), "attempts": 1, "meta": "{}"}  # fmt: skip


def dump(store: Store, run_id: int) -> dict[str, Any]:
    """What a reader sees of a run (ids and feed counters aside): metrics, checkpoints, evaluations, spectra."""
    return {
        "metrics": sorted((m.step, m.name, m.value) for m in store.metrics(run_id)),
        "checkpoints": [(c.step, c.path, c.pruned_at is not None) for c in store.checkpoints(run_id, pruned=True)],
        "evals": sorted((e.step, e.split, e.correct, len(store.eval_samples(e.id))) for e in store.evals(run_id)),
        "spectra": [(s.step, s.layer, s.mean_angle_deg, tuple(s.angles_deg)) for s in store.spectra(run_id)],
    }


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Store, int, Path, Path]:
    store = Store(tmp_path / "healer.db")
    run = store.create_run(kind="sft", method="sft", name="r", spec={}, queued=1, out_dir=str(tmp_path / "run"))
    other = store.create_run(kind="sft", method="sft", name="other", spec={})
    store.log_metrics(other.id, 1, {"loss": 9.0})  # another run's rows stay out of the snapshot
    snapshot = take_snapshot(store, run.id, tmp_path / "run" / "slurm" / "store.db")
    return store, run.id, snapshot, tmp_path / "run" / "journal.jsonl"


def node_attempt(snapshot: Path, journal: Path, run_id: int, steps: range, save_every: int = 2) -> None:
    """What a run's process writes on a node: running, metrics per step, a checkpoint, its evaluation and spectra."""
    node = JournalStore(snapshot, journal)
    assert node.mark_running(run_id, pid=123, host="node7")
    for step in steps:
        node.log_metrics(run_id, step, {"loss": 10.0 / step, "learning_rate": 1e-3})
        if step % save_every == 0:
            node.add_checkpoint(run_id, step, f"/ckpt/{step}")
            node.record_eval(eval_summary(run_id, step, step % 4), [sample(i, i < step % 4) for i in range(4)])
            node.record_spectra(run_id, step, "r@0", run_id, 0, {"k": 2}, [spectra_row(0, step / 10)])
    node.close()


def test_a_node_writes_only_its_journal_and_the_worker_ingests_it(setup: tuple[Store, int, Path, Path]) -> None:
    store, run_id, snapshot, journal = setup
    before = Path(store.path).stat().st_mtime_ns
    node_attempt(snapshot, journal, run_id, range(1, 5))
    assert Path(store.path).stat().st_mtime_ns == before, "the node never wrote the database"
    assert not store.metrics(run_id)

    done = ingest(store, _with_journal(store, run_id, journal))
    assert done.records > 0 and done.unreadable == 0
    seen = dump(store, run_id)
    assert [s for s, n, _ in seen["metrics"] if n == "loss"] == [1, 2, 3, 4]
    assert [c[0] for c in seen["checkpoints"]] == [2, 4]
    assert [(e[0], e[2], e[3]) for e in seen["evals"]] == [(2, 2, 4), (4, 0, 4)]
    assert seen["spectra"] == [(2, 0, pytest.approx(0.2), pytest.approx((0.2, 0.1))),
                               (4, 0, pytest.approx(0.4), pytest.approx((0.4, 0.2)))]  # fmt: skip
    row = store.run(run_id)
    assert row.node == "node7" and row.started_at and row.journal_offset == journal.stat().st_size
    assert row.status == Status.RUNNING, "the worker, not the journal, gives the verdict"


def _with_journal(store: Store, run_id: int, journal: Path) -> Any:
    store._set(run_id, journal=str(journal), status="running")
    return store.run(run_id)


def test_ingesting_the_same_file_twice_changes_nothing(setup: tuple[Store, int, Path, Path]) -> None:
    store, run_id, snapshot, journal = setup
    node_attempt(snapshot, journal, run_id, range(1, 7))
    ingest(store, _with_journal(store, run_id, journal))
    once = dump(store, run_id)
    again = ingest(store, store.run(run_id))
    assert again.records == 0, "the offset remembers what was ingested"
    twice = ingest(store, store.run(run_id), from_start=True)
    assert twice.records == len(read_records(journal)[0]) > 10
    assert dump(store, run_id) == once
    assert len(store.metrics(run_id, "loss")) == 6


def test_a_torn_last_line_waits_until_it_is_complete(setup: tuple[Store, int, Path, Path]) -> None:
    store, run_id, snapshot, journal = setup
    node_attempt(snapshot, journal, run_id, range(1, 3))
    line = json.dumps({"op": "metrics", "run": run_id, "step": 3, "values": {"loss": 3.3}, "wall_time": 1.0})
    with open(journal, "a") as f:
        f.write(line[:25])  # the job is in the middle of writing it
    first = ingest(store, _with_journal(store, run_id, journal))
    assert [m.step for m in store.metrics(run_id, "loss")] == [1, 2]
    assert first.offset == journal.stat().st_size - 25, "the torn line is not counted as ingested"
    with open(journal, "a") as f:
        f.write(line[25:] + "\n")
    second = ingest(store, store.run(run_id))
    assert second.records == 1 and second.unreadable == 0
    assert [(m.step, m.value) for m in store.metrics(run_id, "loss")][-1] == (3, pytest.approx(3.3))


def test_a_requeued_attempt_resumes_from_the_journal_without_duplicates(setup: tuple[Store, int, Path, Path]) -> None:
    """The first attempt dies mid-line after step 5 (checkpoint at 4); the second replays the journal, sees that
    checkpoint, rewinds to it and trains 5.. again: one row per step, and the torn line skipped."""
    store, run_id, snapshot, journal = setup
    node_attempt(snapshot, journal, run_id, range(1, 6))
    with open(journal, "a") as f:
        f.write('{"op": "metrics", "run": ')  # killed mid-write
    node = JournalStore(snapshot, journal)
    assert [c.step for c in node.checkpoints(run_id)] == [2, 4], "the attempt sees what the first one saved"
    assert node.rewind(run_id, after_step=4) == {"metrics": 2, "evals": 0, "spectra": 0}
    node.close()
    node_attempt(snapshot, journal, run_id, range(5, 9))
    done = ingest(store, _with_journal(store, run_id, journal))
    assert done.unreadable == 1
    steps = [m.step for m in store.metrics(run_id, "loss")]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [c.step for c in store.checkpoints(run_id)] == [2, 4, 6, 8]
    assert outcome(journal).attempts == 2


def test_the_last_attempt_s_own_words_are_its_outcome(setup: tuple[Store, int, Path, Path]) -> None:
    _store, run_id, snapshot, journal = setup
    node = JournalStore(snapshot, journal)
    node.mark_running(run_id, pid=1, host="n")
    node.finish_run(run_id, Status.CANCELLED, exit_code=130, reason="received SIGTERM")
    node.close()
    assert outcome(journal).status == Status.CANCELLED
    node = JournalStore(snapshot, journal)  # requeued: running again, then it fails
    assert node.run(run_id).status == Status.CANCELLED
    node.mark_running(run_id, pid=2, host="n")
    assert node.run(run_id).status == Status.RUNNING
    node.finish_run(run_id, Status.FAILED, exit_code=1, reason="ValueError: bad")
    node.close()
    said = outcome(journal)
    assert (said.status, said.exit_code, said.reason, said.attempts) == (Status.FAILED, 1, "ValueError: bad", 2)


def test_a_journal_cannot_write_another_run(setup: tuple[Store, int, Path, Path]) -> None:
    store, run_id, _snapshot, journal = setup
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text(json.dumps({"op": "metrics", "run": run_id + 1, "step": 1, "values": {"loss": 1.0}}) + "\n")
    with pytest.raises(ValueError, match="a record about run"):
        ingest(store, _with_journal(store, run_id, journal))
    assert not store.metrics(run_id + 1) or store.metrics(run_id + 1)[0].value == 9.0
    assert store.run(run_id).journal_offset == 0, "nothing of it was taken"


def test_the_snapshot_holds_the_run_and_the_lineage_not_other_runs_rows(setup: tuple[Store, int, Path, Path]) -> None:
    _store, run_id, snapshot, _ = setup
    with Store(snapshot) as copy:
        assert {r.name for r in copy.runs()} == {"r", "other"}
        assert copy.metrics(run_id + 1) == []


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "healer.db")
    run = store.create_run(kind="sft", method="sft", name="r", spec={}, queued=1)
    follower = FollowerStore(Store(tmp_path / "healer.db"))
    assert follower.mark_running(run.id, pid=1, host="h")
    follower.log_metrics(run.id, 1, {"loss": 1.0})
    follower.add_checkpoint(run.id, 1, "/x")
    follower.finish_run(run.id, Status.FAILED, exit_code=1)
    assert follower.rewind(run.id, 0) == {}
    assert store.metrics(run.id) == [] and store.checkpoints(run.id) == []
    assert store.run(run.id).status == Status.QUEUED
    assert follower.run(run.id).name == "r", "reads go through"
    store.cancel(run.id, "x")
    assert not follower.mark_running(run.id, pid=1, host="h"), "a cancelled run is not begun by any rank"
