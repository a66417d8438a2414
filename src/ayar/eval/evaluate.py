"""The eval stage: base and fine-tuned model on the held-out split, side by side.

Writes ``predictions.jsonl`` (every example, every model, every per-example score and the deltas),
``samples.jsonl`` (the first few, for the report) and ``annotation/`` (a blind human-eval sheet),
and returns the figures for metrics.json as an ``EvalResult``: the ``eval`` sections (``base``, ``tuned``,
``comparison``, ``error_analysis``, ``risks``, ``judge``, ``histograms``, ``split``) and the ``forgetting``
report (see ``ayar.eval.forgetting``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ayar.data.prepare import PreparedData
from ayar.data.templates import record_to_messages, set_template
from ayar.errors import UsageError
from ayar.eval.compare import compare_per_example
from ayar.eval.error_analysis import analyze_errors
from ayar.eval.preference import instruction_records, preference_scores
from ayar.eval.tasks import evaluate_model, record_prompt
from ayar.methods.preference import PREFERENCE_FORMATS, to_conversational
from ayar.models.load import load_for_inference
from ayar.recipe import Recipe
from ayar.tasks import get_task

SCORE_KEYS = ("nll", "exact_match", "chrf", "rouge1", "rouge2", "rougeL", "correct", "judge_score")


@dataclass(frozen=True)
class EvalResult:
    """What the eval stage measured: the figures of metrics.json's ``eval`` key, and the forgetting report
    (its own ``forgetting`` key; None unless base and tuned were both probed)."""

    sections: dict[str, Any]
    forgetting: dict[str, Any] | None = None


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
        set_template(tokenizer, recipe.data.template, recipe.data.enable_thinking)
    return model, tokenizer


def _train_messages(record: dict[str, Any], recipe: Recipe) -> list[dict[str, Any]]:
    """A prepared training record as the conversation it teaches, in any chat-rendered format.

    A preference pair teaches its chosen answer and a KTO record its completion when labelled good; a
    completion labelled bad is trained against, so only its prompt is text the model is pushed toward.
    """
    if recipe.data.format not in PREFERENCE_FORMATS:
        return record_to_messages(record, recipe.data.system_prompt)
    # the shape TRL's trainers were given (trl_records), so the text matches what was trained on
    conversation = to_conversational(record, recipe.data.system_prompt)
    if "chosen" in conversation:
        return conversation["prompt"] + conversation["chosen"]
    return conversation["prompt"] + (conversation["completion"] if conversation["label"] else [])


def _train_texts(prepared: PreparedData, recipe: Recipe, tokenizer: Any) -> list[str]:
    """Training records as the model saw them (chat-formatted), for the memorisation probe."""
    if not get_task(recipe.task).renders_chat(recipe.data.format):
        return [str(record.get("text") or record.get("source") or "") for record in prepared.read_split("train")]
    return [tokenizer.apply_chat_template(_train_messages(record, recipe), tokenize=False)
            for record in prepared.read_split("train")]


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


def _eval_records(prepared: PreparedData, recipe: Recipe) -> tuple[list[dict], list[dict] | None]:
    """(records to generate for, preference pairs or None) from the recipe's eval split."""
    cfg = recipe.eval
    records = prepared.read_split(cfg.split)
    if not records:
        raise UsageError(f"the '{cfg.split}' split is empty: nothing to evaluate (check data.split)")
    if cfg.max_examples:
        records = records[: cfg.max_examples]
    if recipe.data.format not in PREFERENCE_FORMATS:
        return records, None
    pairs, records = records, instruction_records(records)  # generation is scored against the preferred answer
    if not records:
        raise UsageError(f"the '{cfg.split}' split holds no preferred answer to evaluate against")
    return records, pairs


def _sources(recipe: Recipe, tuned_dir: Path, base_dir: str | None) -> dict[str, str | Path]:
    """The models to evaluate by name: the tuned one, and the base first when it is compared."""
    # A classification base model has an untrained head: its figures would be noise.
    if base_dir is not None and recipe.eval.compare_base and not get_task(recipe.task).label_map:
        return {"base": base_dir, "tuned": tuned_dir}
    return {"tuned": tuned_dir}


