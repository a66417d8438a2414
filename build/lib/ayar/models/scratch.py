"""The from-scratch path: train a byte-level BPE tokenizer and build a small decoder from a config."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from ayar.errors import UsageError
from ayar.recipe import ScratchModelConfig, TokenizerTrainConfig

BOS_EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [BOS_EOS, PAD, "<|im_start|>", "<|im_end|>"]


def pydoc_topics_text() -> str:
    """CPython's own documentation text (pydoc_data.topics), present offline on every machine."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def read_corpus(corpus: str) -> str:
    """The pretraining text: 'pydoc_topics' or a .txt file or a folder of .txt files."""
    if corpus == "pydoc_topics":
        return pydoc_topics_text()
    path = Path(corpus)
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise UsageError(f"pretrain.corpus folder has no .txt files: {path}")
        return "\n\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
    if path.is_file():
        return path.read_text(encoding="utf-8", errors="replace")
    raise UsageError(f"pretrain.corpus not found: {corpus} (use 'pydoc_topics' or a .txt path)")


def train_tokenizer(text: str, cfg: TokenizerTrainConfig) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the text and wrap it for transformers."""
    tokenizer = Tokenizer(models.BPE())
    # Single digits, as Llama does: numbers then share tokens in every context, which makes
    # arithmetic and copying learnable for a small model.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    paragraphs = (p for p in text.split("\n\n") if p.strip())
    tokenizer.train_from_iterator(paragraphs, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS_EOS, eos_token=BOS_EOS, unk_token=None, pad_token=PAD
    )


def build_model(cfg: ScratchModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int) -> PreTrainedModel:
    """A randomly initialised decoder-only model from a Llama or GPT-2 config."""
    torch.manual_seed(seed)
    vocab = len(tokenizer)
    common = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
              "pad_token_id": tokenizer.pad_token_id, "tie_word_embeddings": True}
    if cfg.architecture == "llama":
        config = LlamaConfig(
            vocab_size=vocab, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_heads, max_position_embeddings=cfg.context_length, **common,
        )
    else:
        config = GPT2Config(
            vocab_size=vocab, n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
            n_inner=cfg.intermediate_size, n_positions=cfg.context_length, **common,
        )
    return AutoModelForCausalLM.from_config(config)


def sliding_windows(ids: list[int], window: int, stride: int) -> list[list[int]]:
    """Windows of ``window`` tokens starting every ``stride`` tokens; the tail window ends at the last token."""
    if len(ids) <= window:
        return [ids] if ids else []
    starts = list(range(0, len(ids) - window + 1, stride))
    if starts[-1] + window < len(ids):
        starts.append(len(ids) - window)
    return [ids[s : s + window] for s in starts]
