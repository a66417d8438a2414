"""The forgetting report: an unchanged model shows none; a damaged one shows it and trips the gate."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from ayar.errors import GateError
from ayar.eval.forgetting import GENERAL_QUESTIONS, compare, general_texts, probe, select_questions
from ayar.models.load import load_model, load_tokenizer
from ayar.recipe import EvalConfig, ForgettingConfig

CFG = EvalConfig(batch_size=20, forgetting=ForgettingConfig(max_questions=60, text_tokens=384, max_new_tokens=16))


@pytest.fixture(scope="module")
def smollm2_probes(smollm2_dir: Path) -> dict[str, dict]:
    """The probes on SmolLM2 as converted, and on a copy whose upper layers were damaged."""
    model, tokenizer = load_model(str(smollm2_dir)), load_tokenizer(str(smollm2_dir))
    base = probe(model, tokenizer, CFG)
    torch.manual_seed(0)
    with torch.no_grad():  # noise on the MLP outputs of the upper half: what a runaway fine-tune does
        for layer in model.model.layers[15:]:
            weight = layer.mlp.down_proj.weight
            weight.add_(torch.randn_like(weight) * weight.std() * 1.5)
    return {"base": base, "damaged": probe(model, tokenizer, CFG)}


def test_the_base_answers_general_questions_both_ways_in_both_languages(smollm2_probes: dict[str, dict]) -> None:
    answers = smollm2_probes["base"]["answers"]
    asked = select_questions(60)
    assert len(answers["greedy"]) == 60  # instruction items are scored greedy only:
    assert len(answers["choice"]) == sum(q.choices is not None for q in asked) > 0
    # something to lose in each language: SmolLM2 answers Turkish questions in English when it generates
    # (1 of 80 right greedily, measured), so Turkish knowledge is probed by multiple choice
    for scoring, lang in (("greedy", "en"), ("choice", "en"), ("choice", "tr")):
        rows = [a for a in answers[scoring] if a["lang"] == lang]
        assert sum(a["correct"] for a in rows) >= 0.25 * len(rows), (scoring, lang)
    assert set(smollm2_probes["base"]["text"]) == {"en", "tr"}


def test_an_unchanged_model_shows_no_forgetting(smollm2_probes: dict[str, dict]) -> None:
    result = compare(smollm2_probes["base"], smollm2_probes["base"], CFG.forgetting)
    assert all(t["relative_increase"] == 0.0 for t in result["text"].values())
    for figures in result["answers"].values():
        assert figures["lost"] == 0 and figures["kept"] == figures["base_correct"] and figures["p_value"] == 1.0
    assert result["gate"]["passed"] and result["gate"]["reasons"] == []


def test_a_damaged_model_shows_forgetting_and_fails_the_gate(smollm2_probes: dict[str, dict]) -> None:
    result = compare(smollm2_probes["base"], smollm2_probes["damaged"], CFG.forgetting)
    assert all(t["relative_increase"] > 0.25 for t in result["text"].values())
    greedy = result["answers"]["greedy"]
    assert greedy["lost"] > 0.1 * greedy["base_correct"] and greedy["p_value"] < 0.05
    assert len(greedy["lost_examples"]) == greedy["lost"]
    reasons = result["gate"]["reasons"]
    assert not result["gate"]["passed"] and any(r.startswith("en general-text") for r in reasons)
    assert any(r.startswith("tr general-text") for r in reasons) and any(r.startswith("greedy answers") for r in reasons)
    assert result["gate"]["levers"] and any("interpolate" in lever for lever in result["gate"]["levers"])
    unbounded = ForgettingConfig(max_perplexity_increase=None, max_lost_share=None)
    assert compare(smollm2_probes["base"], smollm2_probes["damaged"], unbounded)["gate"]["passed"]


def _probe(perplexity: dict[str, float], correct: list[bool]) -> dict:
    answers = [{"prompt": f"q{i}", "lang": "en" if i % 2 else "tr", "output": "a" if c else "b", "correct": c}
               for i, c in enumerate(correct)]
    return {"text": {lang: {"perplexity": p, "tokens": 100} for lang, p in perplexity.items()},
            "answers": {"greedy": answers}}


BASE = _probe({"en": 10.0, "tr": 20.0}, [True] * 40 + [False] * 20)


def _changed(lost: int, gained: int) -> list[bool]:
    """BASE's answers with ``lost`` of its correct ones wrong and ``gained`` of its wrong ones right."""
    return [i >= lost for i in range(40)] + [i < gained for i in range(20)]


