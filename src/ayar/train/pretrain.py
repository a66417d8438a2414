"""Pretraining from scratch as a kind of training run: a tokenizer trained on the corpus, a small decoder
trained on its sliding windows, saved as a Hugging Face folder (:mod:`ayar.train.lifecycle` runs it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, Trainer

from ayar.console import say
from ayar.models.load import untie_embeddings
from ayar.models.scratch import build_model, read_corpus, sliding_windows, train_tokenizer
from ayar.recipe import PretrainConfig, TrainConfig
from ayar.train.callbacks import LossHistory
from ayar.train.faults import FaultGuard
from ayar.train.lifecycle import RunSetup, TrainingRun, run_training
from ayar.train.trainer import TrainerBuild, build_trainer


@dataclass
class PretrainResult:
    model_dir: Path
    windows: int
    tokens_in_corpus: int
    final_loss: float
    steps: int
    wall_time_s: float


class PretrainRun(TrainingRun):
    """A tokenizer and a small model from scratch on the recipe's corpus."""

    def __init__(self, cfg: PretrainConfig, seed: int) -> None:
        self.cfg, self.seed = cfg, seed
        self.text = ""
        self.corpus_tokens = 0
        self.dataset: Any = None

    def tokenizer(self) -> Any:
        self.text = read_corpus(self.cfg.corpus)
        return train_tokenizer(self.text, self.cfg.tokenizer)

    def prepare_data(self, tokenizer: Any) -> None:
        ids = tokenizer(self.text, add_special_tokens=False)["input_ids"]
        window = min(self.cfg.window, self.cfg.model.context_length)
        self.dataset = Dataset.from_dict({"input_ids": sliding_windows(ids, window, self.cfg.stride)})
        self.corpus_tokens = len(ids)
        say(f"pretrain: {len(ids):,} corpus tokens, {len(self.dataset):,} windows of {window}")

    def build_trainer(self, setup: RunSetup, tokenizer: Any, batch: int, accum: int, history: LossHistory,
                      faults: FaultGuard) -> Trainer:
        model = build_model(self.cfg.model, tokenizer, self.seed)
        return build_trainer(TrainerBuild(
            model, setup.train.model_copy(update={"batch_size": batch, "grad_accum": accum}), setup.checkpoints,
            self.dataset, seed=setup.seed, history=history, faults=faults,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), tensorboard_dir=setup.run_dir / "tb",
            arguments={"disable_tqdm": True}, resumable_order=False))  # no checkpoints: the Trainer's own order

    def describe(self, trainer: Trainer) -> str:
        return "pretrain"

    def write_model(self, trainer: Trainer, tokenizer: Any, folder: Path) -> None:
        untie_embeddings(trainer.model)
        super().write_model(trainer, tokenizer, folder)


def pretrain_settings(cfg: PretrainConfig) -> TrainConfig:
    """The pretrain section as a train section: cosine schedule, light weight decay, no packing."""
    return TrainConfig(max_steps=cfg.max_steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                       warmup_ratio=cfg.warmup_ratio, scheduler="cosine", weight_decay=0.01,
                       precision=cfg.precision, logging_steps=max(1, cfg.max_steps // 20), packing=False,
                       chunked_loss=False)


def pretrain(cfg: PretrainConfig, out_dir: Path, seed: int) -> PretrainResult:
    """Train a tokenizer and a small model from scratch on the corpus; save to out_dir/model."""
    run = PretrainRun(cfg, seed)
    result = run_training(run, RunSetup(out_dir, pretrain_settings(cfg), seed))
    losses = [r["loss"] for r in result.loss_history if "loss" in r]
    say(f"pretrain: {result.steps} steps in {result.wall_time_s:.0f}s, loss {losses[0]:.2f} -> {losses[-1]:.2f}")
    return PretrainResult(result.model_dir, len(run.dataset), run.corpus_tokens, result.final_loss, result.steps,
                          result.wall_time_s)
