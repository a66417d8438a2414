"""Learning to reweight (Ren et al., 2018): examples whose gradient opposes a trusted batch's count less.

Every step, each training example gets the weight max(0, <g_i, g_trusted>) (normalised over the
batch), where g_i is the gradient of its own loss and g_trusted that of a small batch from the
validation split; the step trains on the weighted loss. Gradients are those of the last layer
(the LM head or the classifier), computed in closed form from its inputs and output errors, so a
step costs one extra forward pass of the trusted batch instead of Ren et al.'s extra backward
passes through the whole model (docs/advanced-methods.md#reweight gives the measured agreement).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from transformers import PreTrainedModel, TrainerCallback

from ayar.console import say
from ayar.data.tokenize import IGNORE_INDEX
from ayar.errors import UsageError
from ayar.methods import register
from ayar.methods.wrapping import WrappedParams, WrappingMethod
from ayar.tasks import get_task

WEIGHTS_FILE = "example_weights.jsonl"
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")


class ReweightParams(WrappedParams):

    trusted_size: int = Field(64, ge=1, description="Rows of the validation split used as the trusted set.")
    trusted_batch_size: int = Field(64, ge=1, description="Trusted rows compared with each training batch; "
                                    "too few give a noisy trusted gradient (docs/advanced-methods.md#reweight).")
    gradient: Literal["full", "last_layer"] = Field(
        "full", description="full: Ren et al.'s <g_i, g_trusted> over every trainable weight (finite "
        "differences: 2 extra forward passes); last_layer: the output layer only (closed form, cheaper).")
    weighting: Literal["ren", "sign"] = Field(
        "ren", description="ren: weight proportional to max(0, <g_i, g_trusted>); sign: 1 where it is "
        "positive, else 0 (every agreeing example counts the same).")
    momentum: float = Field(0.0, ge=0, lt=1, description="Each example keeps a weight across visits: "
                            "w <- momentum * w + (1 - momentum) * (this step's weight); 0 is Ren et al. exactly "
                            "(a blend keeps weights from epochs ago, when the model knew less).")


class LastLayerTap:
    """Captures the input and output of every linear layer that produces the logits (the last layer)."""

    def __init__(self, model: torch.nn.Module, out_features: int) -> None:
        self.inputs: torch.Tensor | None = None
        self.outputs: torch.Tensor | None = None
        layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == out_features]
        if not layers:
            raise UsageError(f"method 'reweight' finds no output layer with {out_features} outputs in "
                             f"{type(model).__name__}")
        for layer in layers:
            layer.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.inputs, self.outputs = args[0].detach(), output.detach()

    def items(self, logits: torch.Tensor, labels: torch.Tensor, task: str
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(errors p - y, last-layer inputs, row of each item, per-item loss) of the labelled items."""
        feats = self.inputs.float()
        if get_task(task).next_token:
            logits, labels, feats = logits[:, :-1], labels[:, 1:], feats[:, :-1]
        elif feats.dim() == 3:  # decoder classifiers score every position, then keep one per row
            pos = (self.outputs == logits.detach()[:, None]).all(-1).float().argmax(1)
            feats = feats[torch.arange(len(pos)), pos]
        keep = labels != IGNORE_INDEX
        rows = torch.arange(labels.shape[0], device=labels.device)
        rows = rows[:, None].expand_as(labels)[keep] if labels.dim() == 2 else rows[keep]
        picked, targets = logits[keep].float(), labels[keep]
        errors = picked.detach().softmax(-1)
        errors[torch.arange(len(targets)), targets] -= 1
        return errors, feats[keep], rows, F.cross_entropy(picked, targets, reduction="none")


