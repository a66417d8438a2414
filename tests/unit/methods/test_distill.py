"""Distillation: the student learns the teacher's distribution; layer-dropped students; cached top-k logits;
vocabulary checks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from advanced_helpers import FILLER, KEYS, accuracy, as_dataset, key_task, tiny_classifier, train_with
from method_helpers import tiny_batch, tiny_model
from transformers import AutoModelForCausalLM, LlamaConfig

from ayar.errors import UsageError
from ayar.methods import build_method
from ayar.methods.distill import cache_teacher_logits, drop_blocks, resolve_teacher, student_block_indices


@torch.no_grad()
def kl_to(teacher: torch.nn.Module, student: torch.nn.Module, batch: dict[str, torch.Tensor],
          temperature: float = 2.0) -> float:
    """KL(teacher || student) at the distillation's temperature: the distributions the method matches."""
    teacher.eval()
    student.eval()
    t = (teacher(input_ids=batch["input_ids"]).logits / temperature).log_softmax(-1)
    s = (student(input_ids=batch["input_ids"]).logits / temperature).log_softmax(-1)
    return float(F.kl_div(s, t, log_target=True, reduction="batchmean"))


def distilled_and_plain(teacher: torch.nn.Module, data_seed: int, bf16: bool, tmp_path: Path) -> tuple:
    """Two students built from the teacher by keeping its last block (DistilBERT's initialisation, the
    method's ``student_layers``), trained on the same 48 labels: one with the teacher (alpha 0.2, T 2), one
    on the labels alone (alpha 1, the method's own baseline)."""
    students = []
    for alpha in (0.2, 1.0):
        student = tiny_classifier(width=32)  # a fresh copy: a deepcopy would carry the teacher's Trainer state
        student.load_state_dict(teacher.state_dict())
        method = build_method("distill", {"teacher": "unused", "alpha": alpha, "temperature": 2.0,
                                          "student_layers": 1})
        method.prepare_model(student, "classification")
        if alpha < 1:
            method.attach_teacher(teacher, student)
        train_with(student, method, as_dataset(key_task(48, seed=data_seed)), tmp_path / f"s{alpha}", steps=100,
                   lr=3e-3, bf16=bf16)
        students.append(student)
    return tuple(students)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_student_matches_teacher_better_than_labels_alone(bf16: bool, tmp_path: Path) -> None:
    # A student trained from scratch on this task was a coin flip: it either escapes the plateau of the
    # key-finding task within its steps or not, and which one a seed gave changed with the CPU's fp32
    # kernels (docs/advanced-methods.md). Started from the teacher's block, as DistilBERT does, both arms
    # learn the task; what distillation adds is the teacher's distribution, over five draws of the labels.
    teacher = tiny_classifier(width=32, seed=1)
    train_with(teacher, build_method("full"), as_dataset(key_task(400, seed=0)), tmp_path / "t", steps=300, lr=3e-3)
    test = key_task(300, seed=9)
    assert accuracy(teacher, test) > 0.9
    kl_plain, kl_student, fit_plain, fit_student, acc_plain, acc_student = [], [], [], [], [], []
    for data_seed in range(3, 8):
        student, plain = distilled_and_plain(teacher, data_seed, bf16, tmp_path)
        distilled_on = key_task(48, seed=data_seed)
        fit_student.append(kl_to(teacher, student, distilled_on))
        fit_plain.append(kl_to(teacher, plain, distilled_on))
        kl_student.append(kl_to(teacher, student, test))
        kl_plain.append(kl_to(teacher, plain, test))
        acc_student.append(accuracy(student, test))
        acc_plain.append(accuracy(plain, test))
    print(f"KL to teacher per draw, held out: labels only {[round(k, 4) for k in kl_plain]}, distilled "
          f"{[round(k, 4) for k in kl_student]}; accuracy {acc_plain} -> {acc_student}")
    # Measured at T 2 on the AVX2 EPYC (fp32 / bf16): on the 48 distilled inputs at most 0.008 / 0.002 of the
    # labels-only student's KL; held out, at most 0.68 / 0.87 per draw and 0.43 / 0.41 summed. At T 1 the
    # held-out ratio was below 1 on every draw on the AMX Xeon but not on the AVX2 EPYC (2.6 on one draw):
    # where the teacher is all but certain, both students match it and the draws' noise decides.
    assert all(s < 0.1 * p for s, p in zip(fit_student, fit_plain, strict=True))  # it learned the teacher
    assert all(s < p for s, p in zip(kl_student, kl_plain, strict=True))  # closer held out on every draw
    assert sum(kl_student) < 0.6 * sum(kl_plain)
    assert sum(acc_student) / 5 > 0.95 and sum(acc_student) >= sum(acc_plain) - 0.05  # the task kept


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
    from ayar.methods import check_method
    from ayar.recipe import MethodConfig

    with pytest.raises(UsageError, match=message):
        check_method(MethodConfig.model_validate({"name": "distill", "teacher": "x", **extra}))