def _score_model(model: Any, tokenizer: Any, records: list[dict], prompts: list[str], pairs: list[dict] | None,
                 recipe: Recipe) -> dict[str, Any]:
    """One model's rows and summary on the eval records (with preference accuracy on the pairs, if any)."""
    cfg = recipe.eval
    block = evaluate_model(model, tokenizer, records, prompts, recipe)
    if pairs is not None:
        scores = preference_scores(model, tokenizer, pairs, recipe.data.system_prompt, cfg.batch_size,
                                   recipe.data.max_length)
        block["summary"]["preference"] = {k: v for k, v in scores.items() if k != "margins"}
    return block


def _forgetting_probe(model: Any, tokenizer: Any, recipe: Recipe, name: str, path: str | Path) -> dict[str, Any]:
    """One model's general-material probes (chat-formatted)."""
    from ayar.eval.forgetting import probe, probe_cached

    # the base's results are kept by model hash: a run evaluates an unchanged base once
    if name == "base":
        return probe_cached(model, tokenizer, recipe.eval, path)
    return probe(model, tokenizer, recipe.eval)


def _forgetting_report(forgetting: dict[str, Any], recipe: Recipe) -> dict[str, Any] | None:
    """Tuned against base on the general-material probes, with the gate's verdict (None when not probed); where
    the base is itself a fine-tune, tuned against the original base too (reported, not gated)."""
    if not forgetting:
        return None
    from ayar.eval.forgetting import compare

    report = compare(forgetting["base"], forgetting["tuned"], recipe.eval.forgetting)
    if "original_base" in forgetting:
        against = compare(forgetting["original_base"], forgetting["tuned"], recipe.eval.forgetting)
        report["original_base"] = {"model": forgetting["original_base_model"],
                                   **{k: v for k, v in against.items() if k != "gate"}}
    return report


def original_base(base_dir: str | Path | None) -> str | None:
    """The model a compared base was itself fine-tuned from, where the base is a run's model (a recipe that
    starts from ``runs/<name>``): the first model of the chain of runs that is not a run's. None otherwise."""
    from ayar.models.load import is_run_folder, resolve_model_name

    if base_dir is None:
        return None
    found, folder = None, Path(base_dir)
    while folder.name == "model" and is_run_folder(folder.parent) and (folder.parent / "recipe.yaml").is_file():
        start = yaml.safe_load((folder.parent / "recipe.yaml").read_text(encoding="utf-8"))["model"]["name_or_path"]
        found = resolve_model_name(start)
        folder = Path(found)
    return found


def _comparison(models: dict[str, dict[str, Any]], recipe: Recipe) -> dict[str, Any]:
    """Paired tuned-versus-base differences of every per-example score (nll weighted by tokens)."""
    cfg = recipe.eval
    scores = {name: {k: [r.get(k, math.nan) for r in block["rows"]] for k in SCORE_KEYS
                     if k in block["rows"][0]} for name, block in models.items()}
    tokens = [r.get("tokens", 1) for r in models["base"]["rows"]]
    return compare_per_example(scores["base"], scores["tuned"], ("base", "tuned"), {"nll": tokens},
                               cfg.bootstrap_resamples, cfg.confidence, recipe.run.seed)


