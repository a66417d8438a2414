"""Distillation: the student learns the teacher's distribution; cached top-k logits; vocabulary checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from advanced_helpers import accuracy, as_dataset, key_task, tiny_classifier, train_with
from method_helpers import tiny_batch, tiny_model

from ayar.errors import UsageError
from ayar.methods import build_method
from ayar.methods.distill import cache_teacher_logits, resolve_teacher


@torch.no_grad()
def kl_to(teacher: torch.nn.Module, student: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    teacher.eval()
    student.eval()
    t = teacher(input_ids=batch["input_ids"]).logits.log_softmax(-1)
    s = student(input_ids=batch["input_ids"]).logits.log_softmax(-1)
    return float(F.kl_div(s, t, log_target=True, reduction="batchmean"))


def test_student_matches_teacher_better_than_labels_alone(tmp_path: Path) -> None:
    teacher = tiny_classifier(width=32, seed=1)
    train_with(teacher, build_method("full"), as_dataset(key_task(400, seed=0)), tmp_path / "t", steps=300, lr=3e-3)
    test = key_task(300, seed=9)
    assert accuracy(teacher, test) > 0.9

    small = as_dataset(key_task(48, seed=3))  # few labels: the student alone cannot pin the task down
    plain = tiny_classifier(seed=2)
    train_with(plain, build_method("full"), small, tmp_path / "p", steps=100)
    student = tiny_classifier(seed=2)
    method = build_method("distill", {"teacher": "unused", "alpha": 0.2, "temperature": 2.0})
    method.prepare_model(student, "classification")
    method.attach_teacher(teacher, student)
    train_with(student, method, small, tmp_path / "s", steps=100)

    kl_plain, kl_student = kl_to(teacher, plain, test), kl_to(teacher, student, test)
    acc_plain, acc_student = accuracy(plain, test), accuracy(student, test)
    print(f"KL to teacher: labels only {kl_plain:.3f}, distilled {kl_student:.3f}; "
          f"test accuracy {acc_plain:.3f} -> {acc_student:.3f}")
    assert kl_student < 0.3 * kl_plain  # measured: 0.46 -> 0.07
    assert acc_student > acc_plain + 0.15  # measured: 0.69 -> 1.00


def causal_rows() -> dict[str, torch.Tensor]:
    batch = tiny_batch("llama", batch=6, length=8)
    batch["labels"][:, :3] = -100  # a masked prompt: only the response tokens are distilled
    return batch


def test_cached_full_top_k_equals_on_the_fly(tmp_path: Path) -> None:
    teacher, student = tiny_model("llama"), tiny_model("llama")
    torch.manual_seed(5)
    for p in teacher.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    rows = causal_rows()
    data = as_dataset(rows)
    inputs = {k: rows[k] for k in ("input_ids", "attention_mask", "labels")}
    meta = {"example_index": torch.arange(6)}

    live = build_method("distill", {"teacher": "unused", "alpha": 0.3})
    live.prepare_model(student, "causal_lm")
    live.attach_teacher(teacher, student)
    loss_live, _ = live.compute_loss(student, inputs, meta, None)

    cached = build_method("distill", {"teacher": "unused", "alpha": 0.3, "cache": True, "top_k": 48})
    cached.prepare_model(student, "causal_lm")
    cached.cached = cache_teacher_logits(teacher, data, "causal_lm", 48, tmp_path / "t.safetensors", 0)
    assert cached.cached["offsets"].tolist() == [0, 5, 10, 15, 20, 25, 30]  # 5 response positions per row
    loss_cached, _ = cached.compute_loss(student, inputs, meta, None)
    assert loss_cached.item() == pytest.approx(loss_live.item(), rel=1e-5)

    # A batch in another order reads each example's own rows.
    order = torch.tensor([4, 1, 5, 0, 2, 3])
    shuffled, _ = cached.compute_loss(student, {k: v[order] for k, v in inputs.items()},
                                      {"example_index": order}, None)
    assert shuffled.item() == pytest.approx(loss_live.item(), rel=1e-5)

    top8 = cache_teacher_logits(teacher, data, "causal_lm", 8, tmp_path / "t8.safetensors", 0)
    assert top8["index"].shape == (30, 8)
    assert (tmp_path / "t8.safetensors").stat().st_size < (tmp_path / "t.safetensors").stat().st_size / 3


def test_distill_loss_falls_with_lora_student(tmp_path: Path) -> None:
    teacher, student = tiny_model("llama"), tiny_model("llama")
    method = build_method("distill", {"teacher": "unused", "base": "lora", "base_params": {"r": 4}})
    model = method.prepare_model(student, "causal_lm")
    assert method.is_adapter
    method.attach_teacher(teacher, model)
    inputs, meta = causal_rows(), {"example_index": torch.arange(6)}
    frozen = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss, _ = method.compute_loss(model, inputs, meta, None)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert torch.equal(frozen, model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight)


def test_teacher_with_another_vocabulary_is_a_usage_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from ayar.models.load import load_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    other = tmp_path / "run" / "model"  # an earlier run's folder: run/model
    model = load_model(str(tiny_model_dir))
    model.save_pretrained(other)
    tok.add_tokens(["zzzyyyx"])
    tok.save_pretrained(other)
    assert resolve_teacher(str(tmp_path / "run")) == str(other)
    student_tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    method = build_method("distill", {"teacher": str(tmp_path / "run")})
    method.prepare_model(model, "causal_lm")
    with pytest.raises(UsageError, match="tokenizers differ"):
        method.setup(model, student_tok, as_dataset(causal_rows()), tmp_path)

    same = build_method("distill", {"teacher": str(tiny_model_dir)})
    same.prepare_model(model, "causal_lm")
    same.setup(model, student_tok, as_dataset(causal_rows()), tmp_path)
    assert same.teacher is not None and not any(p.requires_grad for p in same.teacher.parameters())


@pytest.mark.parametrize(("extra", "message"), [
    ({"base": "distill"}, "base must be"),
    ({"base": "lora", "base_params": {"rank": 4}}, "base_params.rank"),
    ({"base": "lorra"}, "did you mean 'lora'"),
])
def test_bad_student_method_is_a_usage_error(extra: dict, message: str) -> None:
    from ayar.recipe import MethodConfig

    with pytest.raises(UsageError, match=message):
        MethodConfig.model_validate({"name": "distill", "teacher": "x", **extra})
