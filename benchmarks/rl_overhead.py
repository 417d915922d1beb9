"""How much does healer slow down GRPO? Steps/s of TRL's GRPOTrainer through healer against the bare trainer.

The same GRPOTrainer (healer's tiny model on CPU, the config of healer/train/rl.py with presets/tiny-grpo.toml,
made smaller) trains in two variants in one process, in interleaved repetitions after a discarded warm-up pair:
  - bare: a plain reward function, `[task.score(examples[i], c[0]["content"]).reward for ...]`, as a TRL user
    would write it, and no callback of healer's;
  - healer: healer's `reward_functions` (TaskReward: the same verifier, plus the outcome shares and the
    format-error rate through `log_metric`) and `StoreCallback` writing every log to a real SQLite store.
Every repetition loads the same saved weights through `from_pretrained`, with the same seed and the same
prompts; neither reward draws random numbers, so both variants sample the very same completions (the script
checks the logged completion lengths). `logging_steps=1` is the worst case for healer (one store transaction
per optimizer step); no checkpoints are saved and no evaluation runs, since neither is overhead. The trainer's
own PrinterCallback is removed in both variants. The tiny model is untrained (random weights): most completions
run to max_completion_length, which keeps the step time steady, and nearly every reward is 0 (no sum at all).
That is fine here: both variants run the same verifier on the same completions, so what it costs cancels out,
and what healer adds (the outcome shares, the store write) does not depend on the verdicts.

Three measures:
  - interleaved steps (the headline and the goal): two more trainers in which healer's reward and StoreCallback
    are active on every other step only (the odd steps in one, the even steps in the other), the bare reward on
    the rest; the median, over all healer steps, of each one's period against the mean of its two bare
    neighbours' (the ratio of the two medians is printed too). Neighbouring steps see the same machine, so
    drift and noisy neighbours cancel far better than between whole repetitions, and since both trainers sample
    the same completions, every step's prompts and completion lengths are timed once each way;
  - step period: the time from one `on_step_begin` to the next, which holds the step's generation, rewards,
    update and `on_log` (so the store write); the median over all steps of a variant shrugs off the stalls of a
    shared VM;
  - train loop: steps / wall time of `trainer.train()`, everything included but at the mercy of those stalls.
The interleaved trainers also give the neighbour ratio in CPU time of the process, which other processes on the
machine cannot inflate; the store commits in WAL mode with synchronous=NORMAL (no fsync), so it misses little.
The pairs alternate their order (AB, BA, AB, ...) so a slow drift of the machine cancels out; one torch thread
by default, since with two on a 2-vCPU VM a preempted thread stalls the other.

Beside them the script times what healer adds per step on its own: its reward against the plain one on a real
batch of completions, and `Store.log_metrics` with a real GRPO log.

    .venv/bin/python benchmarks/rl_overhead.py [--pairs 2] [--steps 50] [--interleaved-steps 50] [--threads 1]

About 2 to 3 minutes on 2 CPU cores with the defaults.

It always exits 0: the goal line (overhead <= 3 %) is a report, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from _shared import (
    Bench,
    Repetition,
    StepTimer,
    fresh_model,
    labelled,
    median_ms,
    median_steps_per_s,
    metric_rows,
    percents,
    periods,
    pooled_step_ms,
    quiet_setup,
    run_pairs,
    time_log_metrics,
    timed_train,
    variants,
    work_dir,
)
from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from healer.presets import RunSpec
from healer.store import Store
from healer.tasks import Example, Task

GOAL_OVERHEAD_PCT = 3.0
PRESET = Path(__file__).resolve().parent.parent / "presets" / "tiny-grpo.toml"
LENGTH_KEY = "completions/mean_length"


class LoggedStepTimer(StepTimer):
    """A StepTimer that also keeps every per-step log, for the completion lengths."""

    def __init__(self) -> None:
        super().__init__()
        self.logs: list[dict[str, Any]] = []

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        logs = kwargs.get("logs")
        if logs and LENGTH_KEY in logs:  # the per-step logs, not the end-of-training summary
            self.logs.append(dict(logs))

    def lengths(self) -> list[float]:
        return [float(log[LENGTH_KEY]) for log in self.logs]


class EveryOtherStep(StepTimer):
    """Healer's reward and StoreCallback on every other step, the bare reward on the rest; labels each period.

    The trainer gets this object as its only reward function: it forwards to healer's reward on the healer steps
    and to the bare one otherwise. A step's on_log comes after its on_step_end and before the next on_step_begin,
    so the flag set at a step's begin still holds when its log is written. `healer_first` picks the phase: steps
    1, 3, 5, ... or 2, 4, 6, ...
    """

    __name__ = "task"  # the name TRL logs the reward under, as for healer's TaskReward

    def __init__(
        self, bare: Callable[..., list[float]], healer: Callable[..., list[float]], store_cb: Any, healer_first: bool
    ) -> None:
        super().__init__()
        self.bare = bare
        self.healer = healer
        self.store_cb = store_cb
        self.parity = 1 if healer_first else 0
        self.cpu_begins: list[float] = []  # CPU time of the process: blind to the time other processes take
        self.healer_step: list[bool] = []

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        super().on_step_begin(args, state, control, **kwargs)
        self.cpu_begins.append(time.process_time())
        self.healer_step.append(len(self.begins) % 2 == self.parity)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.healer_step and self.healer_step[-1]:
            self.store_cb.on_log(args, state, control, **kwargs)

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        active = self.healer if self.healer_step and self.healer_step[-1] else self.bare
        return active(prompts=prompts, completions=completions, **kwargs)

    def periods_of(self, healer: bool) -> list[float]:
        """The periods of the healer steps, or of the bare steps."""
        return labelled(self.periods(), self.healer_step, healer)

    def local_ratios(self, cpu: bool = False) -> list[float]:
        """Each healer step's period over the mean of its two bare neighbours' (a linear drift cancels)."""
        step = periods(self.cpu_begins if cpu else self.begins)
        return [step[i] / ((step[i - 1] + step[i + 1]) / 2) for i in range(1, len(step) - 1) if self.healer_step[i]]


@dataclass
class Interleaved:
    """Both phases of the interleaved trainer: every step index ran once with healer and once bare."""

    healer_periods: list[float]
    bare_periods: list[float]
    local_ratios: list[float]  # each healer step against its two bare neighbours, both phases
    cpu_ratios: list[float]  # the same in CPU time of the process
    phase_overheads: list[float]  # per phase, the median local ratio - 1, in %
    same_lengths: bool  # the two phases sampled the same completions, step by step

    @property
    def healer_ms(self) -> float:
        return median_ms(self.healer_periods)

    @property
    def bare_ms(self) -> float:
        return median_ms(self.bare_periods)


def bare_reward(task: Task, examples: list[Example]) -> Callable[..., list[float]]:
    """The reward function a TRL user would write: the task's verifier, nothing logged."""

    def reward(prompts: list[Any], completions: list[Any], example: list[int], **kwargs: Any) -> list[float]:
        return [task.score(examples[i], c[0]["content"]).reward for i, c in zip(example, completions, strict=True)]

    return reward


