"""train.self_distill: the chunked KL equals the plain one with its gradients, and a fine-tune trained with
it stays closer to its base on general prompts than the same fine-tune without it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from test_loss import tokenizer
from test_packing import tiny_model
from test_shared_opening import OPENING, chat_like_examples
from transformers import DataCollatorForSeq2Seq

from ayar.data.tokenize import IGNORE_INDEX
from ayar.errors import UsageError
from ayar.models.heads import hidden_states_as_logits, output_layer
from ayar.models.load import load_for_inference, load_model, load_tokenizer
from ayar.models.opening import common_opening, right_padded
from ayar.recipe import SelfDistillConfig, load_recipe
from ayar.train.self_distill import LinearKL, SelfDistillation, distinct_positions, general_sequences


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


def test_a_row_counted_n_times_is_n_copies_of_it() -> None:
    torch.manual_seed(1)
    hidden = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    teacher_hidden, teacher_weight = torch.randn(5, 16, dtype=torch.float64), torch.randn(50, 16, dtype=torch.float64)
    counts = torch.tensor([3.0, 1.0, 1.0, 2.0, 1.0], dtype=torch.float64)
    weighted = LinearKL.apply(hidden, weight, teacher_hidden, teacher_weight, 2, counts)
    weighted.backward()
    ours = (hidden.grad.clone(), weight.grad.clone())
    hidden.grad = weight.grad = None
    copies = counts.long().tolist()
    repeated = LinearKL.apply(hidden.repeat_interleave(torch.tensor(copies), dim=0), weight,
                              teacher_hidden.repeat_interleave(torch.tensor(copies), dim=0), teacher_weight, 2)
    repeated.backward()
    assert float(weighted) == pytest.approx(float(repeated), rel=1e-6)
    assert torch.allclose(ours[0], hidden.grad, rtol=1e-6) and torch.allclose(ours[1], weight.grad, rtol=1e-6)


def _kl_and_grads(model: torch.nn.Module, batch: dict[str, torch.Tensor], once: bool) -> tuple[float, dict, int]:
    """The KL term's sum over a batch's real tokens, and its gradients: the opening scored once or in every row."""
    model.zero_grad()
    parent, attribute, layer = output_layer(model.get_base_model())
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with hidden_states_as_logits(parent, attribute):
        hidden = model(input_ids=ids, attention_mask=mask).logits
        with torch.no_grad(), model.disable_adapter():
            teacher = model(input_ids=ids, attention_mask=mask).logits
    positions, weights = distinct_positions(model, ids, mask, shared_opening=once)
    flat, teacher_flat = (h.reshape(-1, h.shape[-1]).index_select(0, positions) for h in (hidden, teacher))
    total = LinearKL.apply(flat, layer.weight, teacher_flat, layer.weight, 16, weights)
    total.backward()
    return float(total), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, len(positions)


def test_the_opening_scored_once_gives_the_same_kl_and_gradients() -> None:
    model = get_peft_model(tiny_model("llama", "sdpa"), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "up_proj"],
                                                                   init_lora_weights=False)).train()
    batch = DataCollatorForSeq2Seq(tokenizer(), label_pad_token_id=IGNORE_INDEX)(chat_like_examples())
    every_kl, every, every_count = _kl_and_grads(model, batch, once=False)
    once_kl, once, once_count = _kl_and_grads(model, batch, once=True)
    rows = batch["input_ids"].shape[0]
    assert once_count == every_count - (rows - 1) * OPENING  # the opening's positions scored once
    assert every_kl > 0 and once_kl == pytest.approx(every_kl, rel=1e-5)
    for name, grad in every.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(once[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_model_that_drops_out_scores_every_position() -> None:
    model = tiny_model("gpt2", "sdpa").train()  # GPT-2's default dropout, 0.1: each row draws its own mask
    batch = DataCollatorForSeq2Seq(tokenizer(), label_pad_token_id=IGNORE_INDEX)(chat_like_examples())
    positions, weights = distinct_positions(model, batch["input_ids"], batch["attention_mask"], shared_opening=True)
    assert weights is None and len(positions) == int(batch["attention_mask"].sum())


def test_the_kl_term_under_the_shared_opening_gives_the_same_loss_and_gradients(chatml_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(chatml_model_dir))
    cfg = SelfDistillConfig(weight=1.0, batch_size=6, max_length=64)
    results = {}
    for shared in (False, True):
        torch.manual_seed(0)
        model = get_peft_model(load_model(str(chatml_model_dir)), LoraConfig(
            r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)).train()
        with torch.no_grad():  # an adapter that has moved the model a little from its base, as training does
            for name, weight in model.named_parameters():
                if "lora_B" in name:
                    weight.mul_(0.05)
        term = SelfDistillation(model, tokenizer, cfg, seed=3, shared_opening=shared)
        assert common_opening(*right_padded(term.sequences, torch.device("cpu"))) > 0  # a shared opening to skip
        loss = term.loss(model)
        loss.backward()
        results[shared] = float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    (plain_loss, plain), (shared_loss, shared_grads) = results[False], results[True]
    assert plain_loss > 0 and shared_loss == pytest.approx(plain_loss, rel=1e-5)
    for name, grad in plain.items():
        scale = float(grad.abs().max())
        assert scale > 0, name
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-5 * scale)


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
