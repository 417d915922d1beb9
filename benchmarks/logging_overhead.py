"""How much does healer's StoreCallback slow down training? Steps/s of TRL's SFTTrainer with and without it.

The same SFTTrainer (healer's tiny model on CPU, the config of healer/train/sft.py) trains with and without
`StoreCallback` in one process, in interleaved repetitions after a discarded warm-up pair. Every repetition
loads the same saved weights through `from_pretrained` and sees the same data order. `logging_steps=1` is the
worst case for healer (one store transaction per optimizer step); no checkpoints are saved, so their disk I/O
does not blur the comparison. The trainer's own PrinterCallback (one printed line per log) is removed in both
variants: it is the same cost both ways and only makes the output unreadable.

Three measures:
  - interleaved steps (the headline and the goal): one more trainer, its steps in cycles of four: one where
    StoreCallback writes, a plain one, a no-op control (labelled like the write, writes nothing), a plain one.
    The median period of the writing steps and of the control steps, each against the plain ones: the control is
    the noise floor measured in the same run, and the verdict is the write's overhead beyond it. Neighbouring
    50 ms steps see the same machine, so drift and noisy neighbours cancel far better than between repetitions;
  - step period: the time from one `on_step_begin` to the next, which holds the step's `on_log` and so the store
    write; the median over all steps of a variant shrugs off the stalls of a shared VM (a 40 ms step can take 2 s
    when a vCPU is taken away);
  - train loop: steps / wall time of `trainer.train()`, everything included but at the mercy of those stalls.
The pairs alternate their order (AB, BA, AB, ...) so a slow drift of the machine cancels out; one torch thread
by default, since with two on a 2-vCPU VM a preempted thread stalls the other.

Beside them the script times `Store.log_metrics` alone with 8 metrics, which is what the callback adds per step.

    .venv/bin/python benchmarks/logging_overhead.py [--pairs 4] [--steps 150] [--threads 1]

It always exits 0: the goal line (overhead <= 2%) is a report, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
from functools import partial
from typing import Any

from _shared import (
    Bench,
    Repetition,
    StepTimer,
    fresh_model,
    median_ms,
    median_steps_per_s,
    metric_rows,
    percents,
    pooled_step_ms,
    quiet_setup,
    run_pairs,
    time_log_metrics,
    timed_train,
    variants,
    work_dir,
)
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from healer.presets import RunSpec
from healer.store import Store
from healer.train.callbacks import StoreCallback
from healer.train.sft import sft_config, sft_dataset
from healer.train.tiny import save_tiny

GOAL_OVERHEAD_PCT = 2.0

# What SFTTrainer logs per step, plus one: the dict StoreCallback hands to log_metrics, ~8 numbers.
SAMPLE_METRICS = {
    "loss": 2.31,
    "grad_norm": 0.87,
    "learning_rate": 0.003,
    "entropy": 1.92,
    "num_tokens": 51200.0,
    "mean_token_accuracy": 0.41,
    "epoch": 0.5,
    "train_runtime": 4.2,
}


class WriteAndControl(StepTimer):
    """Steps in cycles of four: the first writes to the store (StoreCallback.on_log), the third is its control
    (labelled alike, writes nothing), the second and fourth are plain. The control holds the write's place in the
    cycle without the write, so control against plain is the noise floor of this very run, and the verdict is the
    write's overhead beyond it."""

    CYCLE = ("write", "plain", "control", "plain")

    def __init__(self, inner: StoreCallback) -> None:
        super().__init__()
        self.inner = inner
        self.labels: list[str] = []

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        super().on_step_begin(args, state, control, **kwargs)
        self.labels.append(self.CYCLE[(len(self.begins) - 1) % len(self.CYCLE)])

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.labels and self.labels[-1] == "write":
            self.inner.on_log(args, state, control, **kwargs)

    def medians_ms(self) -> dict[str, float]:
        """Median period (ms) of the steps of each label."""
        periods = self.periods()
        return {
            label: median_ms(p for p, lab in zip(periods, self.labels, strict=False) if lab == label)
            for label in set(self.CYCLE)
        }