@dataclass
class GRPORepetition(Repetition):
    """A repetition, with the mean completion length of every step."""

    lengths: list[float] = field(default_factory=list)


@dataclass
class GRPOBench(Bench):
    """Everything the repetitions share: the saved model, tokenizer, dataset and store, plus the task's examples."""

    examples: list[Example]
    task: Task
    sample_batch: dict[str, Any] = field(default_factory=dict)  # one real reward batch, for the micro timings
    sample_log: dict[str, float] = field(default_factory=dict)  # one real GRPO log, for the micro timings


def bench_spec(steps: int, batch_size: int, completion_length: int) -> RunSpec:
    """presets/tiny-grpo.toml made smaller, on the CPU, one log per step (make_trainer turns saving off)."""
    from healer.presets import load_preset

    spec = load_preset(str(PRESET)).spec
    return dataclasses.replace(
        spec,
        name="bench",
        precision="fp32",
        device="cpu",
        task=dataclasses.replace(spec.task, n_train=1000),
        train=dataclasses.replace(
            spec.train,
            max_steps=steps,
            batch_size=batch_size,
            logging_steps=1,
            save_steps=10**6,
            gradient_checkpointing="off",
        ),
        rl=dataclasses.replace(spec.rl, max_completion_length=completion_length, rewards=("task",)),
    )