ANSWER_PROBS = torch.tensor([0.55, 0.25, 0.15, 0.05])  # answers are uncertain, as a language model's next token


def noisy_answer_task(n: int, seed: int, length: int = 10) -> dict[str, torch.Tensor]:
    """Prompts with two key tokens of a class, then a separator and one answer token drawn from that
    class's distribution over four answers; only the answer is labelled.

    One row shows one drawn answer; a teacher trained on many rows knows the whole distribution.
    """
    gen = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, 3, (n,), generator=gen)
    ids = torch.tensor(FILLER)[torch.randint(0, len(FILLER), (n, length), generator=gen)]
    for row, label in enumerate(classes.tolist()):
        ids[row, torch.randperm(length - 1, generator=gen)[:2] + 1] = torch.tensor(KEYS[label])[
            torch.randint(0, 6, (2,), generator=gen)]
    ids[:, 0] = 1
    drawn = torch.multinomial(ANSWER_PROBS, n, replacement=True, generator=gen)
    ids = torch.cat([ids, torch.full((n, 1), 2), (40 + (drawn + classes) % 4)[:, None]], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, -1] = ids[:, -1]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def tiny_lm(layers: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=48, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    return AutoModelForCausalLM.from_config(cfg)


def fit(model: torch.nn.Module, loss_of, steps: int, seed: int) -> None:
    """Full-batch AdamW steps on ``loss_of(model)``."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_of(model).backward()
        optimizer.step()


@torch.no_grad()
def answer_nll_and_kl(model: torch.nn.Module, teacher: torch.nn.Module, rows: dict) -> tuple[float, float]:
    """Held-out NLL of the drawn answers, and KL(teacher || model) at the answer position."""
    model.eval()
    logits = model(input_ids=rows["input_ids"]).logits[:, -2]
    teacher_logits = teacher(input_ids=rows["input_ids"]).logits[:, -2]
    nll = F.cross_entropy(logits, rows["input_ids"][:, -1])
    kl = F.kl_div(logits.log_softmax(-1), teacher_logits.log_softmax(-1), log_target=True, reduction="batchmean")
    return float(nll), float(kl)


def test_layer_dropped_student_beats_the_same_student_on_labels_alone() -> None:
    teacher = tiny_lm(layers=4, seed=1)
    big = noisy_answer_task(400, seed=0)
    gen = torch.Generator().manual_seed(0)

    def teacher_batch_loss(model: torch.nn.Module) -> torch.Tensor:
        rows = torch.randint(0, 400, (32,), generator=gen)
        return model(**{k: v[rows] for k, v in big.items()}).loss

    fit(teacher, teacher_batch_loss, steps=150, seed=0)
    teacher.eval().requires_grad_(False)
    held_out = noisy_answer_task(300, seed=9)
    print(f"teacher held-out answer NLL {answer_nll_and_kl(teacher, teacher, held_out)[0]:.3f} "
          f"(the answers' entropy: {float(-(ANSWER_PROBS * ANSWER_PROBS.log()).sum()):.3f})")
    for seed in (3, 4, 5):
        few = noisy_answer_task(24, seed=seed)  # few labelled rows: one drawn answer each
        results = {}
        for alpha in (1.0, 0.2):  # 1.0: the same student on labels alone
            method = build_method("distill", {"teacher": "unused", "alpha": alpha, "student_layers": "::2"})
            student = method.prepare_model(copy.deepcopy(teacher).requires_grad_(True), "causal_lm")
            assert len(student.model.layers) == 2
            method.attach_teacher(teacher, student)
            fit(student, lambda m, method=method, few=few: method.compute_loss(m, few, {}, None)[0], steps=30,
                seed=seed)
            results[alpha] = answer_nll_and_kl(student, teacher, held_out)
        print(f"seed {seed}: held-out NLL, KL to teacher: labels only {results[1.0]}, distilled {results[0.2]}")
        # measured (3 seeds): NLL 2.45-2.93 on labels alone, 1.24-1.27 distilled (teacher 1.26)
        assert results[0.2][0] < 0.7 * results[1.0][0]
        assert results[0.2][1] < 0.3 * results[1.0][1]


def test_student_block_indices() -> None:
    assert student_block_indices("::2", 30) == list(range(0, 30, 2))
    assert student_block_indices(4, 10) == [0, 3, 6, 9]  # evenly spaced, first and last kept
    assert student_block_indices(1, 10) == [9]
    assert student_block_indices([-1, 0, 0], 6) == [0, 5]
    with pytest.raises(UsageError, match="only 6 blocks"):
        student_block_indices(7, 6)
    with pytest.raises(UsageError, match="out of range"):
        student_block_indices([6], 6)
    with pytest.raises(UsageError, match="keeps no block"):
        student_block_indices("5:2", 6)


def test_dropped_blocks_keep_their_weights_and_the_folder_reloads(tmp_path: Path) -> None:
    teacher = tiny_lm(layers=4, seed=0).eval()
    student = copy.deepcopy(teacher)
    assert drop_blocks(student, [0, 3]) == [0, 3]
    assert student.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]  # KV-cache slots renumbered
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)

    ids = torch.tensor([[1, 5, 9, 30, 22, 7]])
    with torch.no_grad():  # the student computes the teacher's forward with blocks 1 and 2 left out
        hidden = teacher.model.embed_tokens(ids)
        positions = teacher.model.rotary_emb(hidden, torch.arange(ids.shape[1])[None])
        mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)[None, None]
        for index in (0, 3):
            hidden = teacher.model.layers[index](hidden, attention_mask=mask, position_embeddings=positions)
        by_hand = teacher.lm_head(teacher.model.norm(hidden))
        assert torch.allclose(student(input_ids=ids).logits, by_hand, atol=1e-5)

    student.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert len(reloaded.model.layers) == 2
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, student(input_ids=ids).logits)
    cached = reloaded.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = reloaded.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_student_layers_need_a_whole_model_base() -> None:
    from ayar.methods import check_method
    from ayar.recipe import MethodConfig

    with pytest.raises(UsageError, match="student_layers needs a base method that saves the whole model"):
        check_method(MethodConfig.model_validate({"name": "distill", "teacher": "x", "student_layers": "::2",
                                                  "base": "lora"}))
    check_method(MethodConfig.model_validate({"name": "distill", "teacher": "x", "student_layers": 3, "base": "layers"}))


def test_alpha_one_loads_no_teacher_and_trains_on_labels(tmp_path: Path) -> None:
    model = tiny_model("llama")
    method = build_method("distill", {"teacher": str(tmp_path / "missing"), "alpha": 1.0})
    method.prepare_model(model, "causal_lm")
    method.setup(model, None, None, tmp_path)  # the missing teacher is never read
    assert method.teacher is None
    rows = causal_rows()
    loss, _ = method.compute_loss(model, {k: rows[k] for k in ("input_ids", "attention_mask", "labels")},
                                  {}, None)
    assert loss.item() == pytest.approx(model(**rows).loss.item(), rel=1e-5)
