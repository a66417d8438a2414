"""Packing: packed rows give every example exactly the loss (and gradient) it gets alone."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from ayar.data.tokenize import IGNORE_INDEX
from ayar.errors import UsageError
from ayar.train.packing import PackingCollator, check_packing_supported, pack_bins, resolve_packing

VOCAB = 97
LENGTHS = [5, 17, 9, 3, 30, 12]


def tiny_model(kind: str, attn: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "llama":
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128)
        model = GPT2LMHeadModel(config)
    model.config._attn_implementation = attn
    return model.eval()


def examples() -> list[dict[str, list[int]]]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for n in LENGTHS:
        ids = torch.randint(1, VOCAB, (n,), generator=gen).tolist()
        labels = [IGNORE_INDEX] * (n // 3) + ids[n // 3:]  # a masked prompt, then the response
        out.append({"input_ids": ids, "labels": labels})
    return out


def loss_sums(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy per position (0 where ignored)."""
    shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), shifted, reduction="none",
                                             ignore_index=IGNORE_INDEX)


def alone_losses(model: torch.nn.Module, feats: list[dict]) -> list[float]:
    out = []
    for f in feats:
        ids, labels = torch.tensor([f["input_ids"]]), torch.tensor([f["labels"]])
        with torch.no_grad():
            out.append(loss_sums(model(input_ids=ids, use_cache=False).logits, labels).sum().item())
    return out


def packed_losses(model: torch.nn.Module, feats: list[dict], collator: PackingCollator,
                  with_positions: bool = True) -> list[float]:
    batch = collator(feats)
    kwargs = {"position_ids": batch["position_ids"]} if with_positions else {}
    with torch.no_grad():
        per_token = loss_sums(model(input_ids=batch["input_ids"], use_cache=False, **kwargs).logits, batch["labels"])
    rows = collator.rows_for([len(f["input_ids"]) for f in feats])
    out = [0.0] * len(feats)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = len(feats[i]["input_ids"])
            out[i] = per_token[r, start:start + n].sum().item()
            start += n
    return out


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("pack_length", [None, 64])
def test_packed_per_example_loss_equals_unpacked(kind: str, attn: str, pack_length: int | None) -> None:
    model, feats = tiny_model(kind, attn), examples()
    collator = PackingCollator(pad_token_id=0, pack_length=pack_length)
    assert len(collator.rows_for(LENGTHS)) < len(LENGTHS)  # examples really share rows
    alone = alone_losses(model, feats)
    packed = packed_losses(model, feats, collator)
    assert packed == pytest.approx(alone, abs=1e-5, rel=1e-5)


def test_flattened_single_row_matches_too() -> None:
    model, feats = tiny_model("llama", "sdpa"), examples()
    collator = PackingCollator(pad_token_id=0, flatten=True)
    assert collator(feats)["input_ids"].shape == (1, sum(LENGTHS))
    assert packed_losses(model, feats, collator) == pytest.approx(alone_losses(model, feats), abs=1e-5, rel=1e-5)


def test_without_restarted_positions_examples_leak_into_each_other() -> None:
    """The control: the same rows as one causal sequence give different losses, so the test above can fail."""
    model, feats = tiny_model("llama", "sdpa"), examples()
    collator = PackingCollator(pad_token_id=0, pack_length=64)
    leaked = packed_losses(model, feats, collator, with_positions=False)
    alone = alone_losses(model, feats)
    assert max(abs(a - b) for a, b in zip(leaked, alone, strict=True)) > 1e-2