def make_trainer(bench: GRPOBench, steps: int, reward: Callable[..., list[float]], callbacks: list[Any]) -> Any:
    """A fresh model from the saved weights and a GRPOTrainer with healer's config, checkpoints off."""
    from trl import GRPOTrainer

    from healer.train.rl import rl_config

    model, spec = fresh_model(bench, steps)
    config = rl_config(spec, str(bench.work_dir / "out"), save_strategy="no")
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=bench.dataset,
        processing_class=bench.tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def healer_reward(bench: GRPOBench) -> Callable[..., list[float]]:
    from healer.train.rl import reward_functions

    (reward,) = reward_functions(bench.spec, bench.task, bench.examples)
    return reward


def train_once(bench: GRPOBench, steps: int, healer: bool) -> GRPORepetition:
    """One fresh model and trainer; only trainer.train() is timed."""
    from healer.train.callbacks import StoreCallback

    timer = LoggedStepTimer()
    callbacks: list[Any] = [timer]
    run_id = None
    if healer:
        run_id = bench.store.create_run(kind="rl", method="grpo", name="bench", spec=bench.spec.to_dict()).id
        callbacks.append(StoreCallback(bench.store, run_id))
        reward = healer_reward(bench)
    else:
        plain = bare_reward(bench.task, bench.examples)

        def reward(prompts: list[Any], completions: list[Any], example: list[int], **kwargs: Any) -> list[float]:
            if not bench.sample_batch:  # keeps the first batch for time_rewards; a dict test, nanoseconds
                bench.sample_batch.update(prompts=prompts, completions=completions, example=example)
            return plain(prompts, completions, example, **kwargs)

    elapsed = timed_train(make_trainer(bench, steps, reward, callbacks))

    if healer and not bench.sample_log and timer.logs:
        last = timer.logs[-1]
        bench.sample_log.update(
            {k: float(v) for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        )
    rows = metric_rows(bench.store, run_id)
    return GRPORepetition(healer, steps, elapsed, timer.periods(), rows, lengths=timer.lengths())


def train_interleaved(bench: GRPOBench, steps: int) -> Interleaved:
    """Two trainers, healer active on every other step, on the odd steps in one and the even steps in the other.

    Both rewards pay the same, so both trainers sample the same completions at every step: each step's work is
    timed once with healer and once bare, and the prompts and completion lengths of a step cancel out.
    """
    from healer.train.callbacks import StoreCallback

    healer_periods: list[float] = []
    bare_periods: list[float] = []
    local_ratios: list[float] = []
    cpu_ratios: list[float] = []
    phase_overheads: list[float] = []
    lengths: list[list[float]] = []
    for healer_first in (False, True):
        run_id = bench.store.create_run(kind="rl", method="grpo", name="bench-interleaved", spec={}).id
        store_cb = StoreCallback(bench.store, run_id)
        alternating = EveryOtherStep(
            bare_reward(bench.task, bench.examples), healer_reward(bench), store_cb, healer_first
        )
        timer = LoggedStepTimer()
        make_trainer(bench, steps, alternating, [alternating, timer]).train()
        healer_periods += alternating.periods_of(healer=True)
        bare_periods += alternating.periods_of(healer=False)
        ratios = alternating.local_ratios()
        local_ratios += ratios
        cpu_ratios += alternating.local_ratios(cpu=True)
        phase_overheads.append((statistics.median(ratios) - 1) * 100)
        lengths.append(timer.lengths())
    same = lengths[0] == lengths[1]
    return Interleaved(healer_periods, bare_periods, local_ratios, cpu_ratios, phase_overheads, same)


def time_rewards(bench: GRPOBench, calls: int) -> tuple[float, float]:
    """Median ms of one call of healer's reward and of the bare one on the same real batch of completions.

    Healer's reward is built afresh for every call (its Scorer caches the last batch), with a log_metric that
    does what TRL's does (append to a list per name).
    """
    from healer.train.rl import reward_functions

    batch = bench.sample_batch
    bare = bare_reward(bench.task, bench.examples)
    pending: dict[str, list[float]] = defaultdict(list)

    def log_metric(name: str, value: float) -> None:
        pending[name].append(value)

    healer_times, bare_times = [], []
    for _ in range(calls):
        pending.clear()
        start = time.perf_counter()
        (healer,) = reward_functions(bench.spec, bench.task, bench.examples)
        healer(**batch, log_metric=log_metric)
        healer_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        bare(**batch)
        bare_times.append(time.perf_counter() - start)
    return median_ms(healer_times), median_ms(bare_times)


def progress(rep: GRPORepetition) -> str:
    """A timed repetition's line as it ends: its variant, steps/s and median step."""
    label = "healer" if rep.healer else "bare  "
    return f"{label}: {rep.steps_per_s:6.3f} steps/s, median step {rep.median_step_ms:7.2f} ms"


def report(
    reps: list[GRPORepetition],
    interleaved: Interleaved,
    rewards_ms: tuple[float, float],
    log_metrics_ms: float,
    n_metrics: int,
    batch_size: int,
    calls: int,
) -> None:
    bare, healer = variants(reps)

    print("\nrepetitions (in run order):")
    for i, r in enumerate(reps, 1):
        label = "healer" if r.healer else "bare  "
        print(
            f"  {i:2d}. {label}  train() {r.train_s:6.2f} s = {r.steps_per_s:5.2f} steps/s   "
            f"median step {r.median_step_ms:7.2f} ms   mean completion {statistics.mean(r.lengths):5.2f} tokens   "
            f"metric rows {r.metric_rows}"
        )
    same = all(a.lengths == b.lengths for a, b in zip(bare, healer, strict=True))
    print(f"  same completion lengths, step by step, in both variants: {'yes' if same else 'NO'}")

    step_bare = pooled_step_ms(bare)
    step_healer = pooled_step_ms(healer)
    ratio = step_healer / step_bare  # healer/bare step period = bare/healer steps/s
    pair_overheads = [(b.median_step_ms / a.median_step_ms - 1) * 100 for a, b in zip(bare, healer, strict=True)]
    print("\nstep period (median over all steps of a variant):")
    print(f"  bare TRL: {step_bare:8.2f} ms a step = {1000 / step_bare:6.3f} steps/s")
    print(f"  healer:   {step_healer:8.2f} ms a step = {1000 / step_healer:6.3f} steps/s")
    print(f"  ratio healer/bare (step period): {ratio:.4f}  (overhead {(ratio - 1) * 100:+.2f} %)")
    print(f"  per-pair overhead (noise): {percents(pair_overheads)} %")

    sps_bare = median_steps_per_s(bare)
    sps_healer = median_steps_per_s(healer)
    loop_ratio = sps_bare / sps_healer
    print("\ntrain loop (steps / trainer.train() wall time, median over repetitions):")
    print(f"  bare TRL: {sps_bare:6.3f} steps/s")
    print(f"  healer:   {sps_healer:6.3f} steps/s")
    print(f"  ratio healer/bare (time a step): {loop_ratio:.4f}  (overhead {(loop_ratio - 1) * 100:+.2f} %)")

    healer_reward_ms, bare_reward_ms = rewards_ms
    added_ms = healer_reward_ms - bare_reward_ms + log_metrics_ms
    print("\nwhat healer adds per step, timed alone:")
    print(
        f"  reward on a real batch of {batch_size} completions: healer {healer_reward_ms:.3f} ms, "
        f"bare {bare_reward_ms:.3f} ms (median of {calls} calls)"
    )
    print(
        f"  Store.log_metrics with a real GRPO log ({n_metrics} metrics): {log_metrics_ms:.3f} ms (median of {calls})"
    )
    print(
        f"  together {added_ms:.3f} ms beside a {step_bare:.2f} ms step = "
        f"{added_ms / step_bare * 100:.2f} % expected overhead"
    )
    rows = sum(r.metric_rows for r in healer)
    print(
        f"  metric rows written by the timed healer repetitions: {rows} ({len(healer)} runs x {healer[0].steps} steps)"
    )

    healer_ms, bare_ms = interleaved.healer_ms, interleaved.bare_ms
    medians_ratio = healer_ms / bare_ms
    local_ratio = statistics.median(interleaved.local_ratios)
    overhead = (local_ratio - 1) * 100
    print(
        "\ninterleaved steps (healer's reward and StoreCallback on every other step, two trainers of opposite phase;"
        " the goal uses the neighbour ratio):"
    )
    print(f"  bare steps:   {bare_ms:8.2f} ms median = {1000 / bare_ms:6.3f} steps/s")
    print(f"  healer steps: {healer_ms:8.2f} ms median = {1000 / healer_ms:6.3f} steps/s")
    print(f"  ratio of the medians healer/bare:  {medians_ratio:.4f}  (overhead {(medians_ratio - 1) * 100:+.2f} %)")
    print(
        f"  ratio healer/bare (step period), healer step over its 2 bare neighbours, median of "
        f"{len(interleaved.local_ratios)}: {local_ratio:.4f}  (overhead {overhead:+.2f} %)"
    )
    print(f"  per-phase overhead (noise): {percents(interleaved.phase_overheads)} %")
    cpu_ratio = statistics.median(interleaved.cpu_ratios)
    print(
        f"  the same in CPU time of the process (blind to other processes; the store's WAL commits do not fsync): "
        f"{cpu_ratio:.4f}  (overhead {(cpu_ratio - 1) * 100:+.2f} %)"
    )
    print(f"  same completion lengths, step by step, in both phases: {'yes' if interleaved.same_lengths else 'NO'}")
    verdict = "met" if overhead <= GOAL_OVERHEAD_PCT else "not met"
    print(f"\ngoal: healer overhead <= {GOAL_OVERHEAD_PCT:g} %: {verdict} ({overhead:+.2f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="timed (bare, healer) pairs, interleaved (default 2)")
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per repetition (default 50)")
    parser.add_argument(
        "--interleaved-steps", type=int, default=50, help="steps of each of the two interleaved trainers (default 50)"
    )
    parser.add_argument("--warmup-steps", type=int, default=5, help="steps of the discarded warm-up pair")
    parser.add_argument("--batch-size", type=int, default=32, help="completions per step (default 32)")
    parser.add_argument("--completion-length", type=int, default=16, help="max_completion_length (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--calls", type=int, default=200, help="calls of the reward and log_metrics timed alone")
    args = parser.parse_args()
    if (
        args.pairs < 1
        or args.steps < 3
        or args.interleaved_steps < 3
        or args.warmup_steps < 1
        or args.calls < 1
        or args.completion_length < 1
    ):
        parser.error(
            "--pairs, --warmup-steps, --calls and --completion-length must be >= 1, "
            "--steps and --interleaved-steps >= 3"
        )

    quiet_setup(args.threads)
    # TRL 1.16 reads a property transformers 5.24 deprecated; nothing to act on (as in healer/train/rl.py).
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

    with work_dir() as tmp:
        os.environ["HEALER_HOME"] = str(tmp / "home")  # the preset's {home} resolves here, never the user's
        os.environ.pop("HEALER_DB", None)

        from healer.tasks import make_task
        from healer.train.loading import load_tokenizer
        from healer.train.rl import rl_dataset
        from healer.train.tiny import save_tiny

        model_dir = save_tiny(tmp / "tiny", "tiny")
        spec = bench_spec(args.steps, args.batch_size, args.completion_length)
        if spec.train.batch_size % spec.rl.num_generations:
            parser.error(f"--batch-size must be a multiple of num_generations ({spec.rl.num_generations})")
        dataset, examples = rl_dataset(spec)
        with Store(tmp / "healer.db") as store:
            bench = GRPOBench(
                model_dir=model_dir,
                work_dir=tmp,
                spec=spec,
                tokenizer=load_tokenizer(str(model_dir), spec),
                dataset=dataset,
                examples=examples,
                task=make_task(spec.task),
                store=store,
            )
            print(
                f"healer GRPO overhead: tiny model (untrained), CPU, {args.threads} torch threads, task "
                f"{spec.task.name}, {spec.train.batch_size} completions a step ({spec.rl.num_generations} per "
                f"prompt), max_completion_length {spec.rl.max_completion_length}, logging_steps=1, no checkpoints, "
                f"{args.pairs} pairs x {args.steps} steps, {len(dataset)} prompts"
            )

            reps = run_pairs(args, partial(train_once, bench), progress)

            print(f"interleaved trainers (2 x {args.interleaved_steps} steps) ...", flush=True)
            interleaved = train_interleaved(bench, args.interleaved_steps)
            rewards_ms = time_rewards(bench, args.calls)
            log_metrics_ms = time_log_metrics(store, bench.sample_log, args.calls, kind="rl", method="grpo")
            report(
                reps,
                interleaved,
                rewards_ms,
                log_metrics_ms,
                len(bench.sample_log),
                len(bench.sample_batch["completions"]),
                args.calls,
            )


if __name__ == "__main__":
    main()
