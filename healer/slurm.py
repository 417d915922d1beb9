"""`healer worker --executor slurm`: each claimed run becomes a Slurm job, submitted through submitit.

The job executes the same entry point as a local run (`python -m healer.train RUN_ID`, under `accelerate launch`
for several processes) on a cluster node, with a snapshot of the store to read and a run-local journal to write
(healer.store.journal: no SQLite over NFS). The worker that submitted it asks Slurm (sacct) for the job's state,
ingests the journal as it grows, stamps the run's heartbeat, and gives the run its verdict when the job ends: in the
run's own words when it got to say them (its last `finished` record), else in Slurm's (TIMEOUT, OUT_OF_MEMORY, ...).
A job that Slurm requeues (preemption, `scontrol requeue`, submitit's requeue before the time limit) starts again on
a node, replays its journal and resumes from its newest checkpoint; the rewind it journals keeps the metrics free of
duplicates. The job's output file is the run's log, so `healer queue logs -f` follows it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healer.errors import HealerError
from healer.store import Run, Status, Store

SACCT_EVERY_S = 2.0  # one sacct call for all watched jobs at most this often
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "REVOKED"}  # fmt: skip


def require_slurm() -> None:
    """A clear one-line error when this machine cannot submit Slurm jobs through submitit."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise HealerError(
            "--executor slurm needs submitit: pip install 'healer[slurm]' (or pip install submitit)"
        ) from None
    for command in ("sbatch", "sacct", "scancel"):
        if shutil.which(command) is None:
            raise HealerError(f"--executor slurm: `{command}` is not on PATH; run the worker on a Slurm login node")
    probe = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        why = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["no answer"]
        raise HealerError(f"--executor slurm: sacct fails ({why[0]}); healer reads job states from Slurm's "
                          "accounting (slurmdbd), which this cluster must run")  # fmt: skip


class RunJob:
    """What a Slurm job executes (pickled by submitit): the run's process, its output into the job's output file.

    Checkpointable: before the time limit (submitit's USR2 signal) the job is requeued, and the next attempt resumes
    from the newest checkpoint its journal recorded."""

    def __init__(self, run_id: int, db: str, journal: str, snapshot: str) -> None:
        self.run_id, self.db, self.journal, self.snapshot = run_id, db, journal, snapshot

    def __call__(self) -> int:
        from healer.runner import train_command, visible_gpus

        env = {**os.environ, "HEALER_DB": self.db, "HEALER_JOURNAL": self.journal, "HEALER_SNAPSHOT": self.snapshot,
               "PYTHONUNBUFFERED": "1"}  # fmt: skip
        command = train_command(snapshot_run(self.snapshot, self.run_id), gpus=visible_gpus(env))
        attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) + 1
        print(f"healer: slurm job {os.environ.get('SLURM_JOB_ID')} on {os.uname().nodename}, attempt {attempt}: "
              f"{' '.join(command)}", flush=True)  # fmt: skip
        code = subprocess.call(command, env=env)
        if code:
            sys.exit(code if code > 0 else 128 - code)  # the job's exit code is the run's (a signal N: 128 + N)
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(RunJob(self.run_id, self.db, self.journal, self.snapshot))


