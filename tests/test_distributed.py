"""train.num_processes > 1: the run under `accelerate launch` (gloo processes on a machine without GPUs), only its
main process writing; the command line per strategy; vLLM asked for where it cannot run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from healer import paths
from healer.errors import HealerError
from healer.runner import train_command
from healer.store import Status, Store
from tests.conftest import healer

TINY = ["--set", "task.n_train=300", "--set", "train.batch_size=16", "--set", "task.eval_n=20",
        "--set", "eval.batch_size=20", "--set", "train.logging_steps=1"]  # fmt: skip


def queued(*overrides: str) -> int:
    args = ["queue", "add", "presets/tiny-sft.toml", *TINY, *[x for o in overrides for x in ("--set", o)], "--json"]
    return json.loads(healer(*args, check=True).stdout)["id"]


def test_one_process_is_the_plain_module_and_several_go_through_accelerate() -> None:
    single, multi = queued(), queued("train.num_processes=2")
    fsdp = queued("train.num_processes=4", "distributed.strategy=fsdp")
    with Store(paths.db_path()) as store:
        assert train_command(store.run(single))[1:] == ["-m", "healer.train", str(single)]
        cpu = train_command(store.run(multi), gpus=0)
        on_gpus = train_command(store.run(fsdp), gpus=4)
        on_cpu = train_command(store.run(fsdp), gpus=0)
    assert cpu[1:3] == ["-m", "accelerate.commands.launch"] and cpu[-3:] == ["-m", "healer.train", str(multi)]
    assert cpu[cpu.index("--num_processes") + 1] == "2" and "--multi_gpu" in cpu  # gloo; --cpu would run one
    assert "--use_fsdp" in on_gpus and on_gpus[on_gpus.index("--fsdp_state_dict_type") + 1] == "FULL_STATE_DICT"
    assert on_gpus[on_gpus.index("--num_processes") + 1] == "4"
    assert "--use_fsdp" not in on_cpu and "--multi_gpu" in on_cpu, "on CPU only data parallelism exists"
    assert cpu[cpu.index("--main_process_port") + 1] != on_gpus[on_gpus.index("--main_process_port") + 1]


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="DeepSpeed is installed here")
def test_zero_without_deepspeed_is_one_clear_line() -> None:
    run_id = queued("train.num_processes=2", "distributed.strategy=zero3")
    with Store(paths.db_path()) as store, pytest.raises(HealerError, match="needs DeepSpeed: `pip install deepspeed`"):
        train_command(store.run(run_id), gpus=2)


def test_bad_distributed_keys_are_refused_by_name() -> None:
    for override, said in (("train.num_processes=0", "train.num_processes must be at least 1"),
                           ("distributed.strategy=zero4", "distributed.strategy = 'zero4' is not one of")):  # fmt: skip
        result = healer("queue", "add", "presets/tiny-sft.toml", "--set", override)
        assert result.returncode != 0 and said in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
@pytest.mark.slow
def test_vllm_asked_for_without_it_fails_the_run_in_one_line(healer_home: Path) -> None:
    result = healer("run", "presets/tiny-sft.toml", *TINY, "--set", "train.max_steps=2", "--set",
                    "eval.backend=vllm", timeout=400)  # fmt: skip
    assert result.returncode != 0
    with Store(paths.db_path()) as store:
        run = store.runs()[0]
    assert run.status == Status.FAILED
    assert run.reason.startswith("eval.backend asks for vLLM, which is not installed"), run.reason
    assert "Traceback" not in Path(run.log_path).read_text()


@pytest.mark.slow
def test_two_gloo_processes_train_one_run_and_only_the_main_one_writes(healer_home: Path) -> None:
    result = healer("run", "presets/tiny-sft.toml", *TINY, "--set", "train.max_steps=6", "--set",
                    "train.save_steps=3", "--set", "train.num_processes=2", timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with Store(paths.db_path()) as store:
        run = store.runs()[0]
        loss = store.metrics(run.id, "loss")
        rows = store.metrics(run.id)
        checkpoints = store.checkpoints(run.id)
        evals = store.evals(run.id)
        started = store.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    log = Path(run.log_path).read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" in log and "reads the store, writes nothing" in log
    assert run.status == Status.DONE and started == 1
    assert [m.step for m in loss] == [1, 2, 3, 4, 5, 6]
    assert len({(m.step, m.name) for m in rows}) == len(rows)
    assert [c.step for c in checkpoints] == [3, 6] and all(Path(c.path, "model.safetensors").exists()
                                                           for c in checkpoints)  # fmt: skip
    assert sorted({(e.step, e.split) for e in evals}) == [(s, p) for s in (0, 3, 6) for p in ("id", "ood")]
    assert log.count(f"healer: run {run.id} done") == 1
    # a step takes a batch of 16 on each process: 300 examples are an epoch of 10 steps, not of 19 as on one
    epoch = next(m.value for m in rows if m.name == "epoch" and m.step == 6)
    assert epoch == pytest.approx(6 / 10)


def test_the_worker_reserves_every_gpu_of_a_multi_process_run(tmp_path: Path) -> None:
    import subprocess

    from healer.presets import load_preset
    from healer.runner import create_run
    from healer.worker import Child, Worker

    store = Store(tmp_path / "h.db")
    wide = create_run(store, load_preset("tiny-sft", ["train.num_processes=3"]), queued=1)
    narrow = create_run(store, load_preset("tiny-sft"), queued=1)
    free = {g: (0, 80000) for g in "0123"}
    work = Worker(store, list("0123"), 4, say=lambda line: None, memory=lambda: free)
    assert work._slot_gpus(wide) == ["0", "1", "2"]
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        work.children.append(Child([wide.id], sleeper, ["0", "1", "2"]))
        assert work._slot_gpus(narrow) == ["3"], "none of the three held GPUs goes to another run"
        assert work._slot_gpus(wide) is None, "a second 3-GPU run waits for its GPUs"
        assert Worker(store, ["0", "1"], 2, say=lambda line: None, memory=lambda: free)._slot_gpus(wide) is None
        assert store.run(wide.id).status == Status.FAILED and "asks for 3 GPUs" in store.run(wide.id).reason
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_preset_s_slurm_table_becomes_the_job_s_sbatch_lines(tmp_path: Path) -> None:
    from healer.slurm import _executor, job_parameters

    plain = queued()
    sized = queued("slurm.time=1-12:00:00", "slurm.gpus=4", "slurm.cpus=16", "slurm.mem=256G",
                   "slurm.constraint=h100", "slurm.partition=gpu", 'slurm.extra=["--qos=high", "--exclusive"]',
                   'slurm.setup=["module load cuda"]', "train.num_processes=4")  # fmt: skip
    with Store(paths.db_path()) as store:
        defaults = job_parameters(store.run(plain))
        asked = job_parameters(store.run(sized), account="proj")
    assert "gpus_per_node" not in defaults and "time" not in defaults, "no GPUs and no time limit unless asked"

    def sbatch(parameters: dict) -> list[str]:
        executor = _executor(tmp_path, time_limit="time" in parameters)
        executor.update_parameters(**parameters)
        return executor._make_submission_file_text("python -m x", "uid").splitlines()

    lines = sbatch(asked)
    for flag in ("--time=1-12:00:00", "--gpus-per-node=4", "--cpus-per-task=16", "--mem=256G", "--constraint=h100",
                 "--partition=gpu", "--account=proj", "--qos=high", "--exclusive", "--job-name=healer-"):  # fmt: skip
        assert any(line.startswith(f"#SBATCH {flag}") for line in lines), (flag, lines)
    assert "module load cuda" in lines
    assert not any(line.startswith("#SBATCH --time") for line in sbatch(defaults)), "submitit's 5 minutes, gone"
    for bad, said in (("slurm.time=soon", "slurm.time = 'soon'"), ("slurm.mem=lots", "slurm.mem = 'lots'"),
                      ('slurm.extra=["qos high"]', "slurm.extra: 'qos high' is not one sbatch option")):  # fmt: skip
        result = healer("queue", "add", "presets/tiny-sft.toml", "--set", bad)
        assert result.returncode != 0 and said in result.stderr and "Traceback" not in result.stderr


def test_a_job_s_end_and_the_run_s_last_words_give_its_verdict(tmp_path: Path) -> None:
    from healer.slurm import JobState, verdict
    from healer.store.journal import JournalStore, take_snapshot

    store = Store(tmp_path / "h.db")
    run = store.create_run(kind="sft", method="sft", name="r", spec={}, slurm_job="77", log_path=str(tmp_path / "l"))
    journal = tmp_path / "journal.jsonl"
    store._set(run.id, journal=str(journal))
    (tmp_path / "l").write_text("step 5\nKilled\n")
    run = store.run(run.id)
    assert verdict(run, JobState("COMPLETED", 0, "n1"))[0] == Status.DONE
    silent = verdict(run, JobState("OUT_OF_MEMORY", 137, "n1"))
    assert silent[0] == Status.FAILED and silent[1] == 137
    assert silent[2].startswith("slurm job 77 OUT_OF_MEMORY (exit code 137)") and "Killed" in silent[2]
    node = JournalStore(take_snapshot(store, run.id, tmp_path / "s.db"), journal)
    node.mark_running(run.id, pid=1, host="n1")
    node.finish_run(run.id, Status.CANCELLED, exit_code=130, reason="received SIGTERM")
    node.close()
    timeout = verdict(run, JobState("TIMEOUT", 0, "n1"))
    assert timeout[0] == Status.FAILED and "TIMEOUT" in timeout[2] and "received SIGTERM" in timeout[2]
    cancelled = verdict(run, JobState("CANCELLED", 143, "n1"))
    assert cancelled[0] == Status.CANCELLED and cancelled[2] == "slurm job 77 cancelled (received SIGTERM)"


def test_the_slurm_executor_without_slurm_is_one_clear_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no sbatch, sacct, scancel on it
    result = subprocess.run([sys.executable, "-m", "healer", "worker", "--executor", "slurm"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "`sbatch` is not on PATH" in result.stderr
    for args, said in ((["--executor", "pbs"], "--executor 'pbs': use local or slurm"),
                       (["--partition", "gpu"], "--partition and --account are for --executor slurm")):  # fmt: skip
        result = healer("worker", *args)
        assert result.returncode != 0 and said in result.stderr and "Traceback" not in result.stderr
