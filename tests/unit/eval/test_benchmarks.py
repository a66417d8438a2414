"""Standard benchmarks through lm-evaluation-harness: ayar's probe as an lm-eval task scores as ayar does, an
adapter scored through peft= equals the merged model, and a drop past the bound fails."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ayar.data.templates import render_prompt, set_template
from ayar.errors import UsageError
from ayar.eval.benchmarks import compare, model_args, run_benchmarks, task_names, write_probe_task
from ayar.eval.forgetting import select_questions
from ayar.eval.perplexity import nll_sums
from ayar.models.load import load_for_inference
from ayar.recipe.eval_config import BenchmarksConfig


@pytest.fixture(scope="module")
def chat_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chat_model")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    model, tokenizer = load_for_inference(out)
    set_template(tokenizer, "chatml")
    tokenizer.save_pretrained(out)
    return out


def test_the_probe_task_gives_lm_eval_ayars_own_option_scores(chat_model: Path, tmp_path: Path) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    folder = write_probe_task(tmp_path / "tasks", max_questions=8)
    run = simple_evaluate(model="hf", model_args=model_args(chat_model, None, False), tasks=["ayar_general"],
                          task_manager=TaskManager(include_path=str(folder)), apply_chat_template=True,
                          log_samples=True, batch_size=4)
    model, tokenizer = load_for_inference(chat_model)
    questions = [q for q in select_questions(8) if q.choices]
    samples = sorted(run["samples"]["ayar_general"], key=lambda s: s["doc_id"])
    assert len(samples) == len(questions) > 0
    for sample, question in zip(samples, questions, strict=True):
        prompt = tokenizer(render_prompt(tokenizer, [{"role": "user", "content": question.prompt}]),
                           add_special_tokens=False)["input_ids"]
        pieces = [(prompt + ids, [-100] * len(prompt) + ids)
                  for ids in (tokenizer(c, add_special_tokens=False)["input_ids"] for c in question.choices or ())]
        ours = torch.tensor([-nll for nll, _ in nll_sums(model, pieces)])
        theirs = torch.tensor([resp[0][0] for resp in sample["resps"]])
        # lm-eval moves the prompt's trailing newline into every option: the same term added to each option, so
        # the options' differences (what ranks them) are ayar's
        torch.testing.assert_close(theirs - theirs[0], ours - ours[0], rtol=0, atol=1e-3)


def test_an_adapter_through_peft_scores_as_its_merged_model(chat_model: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_for_inference(chat_model)
    torch.manual_seed(0)
    tuned = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    tuned.save_pretrained(tmp_path / "adapter")
    merged = tuned.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    tokenizer.save_pretrained(tmp_path / "merged")
    cfg = BenchmarksConfig(tasks=["ayar_general"], max_questions=8, apply_chat_template=True)
    through_peft = run_benchmarks(model_args(tmp_path / "adapter", str(chat_model), True), cfg, tmp_path / "a")
    as_merged = run_benchmarks(model_args(tmp_path / "merged", None, False), cfg, tmp_path / "b")
    base = run_benchmarks(model_args(chat_model, None, False), cfg, tmp_path / "c")
    assert through_peft == as_merged
    assert through_peft["ayar_general"]["metric"] == "acc_bytes" and through_peft["ayar_general"]["stderr"] > 0
    assert compare(base, through_peft, cfg)["tasks"]["ayar_general"]["drop"] == pytest.approx(
        base["ayar_general"]["value"] - as_merged["ayar_general"]["value"])


def test_a_drop_past_the_bound_fails_and_within_it_passes() -> None:
    base = {"hellaswag": {"metric": "acc_norm", "value": 0.40, "stderr": 0.01, "n": 100}}
    tuned = {"hellaswag": {"metric": "acc_norm", "value": 0.35, "stderr": 0.01, "n": 100}}
    failed = compare(base, tuned, BenchmarksConfig(tasks=["hellaswag"], max_drop=0.02))
    assert not failed["passed"] and "hellaswag acc_norm fell 0.050 (bound 0.02)" in failed["reasons"][0]
    assert compare(base, tuned, BenchmarksConfig(tasks=["hellaswag"], max_drop=0.1))["passed"]
    assert compare(None, tuned, BenchmarksConfig(tasks=["hellaswag"], max_drop=0.0))["passed"]  # no base: no drop


def test_task_names_resolve_local_yaml_files_and_refuse_what_is_not_a_task(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("task: my_task\ndataset_path: json\n")
    names, include = task_names(BenchmarksConfig(tasks=["ayar_general", str(tmp_path / "mine.yaml"), "arc_easy"]),
                                tmp_path / "work")
    assert names == ["ayar_general", "my_task", "arc_easy"]
    assert include == [str(tmp_path / "work" / "tasks"), str(tmp_path)]
    with pytest.raises(UsageError, match="not found"):
        task_names(BenchmarksConfig(tasks=[str(tmp_path / "missing.yaml")]), tmp_path)
    (tmp_path / "bad.yaml").write_text("dataset_path: json\n")
    with pytest.raises(UsageError, match="has no 'task' name"):
        task_names(BenchmarksConfig(tasks=[str(tmp_path / "bad.yaml")]), tmp_path)
    with pytest.raises(UsageError, match="unknown lm-eval task"):
        run_benchmarks({"pretrained": "unused"}, BenchmarksConfig(tasks=["no_such_task_anywhere"]), tmp_path)


def test_the_eval_stage_scores_base_and_tuned_and_a_drop_joins_the_forgetting_gate(tiny_model_dir: Path,
                                                                                     tmp_path: Path) -> None:
    from ayar.errors import GateError
    from ayar.pipeline import stage_eval, stage_prepare, stage_train
    from ayar.recipe import load_recipe
    from ayar.run_folder import RunFolder

    recipe = load_recipe(None, [
        f"model.name_or_path={tiny_model_dir}", f"run.output_dir={tmp_path}", "run.name=bench", "run.carbon=false",
        "data.synthetic.num_records=40", "data.synthetic.tasks=[upper]", "data.template=chatml",
        "train.max_steps=3", "train.learning_rate=5e-2", "train.precision=fp32", "train.eval_steps=0",
        "train.report_to=[]", "eval.max_examples=4", "eval.max_new_tokens=4", "eval.risks.enabled=false",
        "eval.forgetting.max_questions=4", "eval.forgetting.text_tokens=64", "eval.forgetting.max_new_tokens=4",
        "eval.forgetting.max_perplexity_increase=null", "eval.forgetting.max_lost_share=null",
        "eval.benchmarks.tasks=[ayar_general]", "eval.benchmarks.max_questions=8", "eval.benchmarks.max_drop=0.0"])
    stage_prepare(recipe)
    stage_train(recipe)
    try:
        stage_eval(recipe)
    except GateError as stopped:
        assert "benchmark ayar_general" in str(stopped)
    metrics = RunFolder(recipe.run_dir).read_metrics()
    row = metrics["eval"]["benchmarks"]["tasks"]["ayar_general"]
    assert row["drop"] == pytest.approx(row["base"]["value"] - row["tuned"]["value"])
    failed = row["drop"] > 0
    assert metrics["eval"]["benchmarks"]["passed"] is not failed
    assert metrics["forgetting"]["gate"]["passed"] is not failed


def test_the_report_shows_each_task_with_its_error_and_the_verdict(tmp_path: Path) -> None:
    from ayar.eval.report import build_blocks
    from ayar.eval.report_render import render_markdown

    row = {"metric": "acc_norm", "value": 0.4, "stderr": 0.01, "n": 100}
    benchmarks = compare({"hellaswag": row}, {"hellaswag": {**row, "value": 0.3}},
                         BenchmarksConfig(tasks=["hellaswag"], max_drop=0.05))
    text = render_markdown(build_blocks(tmp_path, {"eval": {"benchmarks": benchmarks}}, "r"), tmp_path, "files")
    assert "Benchmarks (lm-evaluation-harness)" in text and "hellaswag" in text and "0.4 ± 0.01" in text
    assert "hellaswag acc_norm fell 0.100 (bound 0.05)" in text


def _arc_rows(count: int) -> list[dict]:
    """ARC-shaped rows whose two options are the same text: every option scores alike, lm-eval picks the first,
    so accuracy is the share of rows whose answer key is A, whatever the model."""
    return [{"id": f"q{i}", "question": f"Soru {i}: which one?", "answerKey": "AB"[i % 2],
             "choices": {"text": ["the same", "the same"], "label": ["A", "B"]}} for i in range(count)]


def _hub_copy(folder: Path, rows: list[dict]) -> Path:
    """A folder laid out as allenai/ai2_arc's hub repository: README.md naming the configs, parquet splits."""
    from datasets import Dataset

    for split in ("train", "validation", "test"):
        Dataset.from_list(rows).to_parquet(folder / "ARC-Easy" / f"{split}-00000-of-00001.parquet")
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: ARC-Easy\n  data_files:\n" + "".join(
        f"  - split: {s}\n    path: ARC-Easy/{s}-*\n" for s in ("train", "validation", "test")) + "---\n")
    return folder


