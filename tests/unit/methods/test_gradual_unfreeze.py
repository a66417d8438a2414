"""Gradual unfreezing: each group starts to change at exactly the step the schedule says."""

from __future__ import annotations

from pathlib import Path

import pytest
from method_helpers import tiny_batch, tiny_model
from trainer_helpers import FirstChange, MethodTrainer, train_tiny

from ayar.errors import AyarError
from ayar.methods import build_method
from ayar.methods.base import count_parameters


def test_starts_with_head_and_top_block_only() -> None:
    model = tiny_model("llama")
    method = build_method("gradual_unfreeze", {"unit": "steps", "unfreeze_every": 2})
    method.prepare_model(model, "causal_lm")
    expected = sum(p.numel() for n, p in model.named_parameters()
                   if n.startswith(("lm_head.", "model.layers.2.", "model.norm.")))
    assert count_parameters(model)[0] == expected


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_each_group_starts_changing_at_its_step(family: str, tmp_path: Path) -> None:
    every = 2
    model = tiny_model(family)
    method = build_method("gradual_unfreeze", {"unit": "steps", "unfreeze_every": every})
    method.prepare_model(model, "causal_lm" if family == "llama" else "seq2seq")
    watch = FirstChange(method.groups)
    steps = every * (len(method.groups) - 2) + 1
    train_tiny(model, method, tiny_batch(family), tmp_path, max_steps=steps, batch_size=4, callbacks=[watch])
    # Head and top group move at step 1; group g (g >= 2) is unfrozen after step every*(g-1), so it moves at the next.
    expected = {g.name: 1 if i < 2 else every * (i - 1) + 1 for i, g in enumerate(method.groups)}
    assert watch.first == expected
    assert [e["step"] for e in method.schedule.events] == [0, 0] + [every * (i - 1) for i in range(2, len(expected))]


def test_unfreezes_once_per_epoch(tmp_path: Path) -> None:
    model = tiny_model("bert")
    method = build_method("gradual_unfreeze", {"unit": "epochs", "unfreeze_every": 1})
    method.prepare_model(model, "classification")
    watch = FirstChange(method.groups)
    # 4 rows, batches of 2: two optimizer steps per epoch; 5 groups need 3 more epochs after the first.
    train_tiny(model, method, tiny_batch("bert"), tmp_path, max_steps=8, batch_size=2, callbacks=[watch])
    assert list(watch.first.values()) == [1, 1, 3, 5, 7]
    assert [g.name for g in method.groups][-1] == "embeddings"


def test_discriminative_learning_rates(tmp_path: Path) -> None:
    model = tiny_model("llama")
    method = build_method("gradual_unfreeze", {"unit": "steps", "unfreeze_every": 1, "lr_decay": 0.5})
    method.prepare_model(model, "causal_lm")
    trainer = train_tiny(model, method, tiny_batch("llama"), tmp_path, max_steps=1, batch_size=4, callbacks=[],
                         lr=0.01)
    lr_of = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    for i, group in enumerate(method.groups):
        (lr,) = {lr_of[id(p)] for p in group.params}
        assert lr == pytest.approx(0.01 * 0.5**i)


def test_loss_falls(tmp_path: Path) -> None:
    model = tiny_model("llama")
    method = build_method("gradual_unfreeze", {"unit": "steps", "unfreeze_every": 5})
    method.prepare_model(model, "causal_lm")
    batch = tiny_batch("llama")
    before = float(model(**batch).loss)
    train_tiny(model, method, batch, tmp_path, max_steps=25, batch_size=4, callbacks=[], weight_decay=0.0)
    assert float(model(**batch).loss) < 0.7 * before


def test_optimizer_without_frozen_groups_fails_loudly(tmp_path: Path) -> None:
    """A Trainer that ignores param_groups would never train the later groups: that must not pass silently."""
    from transformers import Trainer

    model = tiny_model("llama")
    method = build_method("gradual_unfreeze", {"unit": "steps"})
    method.prepare_model(model, "causal_lm")
    original = MethodTrainer.create_optimizer
    MethodTrainer.create_optimizer = Trainer.create_optimizer  # the default: frozen weights left out
    try:
        with pytest.raises(AyarError, match="param_groups"):
            train_tiny(model, method, tiny_batch("llama"), tmp_path, max_steps=1, batch_size=4, callbacks=[])
    finally:
        MethodTrainer.create_optimizer = original
