"""Learning to reweight: gradient-agreement scores are right, flipped labels end with lower weights, weights saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from advanced_helpers import as_dataset, key_task, tiny_classifier, train_with

from ayar.errors import UsageError
from ayar.methods import build_method
from ayar.methods.reweight import LastLayerTap, full_gradient_scores, row_losses


def noisy_task(n: int, share: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    rows = key_task(n, seed=0)
    gen = torch.Generator().manual_seed(7)
    flip = torch.rand(n, generator=gen) < share
    wrong = (rows["labels"] + torch.randint(1, 3, (n,), generator=gen)) % 3
    rows["labels"] = torch.where(flip, wrong, rows["labels"])
    return rows, flip


def test_full_gradient_scores_equal_exact_dot_products() -> None:
    model = tiny_classifier(seed=2)
    tap = LastLayerTap(model, 3)
    batch, trusted = key_task(5, seed=1), key_task(8, seed=2)
    params = [p for p in model.parameters() if p.requires_grad]
    g_trusted = torch.autograd.grad(row_losses(model, trusted, "classification", tap).mean(), params)
    exact = []
    for row in range(5):
        one = {k: v[row:row + 1] for k, v in batch.items()}
        g_row = torch.autograd.grad(row_losses(model, one, "classification", tap).sum(), params)
        exact.append(sum(float((a * b).sum()) for a, b in zip(g_row, g_trusted, strict=True)))
    scores = full_gradient_scores(model, batch, trusted, "classification", tap)
    assert scores.tolist() == pytest.approx(exact, rel=2e-2, abs=1e-6)


def test_flipped_labels_end_with_lower_weights_and_are_saved(tmp_path: Path) -> None:
    rows, flip = noisy_task(240, 0.3)
    model = tiny_classifier(seed=2)
    method = build_method("reweight", {"trusted_batch_size": 30, "momentum": 0.0})
    method.prepare_model(model, "classification")
    method.weights_path = tmp_path / "example_weights.jsonl"
    method.use_validation(as_dataset(key_task(30, seed=5)))
    train_with(model, method, as_dataset(rows), tmp_path, steps=300)
    weights = method.mean_weights()
    flipped = sum(weights[i] for i in range(240) if flip[i]) / int(flip.sum())
    clean = sum(weights[i] for i in range(240) if not flip[i]) / int((~flip).sum())
    print(f"mean weight: flipped {flipped:.3f}, clean {clean:.3f}")
    assert flipped < 0.7 * clean  # measured: 0.58 vs 1.17
    lines = [json.loads(line) for line in method.weights_path.read_text().splitlines()]
    assert [line["example_index"] for line in lines] == list(range(240))
    assert lines[3]["mean_weight"] == pytest.approx(weights[3], abs=1e-5) and lines[3]["seen"] >= 1


def test_without_a_validation_split_is_a_usage_error() -> None:
    method = build_method("reweight")
    with pytest.raises(UsageError, match="validation split"):
        method.use_validation(None)