def snapshot_run(snapshot: str, run_id: int) -> Run:
    """The run's row in the snapshot its job was submitted with (read-only, immutable: safe on NFS)."""
    import sqlite3

    from healer.store.records import record

    conn = sqlite3.connect(f"{Path(snapshot).resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return record(Run, conn.execute("SELECT * FROM runs WHERE id = ?", [run_id]).fetchone())
    finally:
        conn.close()


@dataclass
class JobState:
    state: str  # PENDING, RUNNING, COMPLETED, ... (the first word: "CANCELLED by 0" -> CANCELLED)
    exit_code: int | None  # the job's exit code (sacct ExitCode "3:0" -> 3; killed by signal N -> 128 + N)
    node: str | None


def job_states(job_ids: list[str]) -> dict[str, JobState]:
    """The states of these jobs from one sacct call (accounting: it knows ended jobs too); a job sacct does not list
    yet (submitted a moment ago) is missing from the answer."""
    if not job_ids:
        return {}
    fields = "JobIDRaw,State,ExitCode,NodeList"
    result = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", fields], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    states: dict[str, JobState] = {}
    for line in result.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 4:
            continue
        job, state, exit_text, nodes = parts[:4]
        code, _, signal = exit_text.partition(":")
        exit_code = 128 + int(signal) if signal.isdigit() and int(signal) else (int(code) if code.isdigit() else None)
        node = nodes if nodes and nodes not in ("None assigned", "(null)") else None
        states[job] = JobState(state.split()[0] if state else "UNKNOWN", exit_code, node)
    return states


class SlurmExecutor:
    """Submits claimed runs as Slurm jobs and watches them for a worker."""

    def __init__(self, store: Store, partition: str = "", account: str = "", say: Any = print) -> None:
        require_slurm()
        self.store, self.say = store, say
        self.problems: set[str] = set()
        self.partition, self.account = partition, account
        self._asked = 0.0
        self._states: dict[str, JobState] = {}

    def submit(self, run: Run) -> Run:
        """Snapshot the store for the run, submit its job, and record the job in the run's row."""
        from healer.store.journal import take_snapshot

        assert run.out_dir
        folder = Path(run.out_dir) / "slurm"
        journal = Path(run.out_dir) / f"journal-{run.id}.jsonl"  # checkpoint jobs share their run's jobs/ folder
        self.store.slurm_prepared(run.id, str(journal))  # in the snapshot too
        snapshot = take_snapshot(self.store, run.id, folder / f"store-{run.id}.db")
        parameters = self.parameters(run)
        executor = _executor(folder, time_limit="time" in parameters)
        executor.update_parameters(**parameters)
        job = executor.submit(RunJob(run.id, str(self.store.path), str(journal), str(snapshot)))
        log = str(job.paths.stdout)
        self.store.slurm_submitted(run.id, str(job.job_id), log)
        return self.store.run(run.id)

    def parameters(self, run: Run) -> dict[str, Any]:
        return job_parameters(run, self.partition, self.account)

    def states(self, job_ids: list[str]) -> dict[str, JobState]:
        """sacct's answer for these jobs, asked at most every SACCT_EVERY_S seconds."""
        if time.monotonic() - self._asked >= SACCT_EVERY_S:
            self._asked = time.monotonic()
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):  # busy: ask again at the next poll
                self._states.update(job_states(job_ids))
        return {j: self._states[j] for j in job_ids if j in self._states}

    def watch(self, run: Run, state: JobState | None) -> tuple[Run, bool]:
        """Ingest what the job's run wrote, record the job's state and stamp the run; True once the job ended (the
        run then has its verdict). A job sacct does not know yet is pending."""
        if not self._ingest(run) or state is None:
            return self.store.run(run.id), False
        ended = state.state in ENDED
        self.store.slurm_observed(run.id, state.state, state.node, alive=not ended)
        if ended:
            self._ingest(self.store.run(run.id))  # what it wrote between the last poll and its end
            status, exit_code, reason = verdict(self.store.run(run.id), state)
            self.store.finish_run(run.id, status, exit_code=exit_code, reason=reason)
        return self.store.run(run.id), ended

    def _ingest(self, run: Run) -> bool:
        """Ingest the run's journal; a journal that cannot be read is reported (once per problem), not fatal: the
        worker goes on watching its other jobs, and the next poll tries again."""
        from healer.store.journal import ingest

        try:
            ingest(self.store, run)
        except (OSError, ValueError, KeyError, TypeError, sqlite3.Error) as exc:
            problem = f"run {run.id}: its journal {run.journal} could not be ingested: {type(exc).__name__}: {exc}"
            if problem not in self.problems:
                self.problems.add(problem)
                self.say(f"worker: {problem}")
            return False
        return True


