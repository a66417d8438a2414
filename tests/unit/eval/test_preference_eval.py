"""A preference run through the pipeline: synthetic pairs, DPO, and the eval stage's preference figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ayar.eval.evaluate import judge_win_rate
from ayar.eval.preference import completion_logps, instruction_records


def test_dpo_run_reports_preference_accuracy_and_margins(tiny_model_dir: Path, tmp_path: Path) -> None:
    from ayar.pipeline import run_all
    from ayar.recipe import load_recipe

    recipe = load_recipe(None, [
        f"model.name_or_path={tiny_model_dir}", f"run.output_dir={tmp_path}", "run.name=pref", "run.carbon=false",
        "data.synthetic.num_records=40", "data.synthetic.tasks=[add]", "data.format=preference",
        "data.template=alpaca", "data.max_length=64", "method.name=dpo", "method.base_params.target_modules=all-linear",
        "train.max_steps=2", "train.batch_size=4", "train.precision=fp32", "eval.max_examples=4",
        "eval.max_new_tokens=4", "eval.risks.enabled=false", "eval.bootstrap_resamples=100",
    ])
    metrics = run_all(recipe)
    pairs = [json.loads(line) for line in (recipe.run_dir / "data" / "train.jsonl").open()]
    assert all(set(p) >= {"prompt", "chosen", "rejected"} and p["chosen"] != p["rejected"] for p in pairs)
    assert (recipe.run_dir / "model" / "adapter_config.json").is_file()
    assert metrics["train"]["steps"] == 2 and math.isfinite(metrics["train"]["final_loss"])
    for name in ("base", "tuned"):
        figures = metrics["eval"][name]["preference"]
        assert figures["pairs"] == 4 and 0 <= figures["accuracy"] <= 1
        assert "exact_match" in metrics["eval"][name]  # the usual metrics, against the chosen answer
    assert metrics["eval"]["split"]["examples"] == 4
    report = (recipe.run_dir / "report.md").read_text(encoding="utf-8")
    assert "## Preference pairs" in report and "preference accuracy" in report


def test_completion_logps_are_the_sum_of_next_token_log_probs(tiny_model_dir: Path) -> None:
    from ayar.data.templates import set_template
    from ayar.models.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    set_template(tokenizer, "alpaca")
    model = load_model(str(tiny_model_dir)).eval()
    prompt, answer = [{"role": "user", "content": "Add 2 and 3."}], [{"role": "assistant", "content": "5"}]
    short, long = completion_logps(model, tokenizer, [prompt, prompt], [answer, [{"role": "assistant",
                                                                                   "content": "5 and more"}]])
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + answer, tokenize=False)
    p_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
    expected = sum(float(logps[t - 1, ids[0, t]]) for t in range(len(p_ids), ids.shape[1]))
    assert abs(short - expected) < 1e-3  # padded in a batch with a longer answer, same figure as alone


def test_instruction_records_and_win_rate() -> None:
    records = instruction_records([{"id": "1", "prompt": "p", "chosen": "a", "rejected": "b"},
                                   {"prompt": "q", "completion": "c", "label": False},
                                   {"prompt": [{"role": "user", "content": "r"}], "completion": "d", "label": True}])
    assert records == [{"id": "1", "instruction": "p", "output": "a"},
                       {"messages": [{"role": "user", "content": "r"}, {"role": "assistant", "content": "d"}]}]
    assert judge_win_rate([5, 5, 7, math.nan], [6, 5, 3, 9]) == {"judged": 3, "wins": 1, "ties": 1, "losses": 1,
                                                                 "win_rate": 0.5}


def test_the_report_shows_the_judge_win_rate() -> None:
    from ayar.eval.report_render import Para, Table
    from ayar.eval.report_sections import judge_blocks

    score = {"mean_score": 6.0, "scored": 3, "failed": 0, "unparsable": 0, "model": "judge"}
    blocks = judge_blocks({"base": score, "tuned": score, "win_rate": judge_win_rate([5, 5, 7], [6, 5, 3])})
    table = next(b for b in blocks if isinstance(b, Table))
    assert [row[0] for row in table.rows] == ["base", "tuned"]
    assert any(isinstance(b, Para) and "Win rate of tuned over base: 0.5" in b.text for b in blocks)
