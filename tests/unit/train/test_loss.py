"""The chunked output-layer cross-entropy: the same loss and gradients as the model's own, in fp32 and bf16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from test_packing import VOCAB, examples, tiny_model
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DataCollatorForSeq2Seq,
    PreTrainedTokenizerFast,
    TrainingArguments,
)

from ayar.data.tokenize import IGNORE_INDEX
from ayar.methods import build_method
from ayar.models.heads import output_layer
from ayar.train.engine import AyarTrainer
from ayar.train.loss import linear_cross_entropy


def reference(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = (hidden @ weight.T).float()
    shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), shifted, ignore_index=IGNORE_INDEX)


def random_case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 11, 16, generator=gen, requires_grad=True)
    weight = torch.randn(VOCAB, 16, generator=gen, requires_grad=True)
    labels = torch.randint(0, VOCAB, (3, 11), generator=gen)
    labels[0, :6] = IGNORE_INDEX  # a masked prompt
    labels[2] = IGNORE_INDEX  # a row with no label: its chunk is skipped
    return hidden, weight, labels


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_loss_and_gradients_equal_the_full_logits_path(chunk: int) -> None:
    hidden, weight, labels = random_case()
    expected = reference(hidden, weight, labels)
    want = torch.autograd.grad(expected, (hidden, weight))
    got_loss = linear_cross_entropy(hidden, weight, labels, chunk=chunk)
    got = torch.autograd.grad(got_loss, (hidden, weight))
    assert got_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_num_items_in_batch_divides_the_sum() -> None:
    hidden, weight, labels = random_case()
    mean = linear_cross_entropy(hidden, weight, labels)
    count = int((torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:] != IGNORE_INDEX).sum())
    assert linear_cross_entropy(hidden, weight, labels, num_items_in_batch=2 * count).item() == \
        pytest.approx(mean.item() / 2, rel=1e-6)


def test_bf16_autocast_matches_the_autocast_head_within_bf16_precision() -> None:
    hidden, weight, labels = random_case(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(hidden, weight, labels)
        got = linear_cross_entropy(hidden, weight, labels, chunk=4)
    want_grads = torch.autograd.grad(expected, (hidden, weight))
    got_grads = torch.autograd.grad(got, (hidden, weight))
    assert got.item() == pytest.approx(expected.item(), rel=1e-3)
    for a, b in zip(got_grads, want_grads, strict=True):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_confident_rows_give_the_exact_loss_without_overflow(dtype: torch.dtype) -> None:
    """The log-sum-exp comes from the top probability: exact where the targets' probabilities underflow."""
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(1, 40, 16, generator=gen)
    weight = torch.randn(VOCAB, 16, generator=gen) * 30  # logits spread over hundreds: p(target) ~ e^-300
    labels = torch.randint(0, VOCAB, (1, 40), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        expected = reference(hidden, weight, labels)
        got = linear_cross_entropy(hidden, weight, labels, chunk=7)
    assert expected.item() > 100  # the case is what it claims to be
    assert torch.isfinite(got)
    # fp32: exact; bf16: the top probability's rounding moves each token's loss by under 0.002 nats
    assert got.item() == pytest.approx(expected.item(), abs=1e-4 if dtype == torch.float32 else 2e-3)


def test_only_a_plain_output_layer_of_a_known_architecture_is_chunked() -> None:
    gpt2 = tiny_model("gpt2", "sdpa")
    assert output_layer(gpt2)[2] is gpt2.lm_head
    bert = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32))
    assert output_layer(bert) is None  # its decoder has a bias and a transform before it
    lora_head = get_peft_model(tiny_model("llama", "sdpa"), LoraConfig(r=2, target_modules=["lm_head"]))
    assert output_layer(lora_head) is None  # LoRA's logits are not hidden @ weight.T
    lora_body = get_peft_model(tiny_model("llama", "sdpa"), LoraConfig(r=2, target_modules=["q_proj"]))
    assert output_layer(lora_body) is not None


def tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    vocab = {f"t{i}": i for i in range(VOCAB)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="t1")), pad_token="t0")


def train_steps(kind: str, chunked: bool, tmp_path: Path, precision: str = "fp32") -> tuple[list[float], dict]:
    """Three optimizer steps (grad_accum 2) of the engine's trainer; the losses and final weights."""
    model = tiny_model(kind, "sdpa").train()
    data = Dataset.from_list(examples() * 2)
    args = TrainingArguments(output_dir=str(tmp_path / f"{kind}{chunked}"), max_steps=3, per_device_train_batch_size=2,
                             gradient_accumulation_steps=2, learning_rate=1e-2, logging_steps=1, report_to="none",
                             use_cpu=True, bf16=precision == "bf16", save_strategy="no", disable_tqdm=True, seed=0,
                             remove_unused_columns=False, dataloader_num_workers=0)
    tok = tokenizer()
    trainer = AyarTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                          data_collator=DataCollatorForSeq2Seq(tok, label_pad_token_id=IGNORE_INDEX),
                          method=build_method("full"), chunked_loss=chunked)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_training_with_the_chunked_loss_follows_the_same_path(kind: str, tmp_path: Path) -> None:
    plain_losses, plain = train_steps(kind, False, tmp_path)
    chunked_losses, chunked = train_steps(kind, True, tmp_path)
    assert chunked_losses == pytest.approx(plain_losses, rel=1e-5)
    assert plain_losses[-1] < plain_losses[0]  # the weights did move: the comparison is not vacuous
    for name, weight in plain.items():  # Adam turns float rounding in near-zero gradients into steps of
        torch.testing.assert_close(chunked[name], weight, rtol=1e-4, atol=1e-4, msg=name)  # <1% of lr


def test_bf16_training_computes_the_chunked_loss_under_autocast(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """accelerate autocasts the model's forward only: the loss outside it must still multiply in bf16."""
    import ayar.train.trainer as trainer_module  # where the trainer calls the chunked loss

    seen: list[bool] = []

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return linear_cross_entropy(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "linear_cross_entropy", spy)
    train_steps("llama", True, tmp_path, precision="bf16")
    assert seen and all(seen)
