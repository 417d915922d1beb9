"""Episodes per second of healer's batched evaluation against one-at-a-time generation, on the tiny model.

Both paths run healer's own `run_episodes` (the code every checkpoint evaluation runs) on the same fixed evaluation
episodes with greedy decoding; the only difference is `eval.batch_size` (64 against 1). They alternate in one process
so that the machine's noise hits both. The tiny model is trained for a few SFT steps first, so that it answers in
the task's format instead of babbling to max_new_tokens, as a real checkpoint would.

    .venv/bin/python benchmarks/eval_throughput.py [--task card_sum] [--episodes 128] [--rounds 3]

Goal: batched at least 5 times faster. It always exits 0: the goal line is a report, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from healer.presets import EvalSpec, RunSpec, TaskSpec, TrainSpec
from healer.tasks import make_task
from healer.train.evaluate import inference, run_episodes
from healer.train.loading import load_model, load_tokenizer
from healer.train.sft import quiet_progress_bars, sft_config, sft_dataset
from healer.train.tiny import save_tiny

GOAL_SPEEDUP = 5.0


def trained_tiny(work: Path, spec: RunSpec) -> tuple[object, object]:
    """The tiny model after a short SFT on the task, so its answers have the task's length and format."""
    from trl import SFTTrainer

    path = str(save_tiny(work / "tiny"))
    tokenizer = load_tokenizer(path, spec)
    trainer = SFTTrainer(model=load_model(path, spec), args=sft_config(spec, str(work / "out"), save_strategy="no"),
                         train_dataset=sft_dataset(spec), processing_class=tokenizer)  # fmt: skip
    trainer.train()
    return trainer.model, tokenizer


def timed(model: object, tokenizer: object, spec: RunSpec, batch_size: int) -> tuple[float, float]:
    """(seconds, accuracy) of one evaluation pass over the episodes at this batch size."""
    task = make_task(spec.task)
    examples = task.eval_examples("id", spec.task.eval_n, spec.task.eval_seed)
    settings = dataclasses.replace(spec.eval, batch_size=batch_size)
    started = time.perf_counter()
    with inference(model, tokenizer):
        episodes = run_episodes(model, tokenizer, task, examples, settings)
    return time.perf_counter() - started, sum(e.score.correct for e in episodes) / len(episodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="card_sum", help="task name (default card_sum, the demo's task)")
    parser.add_argument("--episodes", type=int, default=128, help="evaluation episodes per pass (default 128)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both paths (default 3)")
    parser.add_argument("--train-steps", type=int, default=150, help="SFT steps before measuring (default 150)")
    args = parser.parse_args()
    quiet_progress_bars()
    torch.manual_seed(0)

    task = TaskSpec(name=args.task, n_cards=3, prompt="compact-v1", eval_n=args.episodes, n_train=3000)
    train = TrainSpec(max_steps=args.train_steps, batch_size=32, lr=3e-3, lr_scheduler="cosine", logging_steps=50)
    spec = RunSpec(precision="fp32", device="cpu", task=task, train=train, eval=EvalSpec(max_new_tokens=32))
    with tempfile.TemporaryDirectory(prefix="healer-bench-") as tmp:
        model, tokenizer = trained_tiny(Path(tmp), spec)
        threads = torch.get_num_threads()
        print(f"eval throughput: tiny model, CPU, {threads} threads, task {args.task} (3 cards, ID split), "
              f"{args.episodes} episodes, greedy, max_new_tokens {spec.eval.max_new_tokens}")  # fmt: skip
        timed(model, tokenizer, spec, 64)  # warm-up
        batched, single = [], []
        for round_ in range(args.rounds):
            for batch_size, times in ((64, batched), (1, single)) if round_ % 2 == 0 else ((1, single), (64, batched)):
                seconds, accuracy = timed(model, tokenizer, spec, batch_size)
                times.append(seconds)
                print(f"  round {round_ + 1} batch {batch_size:2d}: {seconds:7.2f} s = "
                      f"{args.episodes / seconds:7.1f} episodes/s (accuracy {accuracy:.3f})", flush=True)  # fmt: skip
    fast, slow = statistics.median(batched), statistics.median(single)
    print(f"\nbatched (64):       {args.episodes / fast:8.1f} episodes/s  (median {fast:.2f} s)")
    print(f"one at a time (1):  {args.episodes / slow:8.1f} episodes/s  (median {slow:.2f} s)")
    print(f"speed-up:           {slow / fast:8.2f} x")
    print(f"goal: at least {GOAL_SPEEDUP:g} x: {'PASS' if slow / fast >= GOAL_SPEEDUP else 'FAIL'}")


if __name__ == "__main__":
    main()