def example_scores(errors: torch.Tensor, feats: torch.Tensor, rows: torch.Tensor, n_rows: int,
                   trusted_errors: torch.Tensor, trusted_feats: torch.Tensor) -> torch.Tensor:
    """<g_i, g_trusted> per row for the last layer, where an item's gradient is outer(error, input).

    <e h^T, e' h'^T> = (e . e')(h . h'): pairwise products avoid forming the (classes x width) gradients.
    """
    per_item = ((errors @ trusted_errors.T) * (feats @ trusted_feats.T)).mean(1)
    sums = torch.zeros(n_rows, device=errors.device).index_add_(0, rows, per_item)
    counts = torch.zeros(n_rows, device=errors.device).index_add_(0, rows, torch.ones_like(per_item))
    return sums / counts.clamp(min=1)


def row_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor], task: str, tap: LastLayerTap
               ) -> torch.Tensor:
    """Each row's mean loss over its labelled items."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    _, _, rows, item_loss = tap.items(logits, batch["labels"], task)
    n_rows = batch["labels"].shape[0]
    sums = torch.zeros(n_rows, device=item_loss.device).index_add(0, rows, item_loss)
    return sums / torch.zeros(n_rows, device=item_loss.device).index_add_(0, rows, torch.ones_like(item_loss)).clamp(min=1)


def full_gradient_scores(model: torch.nn.Module, batch: dict[str, torch.Tensor], trusted: dict[str, torch.Tensor],
                         task: str, tap: LastLayerTap, step: float = 1e-2) -> torch.Tensor:
    """<g_i, g_trusted> over all trainable weights, by a central difference of each row's loss along g_trusted.

    Two forward passes give every row's directional derivative at once, where per-example
    gradients would need one backward pass per row. Dropout is off for these passes.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        trusted_loss = row_losses(model, trusted, task, tap).mean()
        grads = torch.autograd.grad(trusted_loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
        if norm == 0:
            return torch.zeros(batch["labels"].shape[0], device=batch["labels"].device)
        h = step / norm
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(h * g)
            down = row_losses(model, batch, task, tap)  # a step along -g_trusted
            for p, s, g in zip(params, saved, grads, strict=True):
                p.copy_(s).add_(h * g)
            up = row_losses(model, batch, task, tap)
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
        return (up - down) / (2 * h)
    finally:
        model.train(was_training)


def pad_rows(rows: list[dict[str, Any]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded tensors of tokenized rows (labels padded with IGNORE_INDEX)."""
    batch = {}
    for key in INPUT_KEYS:
        if key not in rows[0]:
            continue
        values = [r[key] for r in rows]
        if not isinstance(values[0], list):
            batch[key] = torch.tensor(values, device=device)
            continue
        width = max(map(len, values))
        fill = IGNORE_INDEX if key == "labels" else (pad_id if key == "input_ids" else 0)
        batch[key] = torch.tensor([v + [fill] * (width - len(v)) for v in values], device=device)
    return batch


@register
class Reweight(WrappingMethod):
    name = "reweight"
    summary = "Learning to reweight: down-weights examples that disagree with a trusted batch; finds bad labels."
    params_model = ReweightParams
    tasks = ("causal_lm", "classification")

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.trusted: list[dict[str, Any]] = []
        self.pad_id = 0
        self.tap: LastLayerTap | None = None
        self.history: dict[int, list[float]] = defaultdict(list)
        self.weights_path: Path | None = None
        self._next_trusted = 0

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        model = super().prepare_model(model, task)
        out = model.config.num_labels if get_task(task).label_map else model.get_output_embeddings().weight.shape[0]
        self.tap = LastLayerTap(model, out)
        return model

    def setup(self, model: torch.nn.Module, tokenizer: Any, train_dataset: Any, run_dir: Any) -> None:
        super().setup(model, tokenizer, train_dataset, run_dir)
        self.pad_id = tokenizer.pad_token_id or 0
        self.weights_path = Path(run_dir) / WEIGHTS_FILE if run_dir is not None else None

    def use_validation(self, eval_dataset: Any) -> None:
        super().use_validation(eval_dataset)
        if eval_dataset is None or len(eval_dataset) == 0:
            raise UsageError("method 'reweight' needs a trusted set: give the data a validation split "
                             "(data.split.validation > 0)")
        take = min(self.params.trusted_size, len(eval_dataset))
        self.trusted = [eval_dataset[i] for i in range(take)]

    def callbacks(self) -> list[TrainerCallback]:
        return [*super().callbacks(), SaveWeights(self)]

    def model_inputs_extra(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*super().model_inputs_extra(), "example_index")))

    def trusted_batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The next trusted rows, cycling through the trusted set."""
        size = min(self.params.trusted_batch_size, len(self.trusted))
        rows = [self.trusted[(self._next_trusted + i) % len(self.trusted)] for i in range(size)]
        self._next_trusted = (self._next_trusted + size) % len(self.trusted)
        return pad_rows(rows, self.pad_id, device)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], meta: dict[str, Any],
                     num_items_in_batch: Any) -> tuple[torch.Tensor, Any]:
        if not self.trusted or self.tap is None:
            raise UsageError("method 'reweight' has no trusted set: give the data a validation split")
        trusted = self.trusted_batch(inputs["input_ids"].device)
        labels, n_rows = inputs["labels"], inputs["labels"].shape[0]
        if self.params.gradient == "full":
            scores = full_gradient_scores(model, inputs, trusted, self.task, self.tap)
        else:
            with torch.no_grad():
                out = model(**{k: v for k, v in trusted.items() if k != "labels"})
                t_err, t_feat, _, _ = self.tap.items(out.logits, trusted["labels"], self.task)
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        errors, feats, rows, item_loss = self.tap.items(outputs.logits, labels, self.task)
        with torch.no_grad():
            if self.params.gradient != "full":
                scores = example_scores(errors, feats, rows, n_rows, t_err, t_feat)
            weights = (scores > 0).float() if self.params.weighting == "sign" else scores.clamp(min=0)
            weights = weights * n_rows / weights.sum() if weights.sum() > 0 else weights  # 1.0 = uniform
            weights = self.update(meta["example_index"], weights)
            weights = weights / weights.sum() if weights.sum() > 0 else weights  # Ren et al.: all zero, no step
        row_loss = torch.zeros(n_rows, device=item_loss.device).index_add(0, rows, item_loss)
        counts = torch.zeros(n_rows, device=item_loss.device).index_add_(0, rows, torch.ones_like(item_loss))
        loss = (weights * row_loss / counts.clamp(min=1)).sum()
        if num_items_in_batch is not None:  # this micro-batch's share of the accumulated batch
            loss = loss * len(item_loss) / num_items_in_batch
        return loss, outputs

    def update(self, example_index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Blend this step's weights into each example's running weight (start 1.0); return the batch's."""
        blended = []
        for index, weight in zip(example_index.tolist(), weights.tolist(), strict=True):
            history = self.history[int(index)]
            previous = history[-1] if history else 1.0
            history.append(self.params.momentum * previous + (1 - self.params.momentum) * weight)
            blended.append(history[-1])
        return torch.tensor(blended, device=weights.device)

    def mean_weights(self) -> dict[int, float]:
        """Each example's mean weight over the steps it was seen (1.0 = uniform)."""
        return {i: sum(w) / len(w) for i, w in sorted(self.history.items())}

    def save_weights(self, path: Path) -> None:
        """``example_weights.jsonl``: one line per training row (its index in data/train.jsonl)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as out:
            for index, weights in sorted(self.history.items()):
                out.write(json.dumps({"example_index": index, "mean_weight": round(sum(weights) / len(weights), 6),
                                      "last_weight": round(weights[-1], 6), "seen": len(weights)}) + "\n")


class SaveWeights(TrainerCallback):
    """Writes the per-example weights into the run folder when training ends."""

    def __init__(self, method: Reweight) -> None:
        self.method = method

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.method.weights_path is not None:
            self.method.save_weights(self.method.weights_path)
            low = sorted(self.method.mean_weights().items(), key=lambda kv: kv[1])[:5]
            say(f"reweight: weights of {len(self.method.history)} examples in {self.method.weights_path}; "
                  f"lowest: {', '.join(f'#{i} {w:.2f}' for i, w in low)}")
