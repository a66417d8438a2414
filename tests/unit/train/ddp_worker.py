"""One training run for the DDP test: single-process, or one rank of a torchrun launch.

Every file-creating call under the output folder is recorded (a Python audit hook) in a per-rank
log outside it, so the test can see which ranks wrote.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models
from transformers import DataCollatorForSeq2Seq, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ayar.methods import build_method
from ayar.recipe import TrainConfig
from ayar.train.engine import AyarTrainer, training_arguments
from ayar.train.launch import is_main_process, world

WRITE_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "shutil.copyfile", "shutil.rmtree"}


def audit_writes(root: Path, log: list[str]) -> None:
    root_text = str(root)

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], (str, os.PathLike)):
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            if str(args[0]).startswith(root_text) and any(c in mode for c in "wax+"):
                log.append(f"open {args[0]}")
        elif event in WRITE_EVENTS and args and str(args[0]).startswith(root_text):
            log.append(f"{event} {args[0]}")

    sys.addaudithook(hook)


def main(out: Path, audit: Path, batch_size: int, steps: int) -> None:
    torch.set_num_threads(1)
    rank = world()[0]
    log: list[str] = []
    audit_writes(out, log)
    vocab = {f"t{i}": i for i in range(64)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t1")),
                                        pad_token="t0", eos_token="t2")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                         pad_token_id=0))
    gen = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(64):
        start, length = torch.randint(0, 61, (2,), generator=gen).tolist()
        ids = [3 + (start + k) % 61 for k in range(6 + length % 24)]  # counting: learnable in a few steps
        rows.append({"input_ids": ids, "labels": ids})
    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, learning_rate=1e-2, warmup_ratio=0.0, logging_steps=1,
                      save_steps=steps // 2, group_by_length=False, precision="fp32")
    args = training_arguments(cfg, out / "checkpoints", seed=0, has_eval=False)
    args.ddp_backend = "gloo"  # CPU processes talk over gloo
    method = build_method("full", {})
    trainer = AyarTrainer(model=method.prepare_model(model, "causal_lm"), args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer, method=method,
                          data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    trainer.train()
    trainer.save_model(str(out / "model"))  # the Trainer writes on the main process only
    if is_main_process():
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        (out / "losses.json").write_text(json.dumps(losses))
    audit.mkdir(parents=True, exist_ok=True)
    (audit / f"rank{rank}.json").write_text(json.dumps(log))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve(), int(sys.argv[3]), int(sys.argv[4]))