@pytest.mark.parametrize(("tuned", "reasons"), [
    (_probe({"en": 12.4, "tr": 24.8}, _changed(0, 0)), []),  # +24% in each language, nothing lost
    (_probe({"en": 10.0, "tr": 25.2}, _changed(0, 0)), ["tr general-text"]),  # +26% in Turkish only
    (_probe({"en": 10.0, "tr": 20.0}, _changed(6, 5)), []),  # 15% lost, but as many gained: noise (p 0.5)
    (_probe({"en": 10.0, "tr": 20.0}, _changed(3, 0)), []),  # all one way, but 7.5% (and p 0.125)
    (_probe({"en": 10.0, "tr": 20.0}, _changed(5, 0)), ["greedy answers"]),  # 12.5% lost, p 0.031
    (_probe({"en": 10.0, "tr": 20.0}, _changed(9, 2)), ["greedy answers"]),  # 22.5% lost, p 0.033
])
def test_the_gate_needs_a_significant_and_large_loss(tuned: dict, reasons: list[str]) -> None:
    result = compare(BASE, tuned, ForgettingConfig())
    assert [r for r in ("en general-text", "tr general-text", "greedy answers")
            if any(x.startswith(r) for x in result["gate"]["reasons"])] == reasons
    assert result["gate"]["passed"] == (not reasons)


def test_figures_carry_intervals_and_languages() -> None:
    figures = compare(BASE, _probe({"en": 10.0, "tr": 20.0}, _changed(9, 2)), ForgettingConfig())["answers"]["greedy"]
    low, high = figures["lost_share_interval"]
    assert low < figures["lost_share"] == 9 / 40 < high
    assert figures["p_value"] == pytest.approx(0.0327, abs=1e-3)  # P(X >= 9), X ~ Binomial(11, 1/2)
    per = figures["by_language"]
    assert per["en"]["lost"] + per["tr"]["lost"] == 9 and per["en"]["questions"] + per["tr"]["questions"] == 60


def test_an_absolute_bound_still_applies_when_asked() -> None:
    result = compare(BASE, _probe({"en": 10.0, "tr": 20.0}, _changed(3, 0)), ForgettingConfig(max_answers_lost=2))
    assert not result["gate"]["passed"] and "more than 2" in result["gate"]["reasons"][0]


def test_questions_alternate_languages_at_any_size() -> None:
    for size in (2, 9, 60, 200):
        chosen = select_questions(size)
        assert len(chosen) == size and abs(sum(q.lang == "tr" for q in chosen) - size / 2) <= 0.5
    assert len(select_questions(None)) == len(GENERAL_QUESTIONS)


def test_every_subset_spans_every_subject_in_proportion() -> None:
    whole = Counter((q.lang, q.subject) for q in GENERAL_QUESTIONS)
    for size in (60, 160):
        chosen = Counter((q.lang, q.subject) for q in select_questions(size))
        for (lang, subject), total in whole.items():
            share = total / sum(n for (other, _), n in whole.items() if other == lang)
            assert abs(chosen[lang, subject] - share * size / 2) <= 1.5, (size, lang, subject)


