"""train.self_distill: the chunked KL equals the plain one with its gradients, and a fine-tune trained with
it stays closer to its base on general prompts than the same fine-tune without it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ayar.errors import UsageError
from ayar.models.load import load_for_inference, load_model, load_tokenizer
from ayar.recipe import SelfDistillConfig, load_recipe
from ayar.train.self_distill import LinearKL, general_sequences


def test_the_chunked_kl_and_its_gradients_equal_the_plain_ones() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    teacher_hidden, teacher_weight = torch.randn(37, 16, dtype=torch.float64), torch.randn(50, 16, dtype=torch.float64)
    LinearKL.apply(hidden, weight, teacher_hidden, teacher_weight, 8).backward()  # 5 chunks
    ours = (hidden.grad.clone(), weight.grad.clone())
    hidden.grad = weight.grad = None
    log_teacher = F.log_softmax(teacher_hidden @ teacher_weight.T, dim=-1)
    plain = F.kl_div(F.log_softmax(hidden @ weight.T, dim=-1), log_teacher, log_target=True, reduction="sum")
    plain.backward()
    assert LinearKL.apply(hidden.detach(), weight.detach(), teacher_hidden, teacher_weight, 8) == pytest.approx(
        float(plain), rel=1e-6)  # summed in fp32, as the chunked cross-entropy is
    assert torch.allclose(ours[0], hidden.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(ours[1], weight.grad, rtol=1e-4, atol=1e-6)


def test_general_sequences_are_chat_prompts_and_answers_when_given(chatml_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(str(chatml_model_dir))
    builtin = general_sequences(tokenizer, SelfDistillConfig(weight=1.0, max_length=64))
    assert len(builtin) >= 300 and all(0 < len(s) <= 64 for s in builtin)
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"instruction": "Say hi.", "output": "Hi there"}\n', encoding="utf-8")
    [with_answer] = general_sequences(tokenizer, SelfDistillConfig(weight=1.0, prompts=str(answers)))
    assert "Hi there" in tokenizer.decode(with_answer) and "Say hi." in tokenizer.decode(with_answer)


def _general_kl(run_model: Path, base_dir: Path) -> float:
    """Mean KL(base || tuned) per token over the built-in general prompts."""
    tuned, tokenizer = load_for_inference(run_model)
    base = load_model(str(base_dir))
    tuned.eval()
    base.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in general_sequences(tokenizer, SelfDistillConfig(weight=1.0, max_length=64))[:120]:
            x = torch.tensor([ids])
            log_base = F.log_softmax(base(x).logits[0], dim=-1)
            log_tuned = F.log_softmax(tuned(x).logits[0], dim=-1)
            total += float((log_base.exp() * (log_base - log_tuned)).sum())
            count += len(ids)
    return total / count


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_fine_tune_with_the_kl_term_stays_closer_to_its_base(method: str, tiny_model_dir: Path,
                                                                tmp_path: Path) -> None:
    from ayar.pipeline import stage_prepare, stage_train

    kls = {}
    for weight in (0.0, 4.0):
        recipe = load_recipe(None, [
            f"model.name_or_path={tiny_model_dir}", f"run.output_dir={tmp_path}", f"run.name={method}-{weight}",
            "run.carbon=false", "data.synthetic.num_records=160", "data.synthetic.tasks=[upper]", "data.template=chatml",
            f"method.name={method}", "train.max_steps=30", "train.batch_size=8", "train.learning_rate=1e-2",
            "train.precision=fp32", "train.logging_steps=100", "train.eval_steps=0", "train.report_to=[]",
            f"train.self_distill.weight={weight}", "train.self_distill.batch_size=8", "train.self_distill.max_length=64"])
        stage_prepare(recipe)
        stage_train(recipe)
        kls[weight] = _general_kl(recipe.run_dir / "model", tiny_model_dir)
    print(f"{method}: KL(base || tuned) per general token without the term {kls[0.0]:.4f}, with it {kls[4.0]:.4f}")
    assert kls[4.0] < 0.5 * kls[0.0]


def test_self_distillation_needs_a_chat_task(tiny_model_dir: Path, tmp_path: Path) -> None:
    from ayar.train.supervised import self_distillation

    recipe = load_recipe(None, [f"model.name_or_path={tiny_model_dir}", "task=classification",
                                "data.format=classification", "train.self_distill.weight=1.0"])
    with pytest.raises(UsageError, match="self_distill keeps a chat model"):
        self_distillation(recipe, None, None)