def job_parameters(run: Run, partition: str = "", account: str = "") -> dict[str, Any]:
    """submitit's SlurmExecutor parameters from the run's [slurm] table and the worker's --partition/--account."""
    from healer.runner import num_processes

    slurm = run.spec_dict.get("slurm", {})
    gpus = int(slurm.get("gpus", -1))
    if gpus < 0:  # the GPUs asked at `queue add --gpus N`, else one per process of a run on device = "cuda"
        cuda = run.spec_dict.get("device") == "cuda"
        gpus = run.gpus if run.gpus is not None else (num_processes(run) if cuda else 0)
    extra: dict[str, Any] = {}
    for line in slurm.get("extra", []):
        key, _, value = line.lstrip("-").partition("=")
        extra[key] = value if value else True
    parameters: dict[str, Any] = {
        "job_name": f"healer-{run.id}",
        "stderr_to_stdout": True,
        "setup": list(slurm.get("setup", [])),
        "additional_parameters": extra,
    }
    limit = str(slurm.get("time", ""))
    if limit.isdigit():
        parameters["time"] = int(limit)
    elif limit:
        parameters["time"], extra["time"] = 0, limit  # D-HH:MM:SS, as sbatch takes it
    for key, value in (("partition", partition or slurm.get("partition", "")),
                       ("account", account or slurm.get("account", "")),
                       ("mem", slurm.get("mem", "")), ("constraint", slurm.get("constraint", ""))):  # fmt: skip
        if value:
            parameters[key] = value
    if gpus:
        parameters["gpus_per_node"] = gpus
    if int(slurm.get("cpus", 0)):
        parameters["cpus_per_task"] = int(slurm["cpus"])
    return parameters


def cancel_job(run: Run) -> None:
    """scancel the run's job (Slurm sends SIGTERM, then SIGKILL after its KillWait)."""
    if not run.slurm_job:
        return
    result = subprocess.run(["scancel", run.slurm_job], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise HealerError(f"run {run.id}: scancel {run.slurm_job} failed: {result.stderr.strip() or result.stdout}")


def verdict(run: Run, state: JobState) -> tuple[Status, int | None, str | None]:
    """A run's final status from its job's end and its own last words (the journal's last `finished` record)."""
    from healer.runner import tail_reason
    from healer.store.journal import outcome

    said = outcome(run.journal)
    job = f"slurm job {run.slurm_job}"
    if state.state == "COMPLETED":
        if said.status in (None, Status.DONE):
            return Status.DONE, 0, None
        return said.status, said.exit_code, said.reason
    if state.state == "CANCELLED":
        return Status.CANCELLED, state.exit_code, f"{job} cancelled" + (f" ({said.reason})" if said.reason else "")
    if state.state == "FAILED" and said.status == Status.FAILED:
        return Status.FAILED, said.exit_code if said.exit_code is not None else state.exit_code, said.reason
    ran = f"; it said: {said.reason}" if said.reason else f"; {tail_reason(run.log_path)}"
    return Status.FAILED, state.exit_code, f"{job} {state.state} (exit code {state.exit_code}){ran}"


def _executor(folder: Path, time_limit: bool) -> Any:
    """submitit's SlurmExecutor, without its 5-minute default time limit when the preset sets none."""
    import submitit

    class Executor(submitit.SlurmExecutor):
        def _make_submission_file_text(self, command: str, uid: str) -> str:
            text = super()._make_submission_file_text(command, uid)
            if time_limit:
                return text
            return "\n".join(line for line in text.splitlines() if not line.startswith("#SBATCH --time="))

    return Executor(folder=folder)


def describe_submit_error(exc: Exception) -> str:
    """sbatch's own complaint (submitit wraps it in a multi-line message), on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if "error" in line.lower()] or lines or [type(exc).__name__]
    return said[-1][:500]
