"""The eval stage: base and fine-tuned model on the held-out split, side by side.

Writes ``predictions.jsonl`` (every example, every model, every per-example score and the deltas),
``samples.jsonl`` (the first few, for the report) and ``annotation/`` (a blind human-eval sheet),
and returns the figures for metrics.json: ``base``, ``tuned``, ``comparison``, ``error_analysis``,
``risks``, ``judge``, ``histograms``, ``split`` and ``forgetting`` (see ``ayar.eval.forgetting``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ayar.data.prepare import PreparedData
from ayar.data.templates import record_to_messages, set_template
from ayar.errors import UsageError
from ayar.eval.compare import compare_per_example
from ayar.eval.error_analysis import analyze_errors
from ayar.eval.preference import instruction_records, preference_scores
from ayar.eval.tasks import evaluate_model, record_prompt
from ayar.methods.preference import PREFERENCE_FORMATS
from ayar.models.load import load_for_inference
from ayar.recipe import Recipe
from ayar.tasks import get_task

SCORE_KEYS = ("nll", "exact_match", "chrf", "rouge1", "rouge2", "rougeL", "correct", "judge_score")


def splits_used_for_training(recipe: Recipe) -> set[str]:
    """The splits that shaped the model: train always, validation when it picked the checkpoint."""
    used = {"train"}
    if recipe.train.load_best_model_at_end or recipe.train.early_stopping_patience:
        used.add("validation")
    return used


def check_eval_split(split: str, used_for_training: set[str], force: bool) -> None:
    """Refuse to report held-out figures on a split that training or checkpoint selection has seen."""
    if split in used_for_training and not force:
        raise UsageError(
            f"eval.split '{split}' was used for training or checkpoint selection, so its figures would be "
            "optimistic; evaluate on 'test' or pass --force to do it anyway"
        )


def _load(path: str | Path, recipe: Recipe, template: bool) -> tuple[Any, Any]:
    model, tokenizer = load_for_inference(path, recipe.task, recipe.model.trust_remote_code)
    # the base is asked in the same format as the tuned model (whose tokenizer saved its template)
    if get_task(recipe.task).chat and (template or not tokenizer.chat_template):
        set_template(tokenizer, recipe.data.template)
    return model, tokenizer


def _train_texts(prepared: PreparedData, recipe: Recipe, tokenizer: Any) -> list[str]:
    """Training records as the model saw them (chat-formatted), for the memorisation probe."""
    texts = []
    for record in prepared.read_split("train"):
        if not get_task(recipe.task).renders_chat(recipe.data.format):
            texts.append(str(record.get("text") or record.get("source") or ""))
        else:
            messages = record_to_messages(record, recipe.data.system_prompt)
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts


def _histograms(models: dict[str, dict[str, Any]], key: str, bins: int = 20) -> dict[str, Any] | None:
    """Counts per shared bin of one per-example score, for every model (the report draws these)."""
    values = {name: [r[key] for r in block["rows"] if isinstance(r.get(key), int | float) and not math.isnan(r[key])]
              for name, block in models.items()}
    pooled = [v for vs in values.values() for v in vs]
    if not pooled:
        return None
    edges = np.histogram_bin_edges(pooled, bins=bins)
    return {"edges": edges.tolist(),
            "counts": {name: np.histogram(vs, bins=edges)[0].tolist() for name, vs in values.items()}}


def _judge(models: dict[str, dict[str, Any]], recipe: Recipe) -> dict[str, Any]:
    from ayar.eval.judge import DEFAULT_RUBRIC, JudgeClient

    cfg = recipe.eval.judge
    client = JudgeClient(cfg.url, cfg.model, cfg.api_key_env, cfg.rubric or DEFAULT_RUBRIC, cfg.timeout_s)
    results = {}
    for name, block in models.items():
        rows = block["rows"][: cfg.max_examples]
        result = client.score_all([r["prompt"] for r in rows], [r["reference"] for r in rows],
                                  [r["output"] for r in rows])
        for row, score in zip(rows, result.pop("scores"), strict=False):
            row["judge_score"] = math.nan if score is None else score
        results[name] = result
    if "base" in models and "tuned" in models:
        results["win_rate"] = judge_win_rate([r.get("judge_score", math.nan) for r in models["base"]["rows"]],
                                             [r.get("judge_score", math.nan) for r in models["tuned"]["rows"]])
    return results


def judge_win_rate(base: list[float], tuned: list[float]) -> dict[str, Any]:
    """Share of prompts where the judge scored the tuned answer above the base's (ties count half)."""
    both = [(b, t) for b, t in zip(base, tuned, strict=False) if not (math.isnan(b) or math.isnan(t))]
    if not both:
        return {"judged": 0}
    wins, ties = sum(t > b for b, t in both), sum(t == b for b, t in both)
    return {"judged": len(both), "wins": wins, "ties": ties, "losses": len(both) - wins - ties,
            "win_rate": (wins + ties / 2) / len(both)}


