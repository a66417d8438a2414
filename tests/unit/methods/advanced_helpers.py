"""Synthetic token tasks and the engine's own trainer, for the distill/reweight/alum/guided_attention effect tests."""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    TrainingArguments,
    default_data_collator,
)

from ayar.methods.base import Method
from ayar.train.engine import AyarTrainer

VOCAB = 48
NUM_CLASSES = 3
KEYS = {c: list(range(3 + 6 * c, 9 + 6 * c)) for c in range(NUM_CLASSES)}  # 6 key tokens per class
FILLER = list(range(21, VOCAB))


def key_task(n: int, seed: int, length: int = 10) -> dict[str, torch.Tensor]:
    """Rows of filler tokens with two key tokens of the row's class at random places; label = the class."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    ids = torch.tensor(FILLER)[torch.randint(0, len(FILLER), (n, length), generator=gen)]
    for row, label in enumerate(labels.tolist()):
        keys = torch.tensor(KEYS[label])[torch.randint(0, 6, (2,), generator=gen)]
        places = torch.randperm(length - 1, generator=gen)[:2] + 1
        ids[row, places] = keys
    ids[:, 0] = 1  # a CLS-like first token
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def tiny_classifier(width: int = 16, layers: int = 2, seed: int = 0) -> torch.nn.Module:
    """A seeded BERT-style classifier without dropout."""
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=width, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * width, max_position_embeddings=32, num_labels=NUM_CLASSES,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
    return AutoModelForSequenceClassification.from_config(cfg)


def as_dataset(batch: dict[str, torch.Tensor]) -> Dataset:
    """A datasets.Dataset of the rows, each with its ``example_index`` as the engine's tokenizer adds it."""
    n = len(batch["input_ids"])
    return Dataset.from_dict({**{k: v.tolist() for k, v in batch.items()}, "example_index": list(range(n))})


def train_with(model: torch.nn.Module, method: Method, data: Dataset, out: Path, steps: int,
               batch_size: int = 16, lr: float = 3e-3, grad_accum: int = 1, warmup: float = 0.0,
               bf16: bool = False) -> AyarTrainer:
    """Train as the engine does (AyarTrainer: meta columns to the method, its loss and optimizer)."""
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
        gradient_accumulation_steps=grad_accum, weight_decay=0.0, lr_scheduler_type="constant_with_warmup"
        if warmup else "constant", warmup_steps=warmup, logging_steps=1000, save_strategy="no", report_to="none",
        use_cpu=True, bf16=bf16, disable_tqdm=True, seed=0, dataloader_num_workers=0, remove_unused_columns=False,
    )
    trainer = AyarTrainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator,
                          callbacks=method.callbacks(), method=method)
    trainer.train()
    return trainer


@torch.no_grad()
def accuracy(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    model.eval()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float((logits.argmax(-1) == batch["labels"]).float().mean())
