"""`healer queue ...` and `healer worker`: queue runs headless and have a worker run them, pueue-style."""

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from healer import queue
from healer.cli.common import (
    App,
    Column,
    WideOption,
    err,
    open_reader,
    open_store,
    out,
    print_json,
    print_table,
    show_wide,
)
from healer.errors import HealerError
from healer.presets import load_preset, renamed
from healer.runner import CANCEL_GRACE_S
from healer.store import FINISHED, JOB_KINDS, Status, Store, process_gone
from healer.store.views import QueueRow
from healer.text import duration, progress, starts_from

app = App(help="Queue runs for a worker: add, ls, cancel, retry, priority, logs, pause, resume, rm.")
RunArgument = Annotated[str, typer.Argument(help="run id or name")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


@app.command("add")
def add(
    preset: Annotated[str, typer.Argument(help="preset file or name")],
    start: Annotated[
        str | None, typer.Option("--from", help="start from RUN@STEP (waits for it), RUN@peak-ood|last (waits for RUN)")
    ] = None,
    after: Annotated[str | None, typer.Option(help="start only after this run is done")] = None,
    priority: Annotated[int, typer.Option(help="higher runs first; ties go oldest first")] = 0,
    gpus: Annotated[int | None, typer.Option(help="GPUs for the run (default: 1 on a GPU box, 0 on CPU)")] = None,
    name: Annotated[str | None, typer.Option(help="run name (default: the preset's)")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", "-s", help="override a preset key")] = None,
    json_out: JsonOption = False,
) -> None:
    """Queue a run; the preset and every reference are checked now."""
    loaded = renamed(load_preset(preset, overrides or []), name)
    store = open_store()
    run = queue.add(store, loaded, start=start, after=after, priority=priority, gpus=gpus)
    if json_out:
        print_json(open_reader().queue_row(run.id))
        return
    waiting = queue.wait_for(store, run)
    out.print(f"queued run {run.id} ({run.name})" + (f"; waits for {waiting.reason}" if waiting else ""),
              markup=False)  # fmt: skip
    if not _worker_hint(store):
        err.print("no worker is running; start one with `healer worker` (see `healer worker --help`)", markup=False)


def _worker_hint(store: Store) -> bool:
    """Whether a worker polled the queue in the last 30 seconds."""
    from healer.worker import WORKER_PREFIX

    return any(time.time() - float(t) < 30 for t in store.settings(WORKER_PREFIX).values())


@app.command("ls")
def ls(
    show_all: Annotated[
        bool, typer.Option("--all", help="finished evaluation jobs too (--json always has them)")
    ] = False,
    wide: WideOption = False,
    json_out: JsonOption = False,
) -> None:
    """The queue: waiting, running and finished runs with GPUs, progress, elapsed time, ETA and what they wait for."""
    show_wide(wide)
    reader = open_reader()
    rows = reader.queue()
    if json_out:
        print_json(rows)
        return
    if reader.setting(queue.PAUSED, "0") == "1":
        err.print("the queue is paused: workers start nothing new (`healer queue resume`)", markup=False)
    if not rows:
        err.print("the queue is empty; add runs with `healer queue add PRESET`", markup=False)
        return
    shown = [r for r in rows if show_all or not (r.kind in JOB_KINDS and r.status == Status.DONE)]
    columns = [Column("id", justify="right"), Column("name", cut=True), Column("status"),
               Column("prio", justify="right", drop=4), Column("gpus", drop=3), Column("step", justify="right"),
               Column("elapsed", justify="right", drop=2), Column("eta", justify="right", drop=1),
               Column("from", drop=1), Column("note", fold=True)]  # fmt: skip
    print_table(
        columns,
        [[r.id, r.name, r.status + (" (dead)" if r.alive is False else ""), r.priority,
          _where(r), _step(r), duration(r.elapsed_s), duration(r.eta_s), starts_from(r),
          r.waiting_for or r.reason or ("its process is gone" if r.alive is False else "")] for r in shown],
    )  # fmt: skip
    if len(shown) < len(rows):
        err.print(f"{len(rows) - len(shown)} finished checkpoint jobs not shown (--all shows them)", markup=False)


def _step(row: QueueRow) -> str:
    return "" if row.kind in JOB_KINDS else progress(row.step, row.total_steps)


def _where(row: QueueRow) -> str:
    """The gpus column: the GPUs a local run holds, or its Slurm job (`slurm:1234`) once submitted."""
    if row.slurm_job:
        return f"slurm:{row.slurm_job}"
    return row.assigned_gpus or _gpus(row.gpus)


def _gpus(wanted: int | None) -> str:
    return "auto" if wanted is None else str(wanted)


@app.command("cancel")
def cancel(
    ref: RunArgument,
    grace: Annotated[float, typer.Option(help="seconds between SIGTERM and SIGKILL")] = CANCEL_GRACE_S,
) -> None:
    """Cancel a waiting run, or stop a running one: SIGTERM, then SIGKILL after the grace period."""
    store = open_store()
    run = store.find_run(ref)
    said = queue.cancel_run(store, run, grace, on_kill=lambda: err.print(
        f"run {run.id} did not stop within {grace:g} s; killing it", markup=False))  # fmt: skip
    out.print(said, markup=False)


@app.command("retry")
def retry(ref: RunArgument) -> None:
    """Queue a failed or cancelled run again under the same id; it resumes from its newest checkpoint that holds the
    trainer's state, and what it logged after that step is dropped."""
    store = open_store()
    out.print(queue.retry_run(store, store.find_run(ref)), markup=False)


@app.command("priority")
def priority(
    ref: RunArgument,
    value: Annotated[int, typer.Argument(metavar="PRIORITY", help="higher runs first; ties go oldest first")],
) -> None:
    """Change a waiting run's priority."""
    store = open_store()
    out.print(queue.set_priority(store, store.find_run(ref), value), markup=False)


@app.command("logs")
def logs(
    ref: RunArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the run ends")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="lines from the end to start with (0: all)")] = 40,
) -> None:
    """Print a run's log; -f follows it while the run runs."""
    reader = open_reader()
    run = reader.find_run(ref)
    path = Path(run.log_path or "")
    if (not run.log_path or not path.exists()) and not follow:
        raise HealerError(f"run {run.id} has no log yet ({run.status})")
    offset = 0
    if path.exists():
        text = path.read_text(errors="replace")
        tail = text.splitlines(keepends=True)[-lines:] if lines else [text]
        sys.stdout.write("".join(tail))
        offset = len(text.encode(errors="replace"))
    while follow:
        run = reader.find_run(run.id)
        if path.exists():
            with open(path, "rb") as log:
                log.seek(offset)
                chunk = log.read()
            offset += len(chunk)
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        if run.status in FINISHED or process_gone(run):
            break
        time.sleep(0.5)


@app.command("pause")
def pause() -> None:
    """Workers start nothing new until `healer queue resume`; running runs go on."""
    open_store().set_setting(queue.PAUSED, "1")
    out.print("queue paused")


@app.command("resume")
def resume() -> None:
    """Workers start queued runs again."""
    open_store().set_setting(queue.PAUSED, "0")
    out.print("queue resumed")


@app.command("rm")
def rm(ref: RunArgument) -> None:
    """Remove a run that has not started; a finished run leaves the queue list but keeps its data."""
    store = open_store()
    run = store.find_run(ref)
    if run.status == Status.RUNNING:
        raise HealerError(f"run {run.id} is running; `healer queue cancel {run.id}` first")
    waiting_on_it = [r.id for r in store.waiting_on(run.id)]
    if waiting_on_it:
        raise HealerError(f"runs {', '.join(map(str, waiting_on_it))} wait for run {run.id}; remove them first")
    if run.status == Status.QUEUED:
        store.delete_run(run.id)
        out.print(f"run {run.id} removed", markup=False)
    else:
        store.leave_queue(run.id)
        out.print(f"run {run.id} ({run.status}) left the queue; `healer runs show {run.id}` still has it", markup=False)


SLURM_JOBS = 64  # --executor slurm: jobs in Slurm's queue at once, unless --max-parallel says otherwise


def worker(
    gpus: Annotated[str, typer.Option(help="auto (every GPU nvidia-smi lists), none, or indices such as 0,1")] = "auto",
    max_parallel: Annotated[
        int | None, typer.Option(help="runs at once (default: one per GPU, or 1 on a CPU-only machine)")
    ] = None,
    eval_policy: Annotated[
        str,
        typer.Option(
            help="evaluation jobs: share (beside the runs, on a free GPU or on the GPU of the run they evaluate when "
            "nvidia-smi says the checkpoint fits), wait (they take a slot, between runs), cpu (beside the runs, on "
            "the CPU); auto = share on a GPU box, wait on a CPU-only one"
        ),
    ] = "auto",
    max_evals: Annotated[int, typer.Option(help="evaluation processes at once beside the runs")] = 1,
    exit_when_idle: Annotated[bool, typer.Option(help="exit once nothing is queued or running")] = False,
    install_service: Annotated[
        bool, typer.Option(help="write a systemd --user unit that runs this worker (with these options) and exit")
    ] = False,
    executor: Annotated[
        str, typer.Option(help="local (a subprocess per run, here) or slurm (a Slurm job per run, via submitit)")
    ] = "local",
    partition: Annotated[str, typer.Option(help="--executor slurm: the partition (overrides the preset's)")] = "",
    account: Annotated[str, typer.Option(help="--executor slurm: the account (overrides the preset's)")] = "",
) -> None:
    """Run queued runs: claim those whose dependencies are met, one subprocess each, on free GPUs.

    It keeps running after you log out when started with `nohup healer worker > worker.log 2>&1 &`, inside tmux,
    or as a systemd --user service (--install-service writes one). Stopping it (Ctrl-C, SIGTERM) leaves running
    runs running.
    """
    from healer.worker import Worker, parse_gpus
    from healer.worker import install_service as write_unit

    def say(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    if executor not in ("local", "slurm"):
        raise HealerError(f"--executor {executor!r}: use local or slurm")
    if executor == "local" and (partition or account):
        raise HealerError("--partition and --account are for --executor slurm")
    store = open_store()
    slurm = None
    if executor == "slurm":
        from healer.slurm import SlurmExecutor

        slurm = SlurmExecutor(store, partition=partition, account=account, say=say)
    pool = [] if slurm else parse_gpus(gpus)
    parallel = max_parallel if max_parallel is not None else (SLURM_JOBS if slurm else max(1, len(pool)))
    if parallel < 1:
        raise HealerError("--max-parallel must be at least 1")
    if install_service:
        arguments = ["--gpus", gpus, "--eval-policy", eval_policy, "--max-evals", str(max_evals)]
        arguments += ["--max-parallel", str(max_parallel)] if max_parallel is not None else []
        arguments += ["--exit-when-idle"] if exit_when_idle else []
        if executor != "local":
            arguments += ["--executor", executor, *(["--partition", partition] if partition else []),
                          *(["--account", account] if account else [])]  # fmt: skip
        unit = write_unit(str(store.path), arguments)
        out.print(f"wrote {unit}", markup=False)
        err.print("start it now and at every boot: systemctl --user daemon-reload && systemctl --user enable --now "
                  "healer-worker; keep it running after you log out: loginctl enable-linger $USER; its output: "
                  "journalctl --user -u healer-worker -f", markup=False)  # fmt: skip
        return

    work = Worker(store, pool, parallel, exit_when_idle=exit_when_idle, say=say, eval_policy=eval_policy,
                  max_evals=max_evals, executor=slurm)  # fmt: skip
    raise typer.Exit(work.run())


def register(root: App) -> None:
    root.add_typer(app, name="queue")
    root.command("worker")(worker)
