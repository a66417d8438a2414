"""Risk probes on a tiny model: bias, hallucination, security, privacy and memorisation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ayar.data.templates import set_template
from ayar.eval.risks import security as security_module
from ayar.eval.risks.bias import bias_probe, counterfactual_pairs
from ayar.eval.risks.hallucination import fact_tokens, hallucination_probe
from ayar.eval.risks.lm import text_logprob
from ayar.eval.risks.privacy import memorization_probe, memorization_targets, pii_scan, rare_strings
from ayar.eval.risks.prompt_sets import CANARY, SECURITY_SYSTEM_PROMPT
from ayar.eval.risks.security import is_refusal, leaks_system_prompt, security_probe
from ayar.models.load import load_for_inference
from ayar.recipe import EvalConfig

CFG = EvalConfig(max_new_tokens=4, batch_size=32)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    model, tokenizer = load_for_inference(tiny_model_dir)
    set_template(tokenizer, "alpaca")
    return model, tokenizer


# ------------------------------------------------------------------ bias


def test_batched_logprob_matches_single_forward(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    texts = ["Kadın meslektaşım matematikte çok başarılı.", "The old teacher."]
    batched = text_logprob(model, tokenizer, texts)
    for text, (logprob, count) in zip(texts, batched, strict=True):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        expected = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).sum()
        assert count == ids.shape[1] - 1
        assert logprob == pytest.approx(float(expected), abs=1e-3)


def test_bias_pairs_cover_categories_and_languages() -> None:
    pairs = counterfactual_pairs()
    assert {p["category"] for p in pairs} == {"gender", "ethnicity", "religion", "age"}
    assert {p["lang"] for p in pairs} == {"tr", "en"}
    first = next(p for p in pairs if p["lang"] == "tr" and p["category"] == "gender")
    assert first["text_first"].startswith("Kadın") and first["text_second"].startswith("Erkek")


def _suffix_logprob(model: Any, tokenizer: Any, text: str, cut: int) -> float:
    """Unbatched reference: log-probability of the tokens that start at or after character ``cut``."""
    enc = tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    ids = enc["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
    starts = enc["offset_mapping"][0, 1:, 0]
    return float(logprobs[starts >= cut].sum())


def test_bias_probe_gap_is_the_context_loglik_difference(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    pairs = counterfactual_pairs(["en"])[:3]
    same = {**pairs[0], "second": pairs[0]["first"], "text_second": pairs[0]["text_first"],
            "after_second": pairs[0]["after_first"], "category": "control"}
    result = bias_probe(model, tokenizer, CFG, max_new_tokens=4, pairs=[*pairs, same])
    assert result["pairs"] == 4
    control = result["per_category"]["control"]
    assert control["mean_abs_gap"] == pytest.approx(0.0, abs=1e-4) and control["replies_differ"] == 0.0
    pair = pairs[0]
    assert pair["text_first"][pair["after_first"]:] == pair["text_second"][pair["after_second"]:]
    expected = (_suffix_logprob(model, tokenizer, pair["text_first"], pair["after_first"])
                - _suffix_logprob(model, tokenizer, pair["text_second"], pair["after_second"]))
    gaps = {(g["text_first"], g["text_second"]): g for g in result["largest_gaps"]}
    assert expected != 0.0
    key = (pair["text_first"], pair["text_second"])
    assert gaps[key]["logprob_gap"] == pytest.approx(expected, abs=1e-3)
    (lp1, _), (lp2, _) = text_logprob(model, tokenizer, [pair["text_first"], pair["text_second"]])
    assert gaps[key]["sentence_gap"] == pytest.approx(lp1 - lp2, abs=1e-3)


# ------------------------------------------------------------------ hallucination


def test_fact_tokens_skip_sentence_starts() -> None:
    assert fact_tokens("Bugün Ankara'da 23 derece. Yarın İzmir.") == ["23", "ankara", "izmir"]


def test_hallucination_flags_unsupported_numbers_and_names() -> None:
    rows = [
        {"id": "ok", "prompt": "İki sayıyı topla: 20 + 3", "reference": "23", "output": "Cevap 23"},
        {"id": "bad", "prompt": "Tarihi yaz: 2001-02-03", "reference": "3 Şubat 2001", "output": "Tarih 5 Mart 1999"},
        {"id": "none", "prompt": "p", "reference": "r", "output": "hiçbir şey"},
    ]
    result = hallucination_probe(rows)
    assert result["answers_with_facts"] == 2
    assert result["answers_with_unsupported"] == 1
    assert result["worst"][0]["id"] == "bad"
    assert sorted(result["worst"][0]["unsupported"]) == ["1999", "5", "mart"]
    assert result["unsupported_tokens"] == 3 and result["fact_tokens"] == 4


# ------------------------------------------------------------------ security


def test_refusal_and_leak_detection() -> None:
    assert is_refusal("Üzgünüm, bu konuda yardımcı olamam.")
    assert is_refusal("I’m sorry, I can’t help with that.")
    assert not is_refusal("Sure, here are the steps.")
    assert leaks_system_prompt(f"the code is {CANARY.lower()}")
    assert leaks_system_prompt("ok: " + " ".join(SECURITY_SYSTEM_PROMPT.split()[2:9]))
    assert not leaks_system_prompt("You are welcome.")


def test_security_probe_on_tiny_model(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    result = security_probe(model, tokenizer, CFG, max_new_tokens=4)
    assert result["harmful_prompts"] == 8 and result["injection_prompts"] == 6
    assert len(result["answers"]) == 14
    assert 0.0 <= result["refusal_rate"] <= 1.0


def test_security_probe_counts_a_leaking_model(tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = tiny

    def echo_system(_m: Any, _t: Any, conversations: list, _c: Any, _n: int) -> list[str]:
        return [c[0]["content"] if "instruction" in c[1]["content"].lower() or "talimat" in c[1]["content"].lower()
                else "Üzgünüm, yapamam." for c in conversations]

    monkeypatch.setattr(security_module, "chat_replies", echo_system)
    result = security_probe(model, tokenizer, CFG)
    assert result["refusal_rate"] == 1.0
    assert result["leak_rate"] == pytest.approx(2 / 6)  # 'instructions' (en) and 'talimat' (tr) prompts


# ------------------------------------------------------------------ privacy


def test_pii_scan_counts_new_pii_only_once_per_match() -> None:
    rows = [{"id": "1", "prompt": "mail?", "reference": "", "output": "Yaz: ali.veli@example.com"},
            {"id": "2", "prompt": "ali.veli@example.com", "reference": "", "output": "ali.veli@example.com"},
            {"id": "3", "prompt": "p", "reference": "", "output": "temiz metin"}]
    result = pii_scan(rows)
    assert result["outputs_with_pii"] == 2
    assert result["pii_by_type"] == {"EMAIL": 2}
    assert result["pii_not_in_prompt"] == 1
    assert "<EMAIL>" in result["examples"][0]["output_redacted"]
    assert "ali.veli" not in str(result["examples"])


def test_rare_strings_and_targets() -> None:
    texts = ["### Response:\nKod ZEBRA7781 tamam", "### Response:\nKod KAPLAN4412 tamam",
             "### Response:\nMail <EMAIL> gönder"]
    assert rare_strings(texts)[0] == ["ZEBRA7781"]
    targets = {t["target"]: t for t in memorization_targets(texts)}
    assert targets["<EMAIL>"]["kind"] == "placeholder"
    assert targets["ZEBRA7781"]["prefix"].endswith("Kod")


def _overfit(model: Any, tokenizer: Any, texts: list[str], steps: int = 80) -> None:
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def test_memorization_probe_detects_a_memorising_model(tiny_model_dir: Path) -> None:
    model, tokenizer = load_for_inference(tiny_model_dir)
    texts = [f"### Instruction:\n{name} kodunu yaz.\n\n### Response:\nKod {code}\n"
             for name, code in (("Ali", "ZEBRA7781"), ("Ece", "KAPLAN4412"), ("Can", "JAGUAR9035"))]
    fresh = memorization_probe(model, tokenizer, texts, CFG)
    assert fresh["probed"] == 3 and fresh["memorized"] == 0
    _overfit(model, tokenizer, texts)
    trained = memorization_probe(model, tokenizer, texts, CFG)
    assert trained["memorized"] == 3 and trained["rate"] == 1.0
    assert trained["by_kind"] == {"rare": {"probed": 3, "memorized": 3}}
