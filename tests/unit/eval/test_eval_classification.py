"""Classification eval: predictions from the model's logits, metrics from them."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from ayar.eval.tasks import evaluate_classification
from ayar.models.load import load_tokenizer
from ayar.recipe import load_recipe


def test_classification_eval_matches_logits(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    model.config.pad_token_id = tokenizer.pad_token_id
    records = [{"id": str(i), "text": text, "label": label} for i, (text, label) in enumerate(
        [("güzel bir gün", "pos"), ("kötü bir film", "neg"), ("harika", "pos"), ("berbat", "neg"),
         ("fena değil", "pos")])]
    recipe = load_recipe(None, [f"model.name_or_path={tiny_model_dir}", "task=classification",
                                "data.format=classification", "eval.batch_size=2"])
    result = evaluate_classification(model, tokenizer, records, [r["text"] for r in records], recipe)
    with torch.no_grad():
        expected = [model.config.id2label[int(model(**tokenizer(r["text"], return_tensors="pt")).logits.argmax())]
                    for r in records]
    assert result["pred_labels"] == expected
    accuracy = sum(p == r["label"] for p, r in zip(expected, records, strict=True)) / len(records)
    assert result["summary"]["accuracy"] == accuracy == result["summary"]["exact_match"]
    assert sum(map(sum, result["summary"]["confusion_matrix"])) == 5
    assert result["summary"]["labels"] == ["neg", "pos"]
    assert all(r["nll"] > 0 for r in result["rows"])


def test_risk_probes_skip_a_classifier(tiny_model_dir: Path) -> None:
    from ayar.eval.risks.run import run_risk_probes

    recipe = load_recipe(None, [f"model.name_or_path={tiny_model_dir}", "task=classification",
                                "data.format=classification"])
    assert "skipped" in run_risk_probes(None, None, [], [], recipe)


def test_a_lora_classifier_is_evaluated_with_its_own_labels(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The adapter folder keeps the label names its new head was trained with; the base is rebuilt with them
    (without them it got a 2-label head: a size mismatch for 4 topics, and LABEL_0/LABEL_1 for 2)."""
    import json

    from ayar.models.load import HEAD_FILE
    from ayar.pipeline import run_all

    recipe = load_recipe(None, [
        "task=classification", f"model.name_or_path={tiny_model_dir}", f"run.output_dir={tmp_path}", "run.name=cls",
        "data.format=classification", "data.max_length=32",
        "data.synthetic={num_records: 60, languages: [en], tasks: [topic]}", "method.name=lora",
        "train.max_steps=2", "train.batch_size=4", "train.precision=fp32"])
    metrics = run_all(recipe)
    run = tmp_path / "cls"
    train_labels = {json.loads(line)["label"] for line in (run / "data" / "train.jsonl").read_text().splitlines()}
    assert len(train_labels) > 2
    head = json.loads((run / "model" / HEAD_FILE).read_text())
    assert set(head["id2label"].values()) == train_labels and head["pad_token_id"] is not None
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert {r["tuned_output"] for r in rows} <= train_labels  # predictions are the task's label names
    assert metrics["eval"]["tuned"]["labels"] == sorted(train_labels)
