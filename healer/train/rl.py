"""Reinforcement learning with TRL's GRPOTrainer or RLOOTrainer, rewarded by the task's own verifier.

The prompts are the task's training examples (conversational, so each model's chat template applies); each
completion is scored by `task.score`, the same verifier evaluation uses, and paid from the reward table in the
spec (`task.reward`), optionally plus a format reward. Every logging step records the trainer's own metrics
(reward, reward_std, kl when rl.beta > 0, completion lengths, clipping, ...) and the share of each outcome.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

from healer.presets import RunSpec
from healer.specs import OUTCOMES  # the reward table's outcomes: their shares are logged every step, zeros too
from healer.store import Run, Store
from healer.tasks import Example, Score, Task, make_task

METHODS = {"grpo": ("GRPOTrainer", "GRPOConfig"), "rloo": ("RLOOTrainer", "RLOOConfig")}


def run(run: Run, spec: RunSpec, store: Store) -> None:
    import trl

    from healer.train.loading import ensure_model, load_start_model, load_tokenizer
    from healer.train.sft import lora_config, quiet_progress_bars, resume_checkpoint, training_callbacks

    quiet_progress_bars()
    # TRL 1.16 reads a property transformers 5.24 deprecated, once per save; nothing a user can act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    model_path = ensure_model(spec)
    tokenizer = load_tokenizer(model_path, spec)
    trainer_name, _ = METHODS[spec.method]
    dataset, examples = rl_dataset(spec)
    task = make_task(spec.task)
    trainer = getattr(trl, trainer_name)(
        model=load_start_model(model_path, spec),
        reward_funcs=reward_functions(spec, task, examples),
        args=rl_config(spec, run.out_dir or "."),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(spec),
        callbacks=training_callbacks(store, run, spec, tokenizer),
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint(store, run))


def rl_config(spec: RunSpec, output_dir: str, **overrides: Any) -> Any:
    """TRL's GRPOConfig or RLOOConfig for a spec; `overrides` are config arguments (the benchmark turns saving off)."""
    import trl

    from healer.train.loading import trainer_device_args

    rl, train = spec.rl, spec.train
    arguments: dict[str, Any] = dict(
        output_dir=output_dir,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,  # completions, not prompts: batch_size / num_generations prompts
        gradient_accumulation_steps=train.grad_accum,
        learning_rate=train.lr,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        num_generations=rl.num_generations,
        max_completion_length=rl.max_completion_length,
        temperature=rl.temperature,
        top_p=rl.top_p,
        beta=rl.beta,
        epsilon=rl.epsilon,
        num_iterations=rl.num_iterations,
        reward_weights=[1.0] * len(rl.rewards),
        logging_steps=train.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=train.save_steps,
        seed=spec.seed,
        report_to="none",
        disable_tqdm=True,
        **trainer_device_args(spec),
    )
    if spec.method == "grpo":
        arguments["scale_rewards"] = rl.scale_rewards
        if rl.loss_type:
            arguments["loss_type"] = rl.loss_type
    if rl.use_vllm:
        from healer.train.vllm import require_vllm

        require_vllm("rl.use_vllm")
        arguments.update(use_vllm=True, vllm_mode="colocate")
    _, config_name = METHODS[spec.method]
    return getattr(trl, config_name)(**{**arguments, **overrides})


def rl_dataset(spec: RunSpec) -> tuple[Any, list[Example]]:
    """Conversational prompts from the task, each with the index of its example so the reward can score it."""
    from datasets import Dataset

    task = make_task(spec.task)
    examples = task.train_examples(spec.task.train_split, spec.task.n_train, spec.task.seed)
    rows = [{"prompt": [{"role": "user", "content": e.prompt}], "example": i} for i, e in enumerate(examples)]
    return Dataset.from_list(rows), examples


def reward_functions(spec: RunSpec, task: Task, examples: list[Example]) -> list[Callable[..., list[float]]]:
    """One reward function per name in rl.rewards, in order; TRL sums them (weight 1 each)."""
    scorer = Scorer(task, examples)
    made = {"task": TaskReward(scorer), "format": FormatReward(scorer, spec.rl.format_reward)}
    return [made[name] for name in spec.rl.rewards]


class Scorer:
    """Scores a batch once, however many reward functions read the verdicts."""

    def __init__(self, task: Task, examples: list[Example]) -> None:
        self.task = task
        self.examples = examples
        self._key: tuple[Any, ...] | None = None
        self._scores: list[Score] = []

    def scores(self, completions: list[Any], indices: list[int]) -> list[Score]:
        texts = [completion_text(c) for c in completions]
        key = (tuple(texts), tuple(indices))
        if key != self._key:
            self._scores = [self.task.score(self.examples[i], t) for i, t in zip(indices, texts, strict=True)]
            self._key = key
        return self._scores


class TaskReward:
    """The task's reward table; also logs the share of each outcome and the format-error rate of the batch."""

    __name__ = "task"

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def __call__(self, prompts: list[Any], completions: list[Any], example: list[int],
                 log_metric: Callable[[str, float], None] | None = None, **kwargs: Any) -> list[float]:  # fmt: skip
        scores = self.scorer.scores(completions, example)
        if log_metric is not None:
            for name, share in outcome_shares(scores).items():
                log_metric(f"outcome/{name}", share)
            log_metric("format_error_rate", sum(s.format_error for s in scores) / len(scores))
        return [s.reward for s in scores]


class FormatReward:
    """`rl.format_reward` for every well-formed answer (judged right or wrong on its merits), 0 for the rest.

    Not well-formed: a format error, an illegal answer, or a `partial` one (a prefix of a solution that does not
    parse yet)."""

    __name__ = "format"

    def __init__(self, scorer: Scorer, value: float) -> None:
        self.scorer = scorer
        self.value = value

    def __call__(self, prompts: list[Any], completions: list[Any], example: list[int], **kwargs: Any) -> list[float]:
        return [self.value if well_formed(s) else 0.0 for s in self.scorer.scores(completions, example)]


def well_formed(score: Score) -> bool:
    return not score.format_error and score.outcome not in ("illegal", "partial")


def outcome_shares(scores: list[Score]) -> dict[str, float]:
    """The share of each outcome in a batch: the reward table's outcomes always, any other outcome seen too."""
    counts = Counter(s.outcome for s in scores)
    names = list(OUTCOMES) + sorted(set(counts) - set(OUTCOMES))
    return {name: counts[name] / len(scores) for name in names}


def completion_text(completion: Any) -> str:
    """A completion as text: conversational completions are a list of messages, standard ones a string."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)
