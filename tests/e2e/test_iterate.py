"""`ayar iterate` end to end on a tiny model: v1 is served, a scripted user sends requests and feedback with a
consistent preference, v2 trains on it, and the promotion check compares them (the feedback-to-data rules, the
method choice and the promotion check alone are in tests/unit/iterate/)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ayar.cli import app
from ayar.errors import UsageError
from ayar.iterate import iterate

WORDS = ["apple", "river", "light", "window", "garden", "bridge", "teacher", "pencil", "school", "music", "planet",
         "orange", "silver", "forest", "island", "market", "doctor", "engine", "letter", "winter", "spring",
         "summer", "autumn", "bottle", "candle", "dragon", "friend", "guitar", "hammer", "jacket"]


def _v1_run(tiny_model_dir: Path, out: Path) -> Path:
    from ayar.pipeline import stage_prepare, stage_train
    from ayar.recipe import load_recipe

    recipe = load_recipe(None, [
        f"model.name_or_path={tiny_model_dir}", f"run.output_dir={out}", "run.name=shop",
        "data.synthetic.num_records=40", "data.synthetic.tasks=[add,reverse]", "data.template=alpaca",
        "data.max_length=64", "method.name=lora", "method.target_modules=all-linear", "train.max_steps=2",
        "train.batch_size=8", "train.precision=fp32", "run.carbon=false", "eval.max_examples=6",
        "eval.max_new_tokens=4", "eval.risks.enabled=false", "eval.annotation_sheet=false",
        "eval.bootstrap_resamples=100",
    ])
    stage_prepare(recipe)
    stage_train(recipe)
    return recipe.run_dir


def _serve_and_collect_feedback(v1: Path, db: Path) -> dict[str, int]:
    """The scripted user: asks about each word, wants the answer 'no <word>', and says so."""
    from ayar.serve.app import ServeSettings, create_app
    from ayar.serve.engine import load_engine

    test_prompt = next(json.loads(line) for line in (v1 / "data" / "test.jsonl").open())
    engine = load_engine(v1 / "model", served_name="shop").start()
    app = create_app(ServeSettings(log_db=db, log_requests=True, log_text=True), engine=engine)
    sent = {"pairs": 0, "ratings": 0, "leaky": 0}
    with TestClient(app) as client:
        def ask(text: str) -> str:
            body = {"model": "shop", "messages": [{"role": "user", "content": text}], "max_tokens": 4,
                    "temperature": 0}
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200
            return response.json()["id"]

        def feedback(body: dict) -> None:
            assert client.post("/v1/feedback", json=body).status_code == 200

        for i, word in enumerate(WORDS):
            completion = ask(f"Say something about {word}.")
            if i % 5 == 4:  # a rating alone
                feedback({"id": completion, "rating": "down"})
                sent["ratings"] += 1
            else:
                feedback({"id": completion, "rating": "down", "correction": f"no {word}"})
                sent["pairs"] += 1
        prompt = test_prompt["instruction"] + (f"\n\n### Input:\n{test_prompt['input']}" if test_prompt.get("input")
                                               else "")
        feedback({"id": ask(prompt), "rating": "down", "correction": "leaked"})  # a test prompt: must be dropped
        sent["leaky"] += 1
    engine.stop()
    return sent


def test_iterate_trains_v2_from_served_feedback_and_checks_it_for_promotion(tiny_model_dir: Path, tmp_path: Path) -> None:
    v1 = _v1_run(tiny_model_dir, tmp_path / "runs")
    db = tmp_path / "requests.sqlite"
    sent = _serve_and_collect_feedback(v1, db)
    overrides = ["train.max_steps=40", "train.learning_rate=1e-2", "train.warmup_ratio=0",
                 "iterate.drift_embeddings=false", "iterate.holdout=0.25"]
    result = CliRunner().invoke(app, ["iterate", str(v1), "--db", str(db), *(f"--set={o}" for o in overrides)])
    assert result.exit_code == 0, result.output
    v2 = tmp_path / "runs" / "shop-v2"
    metrics = json.loads((v2 / "metrics.json").read_text())
    assert f"promotion: {metrics['promotion']['decision']}" in result.output  # the command's own summary
    card = metrics["iterate"]["card"]
    assert metrics["iterate"]["method"] == "dpo"  # pairs call for a preference method
    assert card["dropped"]["test_prompt"] == 2  # the leaky correction: its SFT record and its pair
    assert card["usable"] == {"sft": sent["pairs"], "pairs": sent["pairs"], "kto": sent["ratings"]}
    assert card["replayed_v1_records"] == 0  # v1's rows are instructions, DPO trains on pairs: nothing to replay
    assert card["held_out"]["pairs"] > 0 and card["train"]["pairs"] + card["held_out"]["pairs"] == sent["pairs"]
    trained = [json.loads(line) for line in (v2 / "data" / "train.jsonl").open()]
    held = [json.loads(line) for line in (v2 / "data" / "feedback_heldout.jsonl").open()]
    assert {r["prompt"] for r in trained}.isdisjoint(r.get("prompt", r.get("instruction")) for r in held)
    assert (v2 / "data" / "test.jsonl").read_text() == (v1 / "data" / "test.jsonl").read_text()
    assert metrics["iterate"]["drift"]["n_live"] == len(WORDS) + 1
    # v2 started from v1 (merged) and learned the user's preference on prompts it never trained on.
    assert json.loads((v2 / "model" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        (v2 / "base").resolve())
    fb = metrics["feedback_eval"]
    print("held-out feedback", fb)
    assert fb["v2"]["preference"]["margin_mean"] > fb["v1"]["preference"]["margin_mean"] + 1.0
    assert fb["v2"]["preference"]["accuracy"] >= fb["v1"]["preference"]["accuracy"]
    promotion = metrics["promotion"]
    assert "gate" not in metrics
    assert promotion["decision"] == ("promote" if all(c["passed"] for c in promotion["checks"]) else "block")
    assert promotion["bounds"]["max_test_drop"] == 0.02 and promotion["reasons"]
    assert {"base", "tuned", "comparison"} <= set(metrics["eval"])
    forgetting = next(c for c in promotion["checks"] if c["check"].startswith("forgetting"))  # eval.forgetting's gate
    assert forgetting["passed"] == metrics["forgetting"]["gate"]["passed"]
    assert forgetting["v1"] == metrics["forgetting"]["text"]["en"]["base_perplexity"]
    report = (v2 / "report.md").read_text(encoding="utf-8")
    assert "(v1) ->" in report and f"Promotion: **{promotion['decision'].upper()}**" in report


def test_iterate_refuses_without_a_run_or_enough_feedback(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a trained ayar run"):
        iterate(tmp_path, tmp_path / "db.sqlite")
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    from ayar.recipe import dump_recipe, load_recipe

    dump_recipe(load_recipe(None, [f"model.name_or_path={tiny_model_dir}"]), run / "recipe.yaml")
    for split in ("train", "test"):
        (run / "data").mkdir(exist_ok=True)
        (run / "data" / f"{split}.jsonl").write_text("")
    with pytest.raises(UsageError, match="request log not found"):
        iterate(run, tmp_path / "missing.sqlite")
    from ayar.serve.logging_db import connect

    connect(tmp_path / "empty.sqlite").close()
    with pytest.raises(UsageError, match="usable feedback records"):
        iterate(run, tmp_path / "empty.sqlite")
    assert sqlite3.connect(tmp_path / "empty.sqlite").execute("SELECT count(*) FROM feedback").fetchone()[0] == 0


def test_cli_iterate_reports_a_mistake_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    result = subprocess.run([sys.executable, "-m", "ayar.cli", "iterate", str(tmp_path), "--db", "x.sqlite"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("ayar: error:") and "not a trained ayar run" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
