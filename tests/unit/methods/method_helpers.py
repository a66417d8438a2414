"""Tiny models of every family, fixed over-fit batches and weight-diff helpers for the method tests."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    T5Config,
)

VOCAB = 48
NUM_LABELS = 3


def tiny_model(family: str) -> torch.nn.Module:
    """A 3-block (T5: 3 encoder + 2 decoder blocks) model of width 16, seeded."""
    torch.manual_seed(0)
    if family == "llama":
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                          num_key_value_heads=2, intermediate_size=32, max_position_embeddings=64, initializer_range=0.2,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        return AutoModelForCausalLM.from_config(cfg)
    if family == "gpt2":  # tied input and output embeddings
        cfg = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=3, n_head=2, n_positions=64, resid_pdrop=0.0, initializer_range=0.2,
                         embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0)
        return AutoModelForCausalLM.from_config(cfg)
    if family == "bert":
        cfg = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64, num_labels=NUM_LABELS, pad_token_id=0, initializer_range=0.2,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return AutoModelForSequenceClassification.from_config(cfg)
    if family == "llama_cls":
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                          num_key_value_heads=2, intermediate_size=32, max_position_embeddings=64, initializer_range=0.2,
                          pad_token_id=0, num_labels=NUM_LABELS)
        return AutoModelForSequenceClassification.from_config(cfg)
    if family == "t5":
        cfg = T5Config(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=3, num_decoder_layers=2,
                       num_heads=2, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
        return AutoModelForSeq2SeqLM.from_config(cfg)
    raise ValueError(family)


TASK_OF = {"llama": "causal_lm", "gpt2": "causal_lm", "bert": "classification", "llama_cls": "classification",
           "t5": "seq2seq"}


def tiny_batch(family: str, batch: int = 4, length: int = 8) -> dict[str, torch.Tensor]:
    """A fixed batch (no padding) that even a soft prompt can over-fit: the targets are one repeated token."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (batch, length), generator=gen)
    task = TASK_OF[family]
    if task == "causal_lm":
        ids[:, 1:] = 7  # after a random first token, always 7
        labels = ids.clone()
    elif task == "classification":
        labels = torch.arange(batch) % NUM_LABELS
    else:
        labels = torch.full((batch, 5), 7)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed_names(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    """Names of parameters that are not bitwise equal to the snapshot."""
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def run_steps(model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int, lr: float = 1e-2,
              groups: list[dict] | None = None) -> list[float]:
    """Plain AdamW steps on one batch; returns the loss before each step."""
    params = groups if groups is not None else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


def assert_method_effects(model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int = 3,
                          lr: float = 1e-2) -> None:
    """After a few steps every frozen tensor is bitwise unchanged and every trainable one moved."""
    before = snapshot(model)
    trainable = trainable_names(model)
    assert trainable, "nothing is trainable"
    run_steps(model, batch, steps, lr)
    changed = changed_names(before, model)
    assert changed == trainable, (
        f"frozen but changed: {sorted(changed - trainable)[:5]}; trainable but unchanged: "
        f"{sorted(trainable - changed)[:5]}"
    )


def assert_overfits(model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int = 30,
                    lr: float = 1e-2, ratio: float = 0.7) -> None:
    """Loss on the fixed batch falls below ``ratio`` of its start."""
    losses = run_steps(model, batch, steps, lr)
    assert losses[-1] < ratio * losses[0], f"loss did not fall: {losses[0]:.4f} -> {losses[-1]:.4f}"


def linear_dims(module: torch.nn.Module) -> tuple[int, int]:
    """(in, out) features of a Linear or of GPT-2's Conv1D (weight stored as in x out)."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    rows, cols = module.weight.shape
    return rows, cols


def modules_matching(model: torch.nn.Module, keys: list[str]) -> list[torch.nn.Module]:
    """Modules whose name is a key or ends with '.key' (peft's target matching)."""
    return [m for name, m in model.named_modules()
            if any(name == k or name.endswith(f".{k}") for k in keys)]


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
