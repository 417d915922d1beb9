"""Batched ID/OOD evaluation of a model: single-attempt or multi-attempt with the verifier's feedback."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from healer.presets import EvalSpec, RunSpec
from healer.stats import wilson
from healer.store import Eval, Store
from healer.tasks import Example, Score, Task, check_split, make_task

RETRY_WITHOUT_FEEDBACK = "That is not correct. Try again."


@dataclass(frozen=True)
class Episode:
    """How one evaluation episode ended."""

    example: Example
    completion: str  # the last attempt
    score: Score
    attempts: int
    transcript: list[dict[str, str]] | None  # every turn after the prompt, feedback protocol only


def render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The model's own chat template; a base model without one gets the turns' text joined."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in messages) + "\n"


@contextlib.contextmanager
def inference(model: Any, tokenizer: Any, padding_side: str = "left") -> Iterator[None]:
    """Eval mode, no gradients and the given padding side; restores the training state afterwards."""
    import torch

    was_training, old_side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = padding_side
    try:
        with torch.inference_mode(), _autocast(model):
            yield
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()


def _autocast(model: Any) -> Any:
    """bf16 autocast on CUDA, as in mixed-precision training; nothing on CPU."""
    import torch

    device = next(model.parameters()).device
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def generate(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], settings: EvalSpec,
             path: str | None = None) -> list[str]:  # fmt: skip
    """Complete every conversation, in batches of similar length; greedy unless temperature > 0. With eval.backend
    = "vllm", vLLM generates from the checkpoint at `path` instead."""
    texts = [render(tokenizer, c) for c in conversations]
    if settings.backend == "vllm":
        from healer.train import vllm

        return vllm.generate(path, texts, settings.max_new_tokens, settings.temperature, settings.top_p)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    completions: list[str] = [""] * len(texts)
    sampling = settings.temperature > 0
    options: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "do_sample": sampling}
    if sampling:
        options.update(temperature=settings.temperature, top_p=settings.top_p)
    else:
        options.update(temperature=None, top_p=None, top_k=None)
    device = next(model.parameters()).device
    for start in range(0, len(order), settings.batch_size):
        batch = order[start : start + settings.batch_size]
        encoded = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = encoded.to(device)
        output = model.generate(**encoded, pad_token_id=tokenizer.pad_token_id, **options)
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        for i, text in zip(batch, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
            completions[i] = text.strip()
    return completions


def run_episodes(model: Any, tokenizer: Any, task: Task, examples: list[Example], settings: EvalSpec,
                 path: str | None = None) -> list[Episode]:  # fmt: skip
    """Play every episode: one attempt, or up to max_attempts with the verifier's complaint as the next user turn."""
    conversations = [[{"role": "user", "content": e.prompt}] for e in examples]
    results: list[Episode | None] = [None] * len(examples)
    active = list(range(len(examples)))
    attempts = attempts_allowed(settings)
    for attempt in range(1, attempts + 1):
        completions = generate(model, tokenizer, [conversations[i] for i in active], settings, path)
        still_active = []
        for i, completion in zip(active, completions, strict=True):
            score = task.score(examples[i], completion)
            conversations[i].append({"role": "assistant", "content": completion})
            transcript = conversations[i][1:] if settings.protocol == "feedback" else None
            results[i] = Episode(examples[i], completion, score, attempt, transcript)
            if not score.correct and attempt < attempts:
                conversations[i].append({"role": "user", "content": score.feedback or RETRY_WITHOUT_FEEDBACK})
                still_active.append(i)
        active = still_active
        if not active:
            break
    return [r for r in results if r is not None]


def reference_loss(model: Any, tokenizer: Any, examples: list[Example], batch_size: int) -> float | None:
    """Mean per-token NLL of the reference answers given the prompts (teacher forcing), completion tokens only."""
    import torch

    total, tokens = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        prompts = [render(tokenizer, [{"role": "user", "content": e.prompt}]) for e in batch]
        fulls = [_full_text(tokenizer, e) for e in batch]
        encoded = tokenizer(fulls, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        labels = encoded["input_ids"].clone()
        labels[encoded["attention_mask"] == 0] = -100
        for row, prompt_ids in enumerate(tokenizer(prompts, add_special_tokens=False)["input_ids"]):
            labels[row, : len(prompt_ids)] = -100
        logits = model(**encoded).logits[:, :-1].float()
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="sum")
        total += nll.item()
        tokens += int((target != -100).sum())
    return total / tokens if tokens else None


