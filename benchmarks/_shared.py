"""What the overhead benchmarks share: step timing, the repetition record, the pair order, the setup, the figures.

benchmarks/logging_overhead.py (SFT) and benchmarks/rl_overhead.py (GRPO) both train the same trainer bare and
with healer, in alternating pairs after a discarded warm-up pair, and time every step. Run as
`.venv/bin/python benchmarks/X.py`, a script's own directory is on sys.path, so it imports this module as `_shared`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from healer.presets import RunSpec
from healer.store import Store


def periods(begins: list[float]) -> list[float]:
    """Consecutive differences of step begin times: whole step periods."""
    return [b - a for a, b in pairwise(begins)]


def labelled(values: list[float], labels: list[bool], label: bool) -> list[float]:
    """The values whose label is `label`; a label past the last value (the last step has no period) is ignored."""
    return [v for v, lab in zip(values, labels, strict=False) if lab == label]


def median_ms(seconds: Iterable[float]) -> float:
    """The median of durations in seconds, in ms."""
    return statistics.median(seconds) * 1000


class StepTimer(TrainerCallback):
    """Records the time of every on_step_begin; consecutive differences are whole step periods, logging included."""

    def __init__(self) -> None:
        self.begins: list[float] = []

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.begins.append(time.perf_counter())

    def periods(self) -> list[float]:
        return periods(self.begins)


@dataclass
class Repetition:
    """One timed trainer.train() of one variant: bare, or with healer."""

    healer: bool
    steps: int
    train_s: float
    step_periods: list[float]
    metric_rows: int = 0  # rows the healer variant wrote to the store

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.train_s

    @property
    def median_step_ms(self) -> float:
        return median_ms(self.step_periods)


Rep = TypeVar("Rep", bound=Repetition)


@dataclass
class Bench:
    """Everything the repetitions share: the saved model, the tokenizer, the dataset, the store."""

    model_dir: Path
    work_dir: Path
    spec: RunSpec
    tokenizer: Any
    dataset: Any
    store: Store


def fresh_model(bench: Bench, steps: int) -> tuple[Any, RunSpec]:
    """A fresh model from the saved weights, and the bench's spec with `steps` optimizer steps."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(bench.model_dir, dtype=torch.float32)
    spec = dataclasses.replace(bench.spec, train=dataclasses.replace(bench.spec.train, max_steps=steps))
    return model, spec


def timed_train(trainer: Any) -> float:
    """Wall seconds of trainer.train(), the only part of a repetition that is timed."""
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def metric_rows(store: Store, run_id: int | None) -> int:
    """The metric rows a run wrote to the store; 0 for a bare repetition (no run)."""
    return len(store.metrics(run_id)) if run_id is not None else 0


def run_pairs(
    args: argparse.Namespace, train_once: Callable[[int, bool], Rep], progress: Callable[[Rep], str]
) -> list[Rep]:
    """A discarded warm-up pair of `args.warmup_steps` steps, then `args.pairs` timed pairs of `args.steps` steps.

    `train_once(steps, healer)` runs one repetition; each timed one prints `  pair i/n ` and its `progress` line.
    """
    print(f"warm-up pair ({args.warmup_steps} steps each, discarded) ...", flush=True)
    train_once(args.warmup_steps, False)
    train_once(args.warmup_steps, True)

    reps: list[Rep] = []
    for pair in range(args.pairs):
        # AB, BA, AB, ...: a slow drift of the machine cancels out over an even number of pairs.
        order = (False, True) if pair % 2 == 0 else (True, False)
        for healer in order:
            rep = train_once(args.steps, healer)
            reps.append(rep)
            print(f"  pair {pair + 1}/{args.pairs} {progress(rep)}", flush=True)
    return reps


def variants(reps: list[Rep]) -> tuple[list[Rep], list[Rep]]:
    """The bare repetitions and the healer ones, each in run order."""
    return [r for r in reps if not r.healer], [r for r in reps if r.healer]


def pooled_step_ms(reps: list[Rep]) -> float:
    """The median step period (ms) over all steps of the repetitions together."""
    return median_ms(p for r in reps for p in r.step_periods)


def median_steps_per_s(reps: list[Rep]) -> float:
    """The median over the repetitions of steps / trainer.train() wall time."""
    return statistics.median(r.steps_per_s for r in reps)


def percents(values: Iterable[float]) -> str:
    """Signed percentages to one decimal, comma-separated: `+1.2, -0.4`."""
    return ", ".join(f"{v:+.1f}" for v in values)


def time_log_metrics(store: Store, metrics: dict[str, float], calls: int, kind: str, method: str) -> float:
    """Median wall time of one Store.log_metrics call with `metrics`, in ms (a fresh step every call)."""
    run_id = store.create_run(kind=kind, method=method, name="bench-log-metrics", spec={}).id
    times = []
    for step in range(1, calls + 1):
        start = time.perf_counter()
        store.log_metrics(run_id, step, metrics)
        times.append(time.perf_counter() - start)
    return median_ms(times)


def quiet_setup(threads: int) -> None:
    """`threads` torch intra-op threads; no progress bars and no transformers warnings in the output."""
    import transformers

    from healer.train.sft import quiet_progress_bars

    torch.set_num_threads(threads)
    quiet_progress_bars()
    transformers.utils.logging.set_verbosity_error()


@contextmanager
def work_dir() -> Iterator[Path]:
    """A temporary directory for the saved model and the store; `total time` is printed once it is gone."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="healer-bench-") as tmp:
        yield Path(tmp)
    print(f"total time {time.perf_counter() - started:.1f} s")
