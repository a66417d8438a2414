"""The forgetting report: an unchanged model shows none; a damaged one shows it and trips the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ayar.errors import GateError
from ayar.eval.forgetting import GENERAL_QUESTIONS, compare, probe
from ayar.models.load import load_model, load_tokenizer
from ayar.recipe import EvalConfig, ForgettingConfig

CFG = EvalConfig(batch_size=20, forgetting=ForgettingConfig(text_tokens=512, max_new_tokens=16))


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


def test_the_base_answers_most_general_questions(smollm2_probes: dict[str, dict]) -> None:
    answers = smollm2_probes["base"]["answers"]
    assert len(answers) == len(GENERAL_QUESTIONS)
    assert sum(a["correct"] for a in answers) >= 10, answers  # the probe has something to lose


def test_an_unchanged_model_shows_no_forgetting(smollm2_probes: dict[str, dict]) -> None:
    result = compare(smollm2_probes["base"], smollm2_probes["base"], CFG.forgetting)
    assert result["text"]["relative_increase"] == 0.0
    assert result["answers"]["lost"] == 0 and result["answers"]["kept"] == result["answers"]["base_correct"]
    assert result["gate"] == {**result["gate"], "passed": True, "reasons": []}


def test_a_damaged_model_shows_forgetting_and_fails_the_gate(smollm2_probes: dict[str, dict]) -> None:
    result = compare(smollm2_probes["base"], smollm2_probes["damaged"], CFG.forgetting)
    assert result["text"]["relative_increase"] > 0.25
    assert result["answers"]["lost"] > 2 and len(result["answers"]["lost_examples"]) == result["answers"]["lost"]
    assert not result["gate"]["passed"] and len(result["gate"]["reasons"]) == 2
    unbounded = ForgettingConfig(max_perplexity_increase=None, max_answers_lost=None)
    assert compare(smollm2_probes["base"], smollm2_probes["damaged"], unbounded)["gate"]["passed"]


def _probe(perplexity: float, correct: list[bool]) -> dict:
    return {"perplexity": perplexity, "tokens": 100,
            "answers": [{"prompt": f"q{i}", "output": "a" if c else "b", "correct": c} for i, c in enumerate(correct)]}


@pytest.mark.parametrize(("tuned", "bounds", "reasons"), [
    (_probe(11.9, [True, True, False]), (0.2, 0), []),  # +19%, nothing lost: passes
    (_probe(12.1, [True, True, False]), (0.2, 0), ["perplexity"]),  # +21%
    (_probe(10.0, [True, False, True]), (0.2, 0), ["answers"]),  # one lost (and one gained)
    (_probe(10.0, [True, False, True]), (0.2, 1), []),  # one lost is allowed
])
def test_the_gate_checks_each_bound(tuned: dict, bounds: tuple, reasons: list[str]) -> None:
    cfg = ForgettingConfig(max_perplexity_increase=bounds[0], max_answers_lost=bounds[1])
    result = compare(_probe(10.0, [True, True, False]), tuned, cfg)
    assert [("perplexity" if "perplexity" in r else "answers") for r in result["gate"]["reasons"]] == reasons
    assert result["gate"]["passed"] == (not reasons)


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
                                "eval.forgetting.max_new_tokens=2", "eval.forgetting.max_perplexity_increase=0.01"])
    data = recipe.run_dir / "data"
    records = list(generate_records(8, seed=1, languages=["en"], tasks=["add"]))
    for split, rows in (("train", records[:4]), ("validation", []), ("test", records[4:])):
        write_jsonl(rows, data / f"{split}.jsonl")
    with pytest.raises(GateError, match="forgetting gate failed: perplexity on general text rose") as failure:
        stage_eval(recipe)
    assert failure.value.exit_code == 4
    metrics = json.loads((recipe.run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["forgetting"]["gate"]["passed"] is False and "forgetting" not in metrics["eval"]
    assert "## Forgetting" in (recipe.run_dir / "report.md").read_text(encoding="utf-8")