def test_the_probe_is_large_balanced_and_its_choices_are_checkable() -> None:
    questions = GENERAL_QUESTIONS
    assert len(questions) >= 300 and len({q.id for q in questions}) == len({q.prompt for q in questions}) == len(questions)
    turkish = sum(q.lang == "tr" for q in questions)
    assert 0.4 * len(questions) <= turkish <= 0.6 * len(questions)
    assert {q.subject for q in questions} == {"fact", "arithmetic", "language", "common_sense", "instruction"}
    for question in questions:
        if question.subject == "instruction":
            assert question.choices is None, question.id  # scored greedy only
            continue
        right, *wrong = question.choices
        assert question.is_answered_by(right), question.id
        assert len(wrong) == 3 and not any(question.is_answered_by(w) for w in wrong), question.id


def test_the_turkish_text_is_long_and_in_no_training_or_rehearsal_set() -> None:
    from ayar.data.rehearsal import BUILTIN_PROMPTS
    from ayar.data.synthetic import TASKS, generate_records

    text = general_texts()["tr"]
    assert len(text.split()) >= 1300 and "ş" in text and "ğ" in text

    def shingles(value: str, n: int = 6) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", value.lower())
        return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}

    prose = shingles(text)
    records = generate_records(2000, seed=0, languages=["tr", "en"], tasks=sorted(TASKS))
    for other in [*BUILTIN_PROMPTS, *(" ".join(str(v) for v in r.values()) for r in records)]:
        assert not shingles(other) & prose, other[:80]
    for question in GENERAL_QUESTIONS:
        assert not shingles(question.prompt, 4) & shingles(text, 4), question.id


