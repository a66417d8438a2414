"""The eval stage on a tiny model: figures, files, the split guard and the report."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pytest

from ayar.data.prepare import PreparedData
from ayar.data.synthetic import generate_records, write_jsonl
from ayar.errors import UsageError
from ayar.eval.evaluate import EvalResult, check_eval_split, evaluate, splits_used_for_training
from ayar.eval.report import write_report
from ayar.recipe import load_recipe


def _recipe(tmp_path: Path, model_dir: Path, *extra: str):
    return load_recipe(None, [f"model.name_or_path={model_dir}", f"run.output_dir={tmp_path}", "run.name=t",
                              "data.template=alpaca", "eval.max_new_tokens=4", "eval.bootstrap_resamples=200",
                              "eval.risks.max_new_tokens=3", "eval.risks.memorization_records=5",
                              "eval.num_samples=3", *extra])


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EvalResult, object]:
    tmp_path = tmp_path_factory.mktemp("eval_stage")
    recipe = _recipe(tmp_path, tiny_model_dir)
    records = list(generate_records(16, seed=1, languages=["tr", "en"], tasks=["add", "upper"]))
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(records[:10], data / "train.jsonl")
    write_jsonl([], data / "validation.jsonl")
    write_jsonl(records[10:], data / "test.jsonl")
    run_dir = recipe.run_dir
    run_dir.mkdir(parents=True)
    # the same folder as base and tuned: every paired difference must be exactly zero
    result = evaluate(recipe, tiny_model_dir, str(tiny_model_dir), PreparedData(data), run_dir)
    return run_dir, result, recipe


def test_evaluate_returns_every_section(evaluated: tuple[Path, EvalResult, object]) -> None:
    result = evaluated[1].sections
    assert set(result) >= {"base", "tuned", "comparison", "error_analysis", "risks", "histograms", "split"}
    for name in ("base", "tuned"):
        block = result[name]
        assert math.isfinite(block["perplexity"]) and block["perplexity"] > 1
        assert 0.0 <= block["exact_match"] <= 1.0
        assert {"bleu", "chrf", "rouge1", "rouge2", "rougeL"} <= set(block)
        assert block["examples"] == 6
    assert result["base"]["perplexity"] == pytest.approx(result["tuned"]["perplexity"])
    nll = result["comparison"]["metrics"]["nll"]
    assert nll["delta"] == pytest.approx(0.0, abs=1e-6) and nll["same"] == 6
    assert set(result["risks"]["tuned"]) == {"bias", "hallucination", "security", "privacy"}
    assert result["error_analysis"]["tuned"]["by_label"].keys() == {"add", "upper"}


def test_forgetting_report_is_apart_from_the_eval_figures(evaluated: tuple[Path, EvalResult, object]) -> None:
    result = evaluated[1]
    assert "forgetting" not in result.sections  # metrics.json keeps it under its own key
    assert result.forgetting is not None and set(result.forgetting) == {"text", "answers", "gate"}
    assert result.forgetting["gate"]["passed"]  # the same model as base and tuned forgets nothing


def test_evaluate_writes_predictions_samples_and_sheet(evaluated: tuple[Path, EvalResult, object]) -> None:
    run_dir, _, _ = evaluated
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6
    assert {"base_output", "tuned_output", "tuned_nll", "delta_nll", "tuned_chrf"} <= set(rows[0])
    assert len((run_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()) == 3
    assert (run_dir / "annotation" / "annotation.csv").is_file()
    assert (run_dir / "annotation" / "annotation_key.json").is_file()


def test_report_md_and_html_show_the_figures(evaluated: tuple[Path, EvalResult, object]) -> None:
    run_dir, result = evaluated[0], evaluated[1].sections
    metrics = {"train": {"final_loss": 1.5, "loss_history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]},
               "eval": result,
               "carbon": {"train": {"energy_kwh": 0.001, "co2_kg": 0.0004, "duration_s": 3.0,
                                    "country_iso_code": "TUR", "power_source": "estimated"}}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    md = write_report(run_dir, metrics, "t").read_text(encoding="utf-8")
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    for text in ("Evaluation on the held-out 'test' split", "Comparison: tuned versus base", "Error analysis",
                 "Bias (tuned)", "Security (tuned)", "Consent and privacy (tuned)", "Carbon"):
        assert text in md and html.escape(text) in page
    assert f"{result['tuned']['perplexity']:.4g}" in page
    assert 'id="metric-table"' in page and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page  # opens offline
    assert (run_dir / "report_files" / "loss_curve.png").is_file()


def test_split_guard() -> None:
    check_eval_split("test", {"train"}, force=False)
    with pytest.raises(UsageError, match="--force"):
        check_eval_split("validation", {"train", "validation"}, force=False)
    check_eval_split("validation", {"train", "validation"}, force=True)


def test_splits_used_for_training(tmp_path: Path, tiny_model_dir: Path) -> None:
    assert splits_used_for_training(_recipe(tmp_path, tiny_model_dir)) == {"train"}
    selecting = _recipe(tmp_path, tiny_model_dir, "train.load_best_model_at_end=true")
    assert splits_used_for_training(selecting) == {"train", "validation"}
