"""train.report_to: MLflow and W&B runs of a real (tiny) train + eval, read back with the libraries themselves."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ayar import pipeline
from ayar.errors import UsageError
from ayar.recipe import load_recipe
from ayar.train import tracking

SETTINGS = [
    "data.synthetic.num_records=40", "train.max_steps=4", "train.batch_size=4", "train.logging_steps=1",
    "train.precision=fp32", "eval.max_examples=4", "eval.max_new_tokens=2", "eval.compare_base=false",
    "eval.risks.enabled=false", "eval.annotation_sheet=false", "eval.bootstrap_resamples=100", "run.carbon=false",
    "train.report_to=[tensorboard, mlflow, wandb]",
]


@pytest.fixture(scope="module")
def tracked_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """prepare -> train -> eval with all three trackers, W&B offline, no tracking URI in the environment."""
    work = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        env.setenv("HOME", str(work))  # no ~/.netrc, no global W&B settings from the machine
        recipe = load_recipe(Path(__file__).parents[3] / "recipes/quickstart.yaml",
                             [f"model.name_or_path={tiny_model_dir}", f"run.output_dir={work}", "run.name=tracked",
                              "pretrain.enabled=false", *SETTINGS])
        pipeline.stage_prepare(recipe)
        pipeline.stage_train(recipe)
        pipeline.stage_eval(recipe)
    yield recipe.run_dir


def test_mlflow_client_reads_back_params_metrics_and_artifacts(tracked_run: Path) -> None:
    from mlflow.tracking import MlflowClient

    record = json.loads((tracked_run / "tracking.json").read_text())["mlflow"]
    assert record["tracking_uri"] == (tracked_run / "mlruns").resolve().as_uri()  # the run folder's store
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to read a file store
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    run = client.get_run(record["run_id"])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["recipe.train.max_steps"] == "4"
    assert params["recipe.method.name"] == "lora"
    assert params["recipe.train.report_to"] == '["tensorboard", "mlflow", "wandb"]'
    assert params["learning_rate"]  # transformers' own callback logged the TrainingArguments too
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3, 4]  # logging_steps 1
    metrics = json.loads((tracked_run / "metrics.json").read_text())
    assert run.data.metrics["eval/tuned/perplexity"] == pytest.approx(metrics["eval"]["tuned"]["perplexity"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "report.html", "loss_curve.png", "metrics.json", "recipe.yaml"} <= artifacts
    local = Path(client.download_artifacts(run.info.run_id, "report.md", str(tracked_run / "dl")))
    assert local.read_text() == (tracked_run / "report.md").read_text()


def test_tensorboard_stays_in_the_run_folder(tracked_run: Path) -> None:
    assert list((tracked_run / "tb").glob("events.out.tfevents.*"))


def _wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B transaction log (.wandb): LevelDB's log format carrying protobuf records.

    wandb's Python package no longer ships a reader (its Go core writes the file), so the test reads the
    documented framing itself: a 7-byte header, 32 KiB blocks, chunks of (crc32, length, type).
    """
    from wandb.proto import wandb_internal_pb2

    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block  # a block's tail too short for a header is padding
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_folder_holds_the_metrics(tracked_run: Path) -> None:
    record = json.loads((tracked_run / "tracking.json").read_text())["wandb"]
    assert record["mode"] == "offline"
    logs = sorted((tracked_run / "wandb").glob(f"offline-run-*-{record['id']}/run-{record['id']}.wandb"))
    assert logs, list((tracked_run / "wandb").iterdir())
    history, config = [], {}
    for log in logs:
        for rec in _wandb_records(log):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in rec.history.item})
            elif kind == "run":
                config.update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
    train_losses = [h["train/loss"] for h in history if "train/loss" in h]
    assert len(train_losses) == 4
    assert config["recipe"]["train"]["max_steps"] == 4
    metrics = json.loads((tracked_run / "metrics.json").read_text())
    evals = [h for h in history if "eval/tuned/perplexity" in h]
    assert evals and evals[0]["eval/tuned/perplexity"] == pytest.approx(metrics["eval"]["tuned"]["perplexity"])


def test_tracking_uri_from_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///elsewhere/mlruns")
    assert tracking.mlflow_tracking_uri(tmp_path) == "file:///elsewhere/mlruns"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.mlflow_tracking_uri(tmp_path) == (tmp_path / "mlruns").resolve().as_uri()


def test_wandb_is_offline_without_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("WANDB_MODE", "WANDB_API_KEY", "NETRC", "WANDB_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert tracking.wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.wandb_mode() == "disabled"


def test_eval_metrics_keep_finite_numbers_only() -> None:
    metrics = tracking.eval_metrics({"tuned": {"chrf": 41.5, "by_label(x)": {"a": 1}, "n": float("nan"),
                                               "ok": True, "name": "x"}})
    assert metrics == {"eval/tuned/chrf": 41.5, "eval/tuned/by_label_x_/a": 1.0}


def test_unknown_tracker_is_a_recipe_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="train.report_to"):
        load_recipe(None, ["model.name_or_path=x", "train.report_to=[comet]"])
