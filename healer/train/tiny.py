"""Builds the offline tiny Llama model and its character-level chat tokenizer."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

TinySize = Literal["tiny", "small"]

# hidden x layers x heads/kv-heads x MLP; "tiny" is ~1M parameters (4 MB), "small" ~6M.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=512
    ),
    "small": dict(
        hidden_size=256, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4, intermediate_size=1024
    ),
}

SPECIAL_TOKENS = ["<pad>", "<s>", "<|end|>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]
CHARACTERS = [c for c in string.printable if c not in "\r\x0b\x0c"]  # printable ASCII, space, \t, \n

# The assistant turn is wrapped in {% generation %} so TRL's assistant-only loss can find it;
# <|end|> closes every turn and is the EOS token, so generation stops at the end of the answer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{% else %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level BPE (no merges) over printable ASCII with chat special tokens."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.add_special_tokens(SPECIAL_TOKENS)
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, size: TinySize = "tiny", seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised Llama-architecture causal LM sized for CPU training."""
    import torch

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **SIZES[size],
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_tiny(out_dir: Path, size: TinySize = "tiny", seed: int = 0) -> Path:
    """Build and save the tiny model and tokenizer with save_pretrained; returns the directory."""
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, size, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)
    return out_dir