def _write_predictions(records: list[dict], models: dict[str, dict], run_dir: Path, recipe: Recipe) -> None:
    """predictions.jsonl (all examples, with per-model scores and deltas) and samples.jsonl (the first few)."""
    rows = []
    for index in range(len(records)):
        first = next(iter(models.values()))["rows"][index]
        row = {k: first[k] for k in ("id", "prompt", "reference", "lang", "label", "input_tokens") if k in first}
        for name, block in models.items():
            example = block["rows"][index]
            row[f"{name}_output"] = example["output"]
            row |= {f"{name}_{k}": example[k] for k in (*SCORE_KEYS, "tokens") if k in example}
        if "base" in models and "tuned" in models:
            row |= {f"delta_{k}": row[f"tuned_{k}"] - row[f"base_{k}"] for k in SCORE_KEYS
                    if f"tuned_{k}" in row and f"base_{k}" in row}
        rows.append(row)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (run_dir / "predictions.jsonl").write_text(text, encoding="utf-8")
    shown = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[: recipe.eval.num_samples])
    (run_dir / "samples.jsonl").write_text(shown, encoding="utf-8")


def evaluate(recipe: Recipe, tuned_dir: Path, base_dir: str | None, prepared: PreparedData, run_dir: Path) -> dict:
    """Evaluate the tuned model (and the base, when asked) on the recipe's eval split; see the module doc."""
    cfg = recipe.eval
    records = prepared.read_split(cfg.split)
    if not records:
        raise UsageError(f"the '{cfg.split}' split is empty: nothing to evaluate (check data.split)")
    if cfg.max_examples:
        records = records[: cfg.max_examples]
    pairs = None
    if recipe.data.format in PREFERENCE_FORMATS:  # generation is scored against the preferred answer
        pairs, records = records, instruction_records(records)
        if not records:
            raise UsageError(f"the '{cfg.split}' split holds no preferred answer to evaluate against")
    prompts = [record_prompt(r, recipe) for r in records]
    sources = {"tuned": tuned_dir}
    # A classification base model has an untrained head: its figures would be noise.
    task = get_task(recipe.task)
    if base_dir is not None and cfg.compare_base and not task.label_map:
        sources = {"base": base_dir, "tuned": tuned_dir}
    models: dict[str, dict[str, Any]] = {}
    risks: dict[str, Any] = {}
    forgetting: dict[str, Any] = {}  # general-material probes per model, when base and tuned are both here
    measure_forgetting = cfg.forgetting.enabled and task.chat and "base" in sources  # chat-formatted probes
    for name, path in sources.items():
        model, tokenizer = _load(path, recipe, template=name == "base")
        models[name] = evaluate_model(model, tokenizer, records, prompts, recipe)
        if pairs is not None:
            scores = preference_scores(model, tokenizer, pairs, recipe.data.system_prompt, cfg.batch_size,
                                       recipe.data.max_length)
            models[name]["summary"]["preference"] = {k: v for k, v in scores.items() if k != "margins"}
        if cfg.risks.enabled:
            from ayar.eval.risks.run import run_risk_probes

            risks[name] = run_risk_probes(model, tokenizer, models[name]["rows"],
                                          _train_texts(prepared, recipe, tokenizer), recipe)
        if measure_forgetting:
            from ayar.eval.forgetting import probe, probe_cached

            # the base's results are kept by model hash: a run evaluates an unchanged base once
            forgetting[name] = probe_cached(model, tokenizer, cfg, path) if name == "base" else probe(model, tokenizer, cfg)
        del model
    result: dict[str, Any] = {name: block["summary"] for name, block in models.items()}
    if forgetting:
        from ayar.eval.forgetting import compare

        result["forgetting"] = compare(forgetting["base"], forgetting["tuned"], cfg.forgetting)
    if cfg.judge.enabled:
        result["judge"] = _judge(models, recipe)
    if "base" in models:
        scores = {name: {k: [r.get(k, math.nan) for r in block["rows"]] for k in SCORE_KEYS
                         if k in block["rows"][0]} for name, block in models.items()}
        tokens = [r.get("tokens", 1) for r in models["base"]["rows"]]
        result["comparison"] = compare_per_example(scores["base"], scores["tuned"], ("base", "tuned"),
                                                   {"nll": tokens}, cfg.bootstrap_resamples, cfg.confidence,
                                                   recipe.run.seed)
    metric = "correct" if task.label_map else cfg.error_metric
    result["error_analysis"] = {
        name: analyze_errors(block["rows"], metric, cfg.error_k, block.get("true_labels"), block.get("pred_labels"))
        for name, block in models.items()}
    result["histograms"] = {k: h for k in ("nll", "chrf") if (h := _histograms(models, k))}
    if risks:
        result["risks"] = risks
    result["split"] = {"name": cfg.split, "examples": len(records)}
    _write_predictions(records, models, run_dir, recipe)
    if "base" in models and cfg.annotation_sheet:
        from ayar.eval.human import export_sheet

        rows = [{"id": r["id"], "prompt": r["prompt"], "reference": r["reference"],
                 "base_output": r["output"], "tuned_output": t["output"]}
                for r, t in zip(models["base"]["rows"], models["tuned"]["rows"], strict=True)]
        export_sheet(rows, run_dir / "annotation", seed=recipe.run.seed)
    return result
