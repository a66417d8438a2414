"""The pretrain stage: tokenizer + small decoder trained from scratch, saved as a Hugging Face folder."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, set_seed

from ayar.console import say
from ayar.models.load import untie_embeddings
from ayar.models.scratch import build_model, read_corpus, sliding_windows, train_tokenizer
from ayar.recipe import PretrainConfig, TrainConfig
from ayar.train.callbacks import LossHistory
from ayar.train.trainer import build_trainer


@dataclass
class PretrainResult:
    model_dir: Path
    windows: int
    tokens_in_corpus: int
    final_loss: float
    steps: int
    wall_time_s: float


def pretrain(cfg: PretrainConfig, out_dir: Path, seed: int) -> PretrainResult:
    """Train a tokenizer and a small model from scratch on the corpus; save to out_dir."""
    set_seed(seed)
    text = read_corpus(cfg.corpus)
    tokenizer = train_tokenizer(text, cfg.tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    window = min(cfg.window, cfg.model.context_length)
    windows = sliding_windows(ids, window, cfg.stride)
    dataset = Dataset.from_dict({"input_ids": windows})
    model = build_model(cfg.model, tokenizer, seed)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"pretrain: {len(ids):,} corpus tokens, {len(windows):,} windows of {window}, "
          f"{n_params:,} parameters")

    history = LossHistory()
    cfg_train = TrainConfig(max_steps=cfg.max_steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                            warmup_ratio=cfg.warmup_ratio, scheduler="cosine", weight_decay=0.01,
                            precision=cfg.precision, logging_steps=max(1, cfg.max_steps // 20), packing=False,
                            chunked_loss=False)
    trainer = build_trainer(model, cfg_train, out_dir / "checkpoints", dataset, seed=seed, history=history,
                            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                            tensorboard_dir=out_dir / "tb", arguments={"disable_tqdm": True},
                            resumable_order=False)  # no checkpoints: the Trainer's own order, as before
    start = time.perf_counter()
    output = trainer.train()
    wall = time.perf_counter() - start
    model_dir = out_dir / "model"
    untie_embeddings(trainer.model)
    trainer.model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    losses = [r["loss"] for r in history.records if "loss" in r]
    (out_dir / "history.json").write_text(json.dumps(history.records, indent=1), encoding="utf-8")
    say(f"pretrain: {output.global_step} steps in {wall:.0f}s, loss {losses[0]:.2f} -> {losses[-1]:.2f}")
    return PretrainResult(model_dir, len(windows), len(ids), losses[-1], output.global_step, wall)
