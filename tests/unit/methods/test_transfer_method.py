"""Transfer: a pretrained body with a fresh task head, the body frozen for a first phase."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from method_helpers import NUM_LABELS, tiny_batch, tiny_model
from trainer_helpers import FirstChange, train_tiny
from transformers import AutoModelForSequenceClassification

from ayar.errors import UsageError
from ayar.methods import build_method
from ayar.methods.base import count_parameters


def saved_bert(tmp_path: Path) -> Path:
    """A BERT classifier saved to disk, so loading it marks every weight as pretrained (head included)."""
    path = tmp_path / "bert"
    tiny_model("bert").save_pretrained(path)
    return path


def test_new_head_is_drawn_fresh_and_body_kept(tmp_path: Path) -> None:
    path = saved_bert(tmp_path)
    original = AutoModelForSequenceClassification.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    build_method("transfer").prepare_model(model, "classification")
    for name, p in model.named_parameters():
        same = torch.equal(p, original.get_parameter(name))
        if name.startswith(("classifier.", "bert.pooler.")):
            assert not same or name.endswith("bias"), name  # biases are re-drawn as zeros
        else:
            assert same, name


def test_reinit_head_false_keeps_the_checkpoint_head(tmp_path: Path) -> None:
    path = saved_bert(tmp_path)
    original = AutoModelForSequenceClassification.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    build_method("transfer", {"reinit_head": False}).prepare_model(model, "classification")
    assert torch.equal(model.classifier.weight, original.classifier.weight)


def test_frozen_body_phase_then_everything(tmp_path: Path) -> None:
    model = tiny_model("bert")
    method = build_method("transfer", {"freeze_body_for": 3, "unit": "steps"})
    method.prepare_model(model, "classification")
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("classifier.", "bert.pooler.")))
    assert head == 16 * NUM_LABELS + NUM_LABELS + 16 * 16 + 16
    assert count_parameters(model)[0] == head
    watch = FirstChange(method.groups)
    train_tiny(model, method, tiny_batch("bert"), tmp_path, max_steps=5, batch_size=4, callbacks=[watch])
    assert watch.first == {method.groups[0].name: 1, "body": 4}
    trainable, total = count_parameters(model)
    assert trainable == total


def test_no_frozen_phase_trains_all_from_the_start(tmp_path: Path) -> None:
    model = tiny_model("llama_cls")
    method = build_method("transfer")
    method.prepare_model(model, "classification")
    assert count_parameters(model)[0] == count_parameters(model)[1]
    watch = FirstChange(method.groups)
    train_tiny(model, method, tiny_batch("llama_cls"), tmp_path, max_steps=1, batch_size=4, callbacks=[watch])
    assert set(watch.first.values()) == {1}


def test_body_learning_rate_scale(tmp_path: Path) -> None:
    model = tiny_model("bert")
    method = build_method("transfer", {"body_lr_scale": 0.1})
    method.prepare_model(model, "classification")
    groups = method.param_groups(model, 1e-3, 0.0)
    body_ids = {id(p) for p in method.groups[1].params}
    for group in groups:
        assert group["lr"] == pytest.approx(1e-4 if id(group["params"][0]) in body_ids else 1e-3)


def test_loss_falls_with_a_frozen_body(tmp_path: Path) -> None:
    model = tiny_model("bert")
    method = build_method("transfer", {"freeze_body_for": 100, "unit": "steps"})
    method.prepare_model(model, "classification")
    batch = tiny_batch("bert")
    before = float(model(**batch).loss)
    train_tiny(model, method, batch, tmp_path, max_steps=20, batch_size=4, callbacks=[], weight_decay=0.0)
    assert float(model(**batch).loss) < 0.7 * before


def test_reinit_of_a_tied_lm_head_is_refused() -> None:
    with pytest.raises(UsageError, match="tied"):
        build_method("transfer", {"reinit_head": True}).prepare_model(tiny_model("gpt2"), "causal_lm")