def bench_spec(steps: int) -> RunSpec:
    """The task of presets/tiny-sft.toml (card_sum, 3 cards), with one log per step and the given number of steps.

    The task is named: the default task's prompts run far past max_length 64, which would leave no completion token.
    """
    spec = RunSpec()
    return dataclasses.replace(
        spec,
        name="bench",
        precision="fp32",
        device="cpu",
        task=dataclasses.replace(spec.task, name="card_sum", n_cards=3, n_train=2000),
        train=dataclasses.replace(
            spec.train,
            max_steps=steps,
            batch_size=16,
            lr=3e-3,
            lr_scheduler="cosine",
            warmup_steps=10,
            max_length=64,
            logging_steps=1,
            gradient_checkpointing="off",
        ),
    )


def make_trainer(bench: Bench, steps: int, callbacks: list[TrainerCallback]) -> Any:
    """A fresh model from the saved weights and an SFTTrainer with healer's config, checkpoints off."""
    from trl import SFTTrainer

    model, spec = fresh_model(bench, steps)
    config = sft_config(spec, str(bench.work_dir / "out"), save_strategy="no")
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=bench.dataset, processing_class=bench.tokenizer, callbacks=callbacks
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def train_interleaved(bench: Bench, steps: int) -> dict[str, float]:
    """One trainer, the store written on one step in four and a no-op control two steps later: median ms by label."""
    run_id = bench.store.create_run(kind="sft", method="sft", name="bench-interleaved", spec={}).id
    cycle = WriteAndControl(StoreCallback(bench.store, run_id))
    make_trainer(bench, steps, [cycle]).train()
    return cycle.medians_ms()


def train_once(bench: Bench, steps: int, with_store: bool) -> Repetition:
    """One fresh model and trainer; only trainer.train() is timed. The healer variant is the one with the store."""
    timer = StepTimer()
    callbacks: list[TrainerCallback] = [timer]
    run_id = None
    if with_store:
        run_id = bench.store.create_run(kind="sft", method="sft", name="bench", spec={}).id
        callbacks.append(StoreCallback(bench.store, run_id))
    elapsed = timed_train(make_trainer(bench, steps, callbacks))
    return Repetition(with_store, steps, elapsed, timer.periods(), metric_rows(bench.store, run_id))


def progress(rep: Repetition) -> str:
    """A timed repetition's line as it ends: its variant and steps/s."""
    label = "with   " if rep.healer else "without"
    return f"{label} StoreCallback: {rep.steps_per_s:6.2f} steps/s"