def test_gradient_of_packed_batch_equals_padded_batch() -> None:
    """One training step sees the same mean loss and gradient packed or padded."""
    feats = examples()
    grads = []
    for packed in (False, True):
        model = tiny_model("gpt2", "sdpa").train()
        model.config.attn_pdrop = model.config.resid_pdrop = model.config.embd_pdrop = 0.0
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if packed:
            batch = PackingCollator(pad_token_id=0)(feats)
        else:
            width = max(LENGTHS)
            batch = {
                "input_ids": torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in feats]),
                "labels": torch.tensor([f["labels"] + [IGNORE_INDEX] * (width - len(f["labels"])) for f in feats]),
                "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                                                for f in feats]),
            }
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        grads.append((loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-5, rtol=1e-4)


def test_collator_layout() -> None:
    feats = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    batch = PackingCollator(pad_token_id=0, pack_length=6)(feats)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]  # as wide as the fullest row, not the capacity
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]  # first label of each example dropped
    padded = PackingCollator(pad_token_id=0, pack_length=4)(feats)  # two rows; the shorter one is padded
    assert padded["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert padded["position_ids"].tolist() == [[0, 1, 2], [0, 1, 0]]
    assert padded["labels"].tolist() == [[-100, 6, 7], [-100, 9, -100]]
    assert "attention_mask" not in batch  # a 2D mask would switch transformers' packed detection off


def test_collator_keeps_which_examples_the_batch_holds() -> None:
    feats = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7], "example_index": 12},
             {"input_ids": [8, 9], "labels": [8, 9], "example_index": 3}]
    batch = PackingCollator(pad_token_id=0)(feats)
    assert batch["example_index"].tolist() == [12, 3]  # per example, not per row: fault reports name them
    assert "example_index" not in PackingCollator(pad_token_id=0)([{"input_ids": [1, 2]}])


def test_a_batch_where_nothing_shares_a_row_is_padded_plainly() -> None:
    plain_calls: list[int] = []

    def plain(features: list[dict]) -> dict:
        plain_calls.append(len(features))
        return {"plain": torch.tensor(len(features))}

    collator = PackingCollator(pad_token_id=0, unpacked=plain)
    alone = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9, 4], "labels": [8, 9, 4]}]
    assert collator(alone) == {"plain": torch.tensor(2)} and plain_calls == [2]  # rows of 3: no room to share
    shared = alone + [{"input_ids": [1], "labels": [1]}, {"input_ids": [2, 3], "labels": [2, 3]}]
    assert collator(shared)["input_ids"].shape == (3, 3) and plain_calls == [2]  # 1 + 2 tokens share a row


def test_pack_bins_fills_rows_without_overflow() -> None:
    lengths = [400, 30, 120, 60, 250, 10, 500, 90, 200, 5]
    rows = pack_bins(lengths, 512)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 512 for row in rows)
    assert len(rows) == -(-sum(lengths) // 512)  # first-fit decreasing reaches the lower bound here
    assert all(row == sorted(row) for row in rows)


def test_packing_refuses_what_it_would_change() -> None:
    with pytest.raises(UsageError, match="causal_lm"):
        check_packing_supported("classification", "sdpa")
    with pytest.raises(UsageError, match="example_index"):
        check_packing_supported("causal_lm", "sdpa", ("example_index",))
    with pytest.raises(UsageError, match="position ids"):
        check_packing_supported("causal_lm", "paged_attention")
    check_packing_supported("causal_lm", "flash_attention_2")
    with pytest.raises(UsageError, match="pack_length"):
        PackingCollator(pad_token_id=0, pack_length=0)


def test_auto_packs_where_it_is_safe_and_says_why_not_elsewhere() -> None:
    from peft import PromptTuningConfig, get_peft_model

    model = tiny_model("llama", "sdpa")
    assert resolve_packing("auto", "causal_lm", model) == (True, None)
    assert resolve_packing(False, "causal_lm", model) == (False, None)
    packed, why = resolve_packing("auto", "causal_lm", model, ("example_index",))
    assert not packed and "example_index" in why
    packed, why = resolve_packing("auto", "classification", model)
    assert not packed and "causal_lm" in why
    # peft's prompt learning drops position ids: packed examples would attend to each other
    prompted = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    packed, why = resolve_packing("auto", "causal_lm", prompted)
    assert not packed and "virtual tokens" in why
    with pytest.raises(UsageError, match="set train.packing false"):
        resolve_packing(True, "causal_lm", prompted)
