"""train.shared_opening: a batch's common opening run once gives the same loss, gradients and training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from test_loss import tokenizer
from test_packing import VOCAB, tiny_model
from transformers import DataCollatorForSeq2Seq, TrainingArguments

from ayar.data.tokenize import IGNORE_INDEX
from ayar.methods import build_method
from ayar.models.heads import hidden_states_as_logits, output_layer
from ayar.models.opening import MIN_SHARED_TOKENS, forward_with_shared_opening
from ayar.train.engine import AyarTrainer
from ayar.train.loss import linear_cross_entropy

OPENING = 12  # a system prompt's tokens, the same in every row


def chat_like_examples(opening: int = OPENING) -> list[dict[str, list[int]]]:
    gen = torch.Generator().manual_seed(4)
    shared = torch.randint(1, VOCAB, (opening,), generator=gen).tolist()
    out = []
    for n in [5, 17, 9, 3, 12, 8]:
        ids = shared + torch.randint(1, VOCAB, (n,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (opening + n // 2) + ids[opening + n // 2:]})
    return out


def forward_lengths(model: torch.nn.Module) -> list[tuple[int, int]]:
    """(rows, tokens) of every forward the model's embedding sees from now on."""
    seen: list[tuple[int, int]] = []
    model.get_input_embeddings().register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape)))
    return seen


def loss_and_grads(model: torch.nn.Module, batch: dict[str, torch.Tensor], shared: bool) -> tuple[float, dict]:
    model.zero_grad()
    parent, attribute, layer = output_layer(model.get_base_model() if hasattr(model, "get_base_model") else model)
    with hidden_states_as_logits(parent, attribute):
        if shared:
            hidden = forward_with_shared_opening(model, batch["input_ids"], batch["attention_mask"]).logits
        else:
            hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = linear_cross_entropy(hidden, layer.weight, batch["labels"], None)
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", ["llama-lora", "gpt2-full"])
def test_the_opening_run_once_gives_the_same_loss_and_gradients(kind: str) -> None:
    model = tiny_model(kind.split("-")[0], "sdpa").train()
    model.config.attn_pdrop = 0.0  # GPT-2's dropout would draw other masks in each pass
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if kind.endswith("lora"):
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "up_proj"],
                                                 init_lora_weights=False))  # non-zero B: the adapter acts
    batch = DataCollatorForSeq2Seq(tokenizer(), label_pad_token_id=IGNORE_INDEX)(chat_like_examples())
    seen = forward_lengths(model)
    plain_loss, plain = loss_and_grads(model, batch, shared=False)
    shared_loss, shared = loss_and_grads(model, batch, shared=True)
    width = batch["input_ids"].shape[1]
    assert seen == [(6, width), (1, OPENING), (6, width - OPENING)]  # the opening ran once, for six rows
    assert shared_loss == pytest.approx(plain_loss, rel=1e-6)
    assert plain
    for name, grad in plain.items():
        torch.testing.assert_close(shared[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_rows_that_do_not_open_alike_run_whole() -> None:
    model = tiny_model("llama", "sdpa")
    batch = DataCollatorForSeq2Seq(tokenizer(), label_pad_token_id=IGNORE_INDEX)(
        chat_like_examples(opening=MIN_SHARED_TOKENS - 1))
    seen = forward_lengths(model)
    forward_with_shared_opening(model, batch["input_ids"], batch["attention_mask"])
    assert seen == [(6, batch["input_ids"].shape[1])]


def train(shared_opening: bool, tmp_path: Path) -> tuple[list[float], dict[str, torch.Tensor], list]:
    model = get_peft_model(tiny_model("llama", "sdpa"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    seen = forward_lengths(model)
    args = TrainingArguments(output_dir=str(tmp_path / str(shared_opening)), max_steps=4, per_device_train_batch_size=3,
                             learning_rate=1e-2, logging_steps=1, report_to="none", use_cpu=True, save_strategy="no",
                             disable_tqdm=True, seed=0, remove_unused_columns=False, dataloader_num_workers=0)
    tok = tokenizer()
    trainer = AyarTrainer(model=model.train(), args=args, train_dataset=Dataset.from_list(chat_like_examples() * 2),
                          processing_class=tok, data_collator=DataCollatorForSeq2Seq(tok, label_pad_token_id=IGNORE_INDEX),
                          method=build_method("lora"), chunked_loss=True, shared_opening=shared_opening)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    weights = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    return losses, weights, seen


def test_training_with_the_shared_opening_follows_the_same_path(tmp_path: Path) -> None:
    plain_losses, plain, _ = train(False, tmp_path)
    shared_losses, shared, seen = train(True, tmp_path)
    assert (1, OPENING) in seen  # the trainer took the shared path
    assert shared_losses == pytest.approx(plain_losses, rel=1e-5)
    assert all(weight.abs().max() > 0 for name, weight in plain.items() if "lora_B" in name)  # training moved them
    for name, weight in plain.items():
        torch.testing.assert_close(shared[name], weight, rtol=1e-4, atol=1e-5, msg=name)


def test_a_model_that_drops_out_runs_whole() -> None:
    model = tiny_model("gpt2", "sdpa").train()  # GPT-2's default dropout, 0.1
    batch = DataCollatorForSeq2Seq(tokenizer(), label_pad_token_id=IGNORE_INDEX)(chat_like_examples())
    seen = forward_lengths(model)
    forward_with_shared_opening(model, batch["input_ids"], batch["attention_mask"])
    assert seen == [(6, batch["input_ids"].shape[1])]
