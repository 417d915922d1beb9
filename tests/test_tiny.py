"""The offline tiny model: built from a config, saved, and reloaded through from_pretrained unchanged."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from healer.train.tiny import save_tiny


def test_tiny_model_round_trips_through_from_pretrained(tmp_path: Path) -> None:
    built = save_tiny(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built).eval()
    assert model.config.model_type == "llama"
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 2e6

    text = "Cards: [3, 'K', 5]\n\tsum = 18 {json}"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text and len(ids) == len(text)  # one token per character, exact round trip

    again = AutoModelForCausalLM.from_pretrained(built).eval()
    batch = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(model(batch).logits, again(batch).logits)


def test_chat_template_marks_the_assistant_turn_and_ends_with_eos(tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(save_tiny(tmp_path / "tiny"))
    messages = [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == "<|user|>2+2=<|end|><|assistant|>4<|end|>"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert rendered.startswith(prompt)
    mask = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    assistant = [t for t, m in zip(mask["input_ids"], mask["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(assistant) == "4<|end|>"
    assert tokenizer.eos_token == "<|end|>" and tokenizer.padding_side == "left"


def test_small_size_is_larger(tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(save_tiny(tmp_path / "small", "small"))
    assert sum(p.numel() for p in model.parameters()) > 4e6