def _figures(models: dict[str, dict[str, Any]], risks: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """The eval figures for metrics.json from every model's rows; the judge's scores join the rows first."""
    cfg = recipe.eval
    result: dict[str, Any] = {name: block["summary"] for name, block in models.items()}
    if cfg.judge.enabled:
        result["judge"] = _judge(models, recipe)
    if "base" in models:
        result["comparison"] = _comparison(models, recipe)
    metric = "correct" if get_task(recipe.task).label_map else cfg.error_metric
    result["error_analysis"] = {
        name: analyze_errors(block["rows"], metric, cfg.error_k, block.get("true_labels"), block.get("pred_labels"))
        for name, block in models.items()}
    result["histograms"] = {k: h for k in ("nll", "chrf") if (h := _histograms(models, k))}
    if risks:
        result["risks"] = risks
    return result


def _export_annotation(models: dict[str, dict[str, Any]], run_dir: Path, recipe: Recipe) -> None:
    """The blind human-eval sheet of base and tuned outputs."""
    from ayar.eval.human import export_sheet

    rows = [{"id": r["id"], "prompt": r["prompt"], "reference": r["reference"],
             "base_output": r["output"], "tuned_output": t["output"]}
            for r, t in zip(models["base"]["rows"], models["tuned"]["rows"], strict=True)]
    export_sheet(rows, run_dir / "annotation", seed=recipe.run.seed)


def evaluate(recipe: Recipe, tuned_dir: Path, base_dir: str | None, prepared: PreparedData,
             run_dir: Path) -> EvalResult:
    """Evaluate the tuned model (and the base, when asked) on the recipe's eval split; see the module doc."""
    cfg = recipe.eval
    records, pairs = _eval_records(prepared, recipe)
    prompts = [record_prompt(r, recipe) for r in records]
    sources = _sources(recipe, tuned_dir, base_dir)
    models: dict[str, dict[str, Any]] = {}
    risks: dict[str, Any] = {}
    forgetting: dict[str, Any] = {}  # general-material probes per model, when base and tuned are both here
    measure_forgetting = cfg.forgetting.enabled and get_task(recipe.task).chat and "base" in sources
    for name, path in sources.items():
        model, tokenizer = _load(path, recipe, template=name == "base")
        models[name] = _score_model(model, tokenizer, records, prompts, pairs, recipe)
        if cfg.risks.enabled:
            from ayar.eval.risks.run import run_risk_probes

            risks[name] = run_risk_probes(model, tokenizer, models[name]["rows"],
                                          _train_texts(prepared, recipe, tokenizer), recipe)
        if measure_forgetting:
            forgetting[name] = _forgetting_probe(model, tokenizer, recipe, name, path)
        del model
    if measure_forgetting and (original := original_base(sources["base"])):
        model, tokenizer = _load(original, recipe, template=True)
        forgetting["original_base"] = _forgetting_probe(model, tokenizer, recipe, "base", original)
        forgetting["original_base_model"] = original
        del model
    result = _figures(models, risks, recipe)
    result["split"] = {"name": cfg.split, "examples": len(records)}
    _write_predictions(records, models, run_dir, recipe)
    if "base" in models and cfg.annotation_sheet:
        _export_annotation(models, run_dir, recipe)
    report = _forgetting_report(forgetting, recipe)
    if cfg.benchmarks.tasks:
        result["benchmarks"] = _benchmarks("base" in sources, tuned_dir, base_dir, recipe, run_dir)
        _bound_benchmarks(report, result["benchmarks"])
    return EvalResult(result, report)


def _benchmarks(with_base: bool, tuned_dir: Path, base_dir: str | None, recipe: Recipe,
                run_dir: Path) -> dict[str, Any]:
    """lm-eval's tasks on the tuned model (an adapter on its base through peft=) and, when compared, the base
    (``eval.benchmarks``)."""
    from ayar.eval.benchmarks import compare, model_args, run_benchmarks
    from ayar.models.load import is_adapter_dir

    cfg, work = recipe.eval.benchmarks, run_dir / "benchmarks"
    tuned = run_benchmarks(model_args(tuned_dir, base_dir, is_adapter_dir(tuned_dir)), cfg, work / "tuned")
    base = run_benchmarks(model_args(Path(base_dir), None, False), cfg, work / "base") if with_base and base_dir \
        else None
    return compare(base, tuned, cfg)


def _bound_benchmarks(forgetting: dict[str, Any] | None, benchmarks: dict[str, Any]) -> None:
    """A benchmark drop past ``eval.benchmarks.max_drop`` fails the forgetting gate (where the probe ran)."""
    if forgetting is not None and not benchmarks["passed"]:
        forgetting["gate"]["reasons"] += benchmarks["reasons"]
        forgetting["gate"]["passed"] = False