def _split_files(folder: Path, rows: list[dict]) -> Path:
    import json

    folder.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize("layout", [_hub_copy, _split_files], ids=["hub_copy", "split_files"])
def test_a_hub_task_runs_offline_on_a_local_stand_in_of_its_dataset(
        chat_model: Path, tmp_path: Path, layout: Callable[[Path, list[dict]], Path]) -> None:
    import datasets

    assert datasets.config.HF_HUB_OFFLINE  # the hub's allenai/ai2_arc cannot be what is scored
    data = layout(tmp_path / "ai2_arc", _arc_rows(5))
    cfg = BenchmarksConfig(tasks=["arc_easy"], local_data={"arc_easy": str(data)})
    scores = run_benchmarks(model_args(chat_model, None, False), cfg, tmp_path / "work")
    assert scores["arc_easy"]["n"] == 5 and scores["arc_easy"]["metric"] == "acc_norm"
    assert scores["arc_easy"]["value"] == pytest.approx(3 / 5)  # rows 0, 2, 4 have answer key A
    written = (tmp_path / "work" / "local_data" / "arc_easy.yaml").read_text()
    assert "arc/arc_easy.yaml" in written and str(data) in written


def test_local_data_names_only_listed_yaml_tasks_and_existing_folders(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="piqa not among"):
        run_benchmarks({}, BenchmarksConfig(tasks=["arc_easy"], local_data={"piqa": str(tmp_path)}), tmp_path)
    with pytest.raises(UsageError, match="folder .* not found"):
        run_benchmarks({}, BenchmarksConfig(tasks=["arc_easy"], local_data={"arc_easy": str(tmp_path / "no")}),
                       tmp_path)
    with pytest.raises(UsageError, match="not a task defined by a YAML"):
        run_benchmarks({}, BenchmarksConfig(tasks=["ai2_arc"], local_data={"ai2_arc": str(tmp_path)}), tmp_path)