def test_the_base_probe_is_cached_by_model_hash(tiny_model_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from ayar.eval import forgetting

    monkeypatch.setenv("AYAR_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "base"
    shutil.copytree(tiny_model_dir, folder)
    model, tokenizer = load_model(str(folder)), load_tokenizer(str(folder))
    calls = []
    monkeypatch.setattr(forgetting, "probe", lambda *args: calls.append(1) or {"text": {}, "answers": {"n": len(calls)}})
    cfg = EvalConfig(forgetting=ForgettingConfig(max_questions=4))
    first = forgetting.probe_cached(model, tokenizer, cfg, folder)
    assert forgetting.probe_cached(model, tokenizer, cfg, folder) == first and len(calls) == 1  # read back
    forgetting.probe_cached(model, tokenizer, EvalConfig(forgetting=ForgettingConfig(max_questions=6)), folder)
    assert len(calls) == 2  # another probe size is another entry
    model.save_pretrained(folder)  # same weights, rewritten: same content, same key
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(folder)
    forgetting.probe_cached(model, tokenizer, cfg, folder)
    assert len(calls) == 3  # other weights: probed again
    picked = forgetting.select_questions(4)
    monkeypatch.setattr(forgetting, "select_questions", lambda count: tuple(reversed(picked)))
    forgetting.probe_cached(model, tokenizer, cfg, folder)
    assert len(calls) == 4  # the same file, other questions picked from it (a change of code): probed again


def test_stage_eval_writes_the_report_then_fails_the_gate(tiny_model_dir: Path, tmp_path: Path) -> None:
    from ayar.data.synthetic import generate_records, write_jsonl
    from ayar.pipeline import stage_eval
    from ayar.recipe import load_recipe

    tuned = tmp_path / "run" / "t" / "model"
    model = load_model(str(tiny_model_dir))
    with torch.no_grad():  # a "fine-tune" that wrecked the model
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    model.save_pretrained(tuned)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(tuned)
    recipe = load_recipe(None, [f"model.name_or_path={tiny_model_dir}", f"run.output_dir={tmp_path / 'run'}",
                                "run.name=t", "data.template=alpaca", "eval.max_new_tokens=2", "eval.risks.enabled=false",
                                "eval.bootstrap_resamples=100", "run.carbon=false", "eval.forgetting.text_tokens=128",
                                "eval.forgetting.max_new_tokens=2", "eval.forgetting.max_questions=4",
                                "eval.forgetting.max_perplexity_increase=0.01"])
    data = recipe.run_dir / "data"
    records = list(generate_records(8, seed=1, languages=["en"], tasks=["add"]))
    for split, rows in (("train", records[:4]), ("validation", []), ("test", records[4:])):
        write_jsonl(rows, data / f"{split}.jsonl")
    with pytest.raises(GateError, match="forgetting gate failed: en general-text perplexity rose.*levers to try") as failure:
        stage_eval(recipe)
    assert failure.value.exit_code == 4
    metrics = json.loads((recipe.run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["forgetting"]["gate"]["passed"] is False and "forgetting" not in metrics["eval"]
    assert "## Forgetting" in (recipe.run_dir / "report.md").read_text(encoding="utf-8")


def _run_folder(folder: Path, model: Any, tokenizer: Any, started_from: str) -> Path:
    """A finished run's folder as ayar writes one: its model, and the recipe naming what it started from."""
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "recipe.yaml").write_text(f"model:\n  name_or_path: {started_from}\n", encoding="utf-8")
    return folder


def _nudged(tiny_model_dir: Path, seed: int, scale: float) -> Any:
    model = load_model(str(tiny_model_dir))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))
    return model


def test_the_original_base_is_the_root_of_a_chain_of_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    from ayar.eval.evaluate import original_base

    tokenizer = load_tokenizer(str(tiny_model_dir))
    first = _run_folder(tmp_path / "runs" / "first", _nudged(tiny_model_dir, 0, 0.01), tokenizer, str(tiny_model_dir))
    second = _run_folder(tmp_path / "runs" / "second", _nudged(tiny_model_dir, 1, 0.01), tokenizer, str(first))
    assert original_base(first / "model") == str(tiny_model_dir)
    assert original_base(second / "model") == str(tiny_model_dir)  # through the first run to its start
    assert original_base(str(tiny_model_dir)) is None and original_base(None) is None


def test_a_run_from_a_fine_tune_reports_forgetting_against_the_original_base_too(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ayar.data.synthetic import generate_records, write_jsonl
    from ayar.pipeline import stage_eval
    from ayar.recipe import load_recipe

    monkeypatch.setenv("AYAR_CACHE", str(tmp_path / "cache"))
    tokenizer = load_tokenizer(str(tiny_model_dir))
    start = _run_folder(tmp_path / "runs" / "start", _nudged(tiny_model_dir, 0, 0.05), tokenizer, str(tiny_model_dir))
    recipe = load_recipe(None, [f"model.name_or_path={start}", f"run.output_dir={tmp_path / 'run'}", "run.name=t",
                                "data.template=alpaca", "eval.max_new_tokens=2", "eval.risks.enabled=false",
                                "eval.bootstrap_resamples=100", "run.carbon=false", "eval.forgetting.text_tokens=128",
                                "eval.forgetting.max_new_tokens=2", "eval.forgetting.max_questions=4",
                                "eval.forgetting.max_perplexity_increase=1000", "eval.forgetting.max_lost_share=1.0"])
    _nudged(tiny_model_dir, 1, 0.05).save_pretrained(recipe.run_dir / "model")
    tokenizer.save_pretrained(recipe.run_dir / "model")
    records = list(generate_records(8, seed=1, languages=["en"], tasks=["add"]))
    for split, rows in (("train", records[:4]), ("validation", []), ("test", records[4:])):
        write_jsonl(rows, recipe.run_dir / "data" / f"{split}.jsonl")
    stage_eval(recipe)
    forgetting = json.loads((recipe.run_dir / "metrics.json").read_text(encoding="utf-8"))["forgetting"]
    against = forgetting["original_base"]
    assert against["model"] == str(tiny_model_dir) and "gate" not in against
    for lang, text in against["text"].items():  # the same tuned model, measured against another base
        assert text["tuned_perplexity"] == pytest.approx(forgetting["text"][lang]["tuned_perplexity"])
        assert text["base_perplexity"] != pytest.approx(forgetting["text"][lang]["base_perplexity"])
    assert "Against the original base" in (recipe.run_dir / "report.md").read_text(encoding="utf-8")