def report(reps: list[Repetition], interleaved: dict[str, float], log_metrics_ms: float, calls: int) -> None:
    without, with_ = variants(reps)

    print("\nrepetitions (in run order):")
    for i, r in enumerate(reps, 1):
        label = "with StoreCallback   " if r.healer else "without StoreCallback"
        print(
            f"  {i:2d}. {label}  train() {r.train_s:6.2f} s = {r.steps_per_s:6.2f} steps/s   "
            f"median step {r.median_step_ms:6.2f} ms   metric rows {r.metric_rows}"
        )

    step_without = pooled_step_ms(without)
    step_with = pooled_step_ms(with_)
    ratio = step_without / step_with  # steps/s with / steps/s without
    overhead = (1 - ratio) * 100
    pair_overheads = [(1 - a.median_step_ms / b.median_step_ms) * 100 for a, b in zip(without, with_, strict=True)]

    print("\nsteps/s from the step period (median over all steps of a variant):")
    print(f"  without StoreCallback: {1000 / step_without:8.2f} steps/s  ({step_without:.2f} ms a step)")
    print(f"  with StoreCallback:    {1000 / step_with:8.2f} steps/s  ({step_with:.2f} ms a step)")
    print(f"  ratio with/without:    {ratio:8.4f}")
    print(f"  healer overhead:       {overhead:+8.2f} %")
    print(f"  per-pair overhead (noise): {percents(pair_overheads)} %")

    sps_without = median_steps_per_s(without)
    sps_with = median_steps_per_s(with_)
    loop_ratio = sps_with / sps_without
    print("\nsteps/s from the train loop (steps / trainer.train() wall time, median over repetitions):")
    print(f"  without StoreCallback: {sps_without:8.2f} steps/s")
    print(f"  with StoreCallback:    {sps_with:8.2f} steps/s")
    print(f"  ratio with/without:    {loop_ratio:8.4f}  (overhead {(1 - loop_ratio) * 100:+.2f} %)")

    rows = sum(r.metric_rows for r in with_)
    print(
        f"\nStore.log_metrics with {len(SAMPLE_METRICS)} metrics: {log_metrics_ms:.3f} ms (median of {calls} calls)"
        f" beside a {step_without:.2f} ms step = {log_metrics_ms / step_without * 100:.2f} % expected overhead"
    )
    print(
        f"metric rows written by the timed repetitions with StoreCallback: {rows} "
        f"({len(with_)} runs x {with_[0].steps} steps)"
    )
    plain_ms = interleaved["plain"]
    write_pct = (1 - plain_ms / interleaved["write"]) * 100
    control_pct = (1 - plain_ms / interleaved["control"]) * 100
    beyond = write_pct - control_pct
    print("\ninterleaved steps (one trainer, cycles of four: write, plain, no-op control, plain; the goal uses this):")
    print(f"  plain steps:                      {plain_ms:7.2f} ms median = {1000 / plain_ms:6.2f} steps/s")
    for label, pct in (("write", write_pct), ("control", control_pct)):
        name = "steps with a store write:" if label == "write" else "control steps (no write):"
        print(f"  {name:33s} {interleaved[label]:7.2f} ms median  (against plain {pct:+.2f} %)")
    print(f"  noise floor (control against plain): {control_pct:+.2f} %")
    print(f"  write overhead beyond the control:   {beyond:+.2f} %")
    verdict = "PASS" if beyond <= GOAL_OVERHEAD_PCT else "FAIL"
    print(f"\ngoal: overhead beyond the noise floor <= {GOAL_OVERHEAD_PCT:g}%: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4, help="timed (without, with) pairs, interleaved (default 4)")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per repetition (default 150)")
    parser.add_argument("--warmup-steps", type=int, default=20, help="steps of the discarded warm-up pair")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--log-calls", type=int, default=200, help="Store.log_metrics calls timed (default 200)")
    args = parser.parse_args()
    if args.pairs < 1 or args.steps < 3 or args.warmup_steps < 1 or args.log_calls < 1:
        parser.error("--pairs, --warmup-steps and --log-calls must be >= 1 and --steps >= 3")

    quiet_setup(args.threads)
    with work_dir() as tmp:
        model_dir = save_tiny(tmp / "tiny", "tiny")
        from transformers import AutoTokenizer

        spec = bench_spec(args.steps)
        with Store(tmp / "healer.db") as store:
            bench = Bench(
                model_dir=model_dir,
                work_dir=tmp,
                spec=spec,
                tokenizer=AutoTokenizer.from_pretrained(model_dir),
                dataset=sft_dataset(spec),
                store=store,
            )
            print(
                f"healer logging overhead: tiny model, CPU, {args.threads} torch threads, batch "
                f"{spec.train.batch_size}, max_length {spec.train.max_length}, logging_steps=1, no checkpoints, "
                f"{args.pairs} pairs x {args.steps} steps, {len(bench.dataset)} examples"
            )

            reps = run_pairs(args, partial(train_once, bench), progress)

            print(f"interleaved trainer ({4 * args.steps} steps) ...", flush=True)
            interleaved = train_interleaved(bench, 4 * args.steps)
            log_metrics_ms = time_log_metrics(store, SAMPLE_METRICS, args.log_calls, kind="sft", method="sft")
            report(reps, interleaved, log_metrics_ms, args.log_calls)


if __name__ == "__main__":
    main()