def _full_text(tokenizer: Any, example: Example) -> str:
    messages = [{"role": "user", "content": example.prompt}, {"role": "assistant", "content": example.answer}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return render(tokenizer, messages[:1]) + example.answer + (tokenizer.eos_token or "")


def summarize(episodes: list[Episode]) -> dict[str, Any]:
    """Counts, accuracy with its Wilson 95 % interval, format-error rate, mean reward and outcome counts."""
    n = len(episodes)
    correct = sum(e.score.correct for e in episodes)
    low, high = wilson(correct, n)
    return {
        "n": n, "correct": correct, "accuracy": correct / n if n else 0.0, "ci_low": low, "ci_high": high,
        "format_error_rate": sum(e.score.format_error for e in episodes) / n if n else 0.0,
        "mean_reward": sum(e.score.reward for e in episodes) / n if n else None,
        "outcomes": json.dumps(dict(Counter(e.score.outcome for e in episodes).most_common())),
    }  # fmt: skip


def evaluate(store: Store, *, run_id: int, step: int, checkpoint_path: str | None, model: Any, tokenizer: Any,
             spec: RunSpec, splits: tuple[str, ...] | None = None) -> list[Eval]:  # fmt: skip
    """Evaluate a loaded model on each split of the spec's task and store the results (replacing earlier ones)."""
    task = make_task(spec.task)
    settings = spec.eval
    if settings.backend == "vllm":
        from healer.train.vllm import require_vllm

        require_vllm("eval.backend")
    stored = []
    for split in splits or settings.splits:
        check_split(task, split)
        examples = task.eval_examples(split, spec.task.eval_n, spec.task.eval_seed)
        started = time.perf_counter()
        with inference(model, tokenizer):
            _seed_sampling(spec)
            episodes = run_episodes(model, tokenizer, task, examples, settings, checkpoint_path)
        with inference(model, tokenizer, padding_side="right"):
            loss = reference_loss(model, tokenizer, examples, settings.batch_size) if settings.loss else None
        summary = {
            "run_id": run_id, "step": step, "checkpoint_path": checkpoint_path, "task": task.name, "split": split,
            "protocol": settings.protocol, "max_attempts": attempts_allowed(settings),
            "loss": loss, "seconds": time.perf_counter() - started, "settings": json.dumps(_settings(spec)),
            **summarize(episodes),
        }  # fmt: skip
        stored.append(store.record_eval(summary, [_sample_row(i, e) for i, e in enumerate(episodes)]))
    return stored


def attempts_allowed(settings: EvalSpec) -> int:
    return 1 if settings.protocol == "single" else settings.max_attempts


def _seed_sampling(spec: RunSpec) -> None:
    if spec.eval.temperature > 0:
        import torch

        torch.manual_seed(spec.task.eval_seed)


def _settings(spec: RunSpec) -> dict[str, Any]:
    e, t = spec.eval, spec.task
    return {
        "temperature": e.temperature, "top_p": e.top_p, "max_new_tokens": e.max_new_tokens,
        "eval_seed": t.eval_seed, "eval_n": t.eval_n, "prompt": t.prompt, "n_cards": t.n_cards, "target": t.target,
    }  # fmt: skip


def _sample_row(idx: int, episode: Episode) -> dict[str, Any]:
    return {
        "idx": idx, "prompt": episode.example.prompt, "completion": episode.completion,
        "transcript": json.dumps(episode.transcript) if episode.transcript is not None else None,
        "outcome": episode.score.outcome, "reward": episode.score.reward, "correct": int(episode.score.correct),
        "attempts": episode.attempts, "meta": json.dumps(episode.example.meta, default=str),
    }  # fmt: skip
