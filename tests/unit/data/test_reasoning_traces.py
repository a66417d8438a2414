"""Reasoning traces: read in every shape into one form, rendered by the template, learned, masked or dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ayar.data.chat import RecordError
from ayar.data.shapes import check_shape, map_texts, record_texts
from ayar.data.templates import (
    CHATML,
    messages_for_template,
    reasoning_style,
    record_to_messages,
    render_conversation,
    render_prompt,
    set_template,
)
from ayar.data.tokenize import IGNORE_INDEX, tokenize_chat
from ayar.errors import UsageError
from ayar.models.load import load_tokenizer
from ayar.recipe import load_recipe
from ayar.train.tasks import encode_causal_lm, reasoning_trained, tokenize_split
from reasoning_templates import QWEN3_STYLE

# DeepSeek-R1's way: the content after </think> only, so reasoning never reaches the text.
STRIPS_REASONING = (
    "{%- for m in messages %}{%- set content = m.content %}"
    "{%- if '</think>' in content %}{%- set content = content.split('</think>')[-1] %}{%- endif %}"
    "{{- '<|im_start|>' + m.role + '\\n' + content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
REASONING, ANSWER = "Onlar 3, birler 4: otuz dört.", "34"
USER = {"role": "user", "content": "Write 34 in words, then as digits."}
END = "<|im_end|><|endoftext|>"  # the turn's end, then the eos training adds after a turn that has none


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    """The tiny model's tokenizer with ChatML's and the think block's tokens added, as Qwen3's has."""
    tok = load_tokenizer(str(tiny_model_dir))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.add_tokens(["<think>", "</think>"])
    return tok


def with_template(tokenizer: Any, template: str) -> Any:
    tokenizer.chat_template = template
    return tokenizer


def recipe(*overrides: str) -> Any:
    return load_recipe(None, ["model.name_or_path=x", "data.format=messages", "data.max_length=512", *overrides])


def record(**assistant: Any) -> dict[str, Any]:
    return {"messages": [USER, {"role": "assistant", **assistant}]}


def learned_text(tokenizer: Any, encoded: dict[str, list[int]]) -> str:
    """The text of the positions that have labels."""
    return tokenizer.decode([t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
                             if label != IGNORE_INDEX])


# ---------------------------------------------------------------- one internal form


@pytest.mark.parametrize("source", [
    record(content=ANSWER, reasoning_content=REASONING),
    record(content=ANSWER, reasoning=f"\n{REASONING}\n"),
    record(content=f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"),
    {"conversations": [{"from": "human", "value": USER["content"]},
                       {"from": "gpt", "value": f"<think>{REASONING}</think>{ANSWER}"}]},
    {"instruction": USER["content"], "output": f"  <think>\n{REASONING}</think>\n{ANSWER}"},
])
def test_every_shape_of_reasoning_becomes_the_reasoning_content_field(source: dict[str, Any]) -> None:
    assert record_to_messages(source)[-1] == {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}


@pytest.mark.parametrize("content", [f"{ANSWER} <think>{REASONING}</think>", "<think>\n\n</think>\n\n34", ANSWER])
def test_content_without_a_leading_non_empty_think_block_stays_as_written(content: str) -> None:
    assert record_to_messages(record(content=content))[-1] == {"role": "assistant", "content": content}


def test_prepare_keeps_reasoning_in_the_internal_form_and_cleans_it_like_text() -> None:
    checked = check_shape(record(content=f"<think>{REASONING}</think>{ANSWER}"), "messages")
    assert checked["messages"][-1] == {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}
    assert record_texts(checked, "messages") == [USER["content"], ANSWER, REASONING]
    map_texts(checked, "messages", str.upper)
    assert checked["messages"][-1]["reasoning_content"] == REASONING.upper()
    assert record_to_messages(checked)[-1]["reasoning_content"] == REASONING.upper()  # read back from the field
    plain = check_shape(record(content=ANSWER), "messages")
    assert record_texts(plain, "messages") == [USER["content"], ANSWER] and "reasoning_content" not in \
        plain["messages"][-1]
    with pytest.raises(RecordError, match=r"messages\[1\]\.reasoning_content must be a string"):
        check_shape(record(content=ANSWER, reasoning_content=["no"]), "messages")


# ---------------------------------------------------------------- templates


def test_the_template_decides_how_reasoning_is_rendered(tokenizer: Any) -> None:
    messages = record_to_messages(record(content=ANSWER, reasoning_content=REASONING))
    assert reasoning_style(with_template(tokenizer, QWEN3_STYLE)) == "field"
    assert render_conversation(tokenizer, messages_for_template(tokenizer, messages, "learn")).endswith(
        f"<|im_start|>assistant\n<think>\n{REASONING}\n</think>\n\n{ANSWER}<|im_end|>\n")
    assert reasoning_style(with_template(tokenizer, CHATML)) == "inline"  # ChatML knows no reasoning field
    assert render_conversation(tokenizer, messages_for_template(tokenizer, messages, "learn")).endswith(
        f"<|im_start|>assistant\n<think>\n{REASONING}\n</think>\n\n{ANSWER}<|im_end|>\n")
    assert REASONING not in render_conversation(tokenizer, messages_for_template(tokenizer, messages, "drop"))
    assert reasoning_style(with_template(tokenizer, STRIPS_REASONING)) is None
    with pytest.raises(UsageError, match="drops the reasoning"):
        messages_for_template(tokenizer, messages, "learn")
    assert messages_for_template(tokenizer, messages, "drop")[-1] == {"role": "assistant", "content": ANSWER}


def test_enable_thinking_is_the_saved_templates_default_and_a_call_still_overrides_it(tokenizer: Any) -> None:
    set_template(tokenizer, QWEN3_STYLE, enable_thinking=False)
    assert render_prompt(tokenizer, [USER]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    on = tokenizer.apply_chat_template([USER], tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert on.endswith("<|im_start|>assistant\n")
    set_template(tokenizer, tokenizer.chat_template, enable_thinking=True)  # replaces the default, never stacks
    assert tokenizer.chat_template.count("set enable_thinking") == 1
    assert render_prompt(tokenizer, [USER]).endswith("<|im_start|>assistant\n")
    set_template(tokenizer, QWEN3_STYLE)
    assert tokenizer.chat_template == QWEN3_STYLE  # unset: the template as it is
    with pytest.raises(UsageError, match="never reads enable_thinking"):
        set_template(tokenizer, "chatml", enable_thinking=False)


# ---------------------------------------------------------------- the loss mask, by its effect


@pytest.mark.parametrize("template", [QWEN3_STYLE, CHATML])
def test_reasoning_is_learned_masked_or_dropped(tokenizer: Any, template: str) -> None:
    with_template(tokenizer, template)
    source = record(content=ANSWER, reasoning_content=REASONING)
    learn = encode_causal_lm(source, tokenizer, recipe("data.reasoning=learn"), None)
    mask = encode_causal_lm(source, tokenizer, recipe("data.reasoning=mask"), None)
    drop = encode_causal_lm(source, tokenizer, recipe("data.reasoning=drop"), None)
    think = f"<think>\n{REASONING}\n</think>\n\n"
    assert learned_text(tokenizer, learn) == f"{think}{ANSWER}{END}"
    assert tokenizer.decode(mask["input_ids"]) == tokenizer.decode(learn["input_ids"])  # the same text is read
    assert learned_text(tokenizer, mask) == f"{ANSWER}{END}"  # only the answer and its end are learned
    assert REASONING not in tokenizer.decode(drop["input_ids"])
    assert learned_text(tokenizer, drop) == (f"<think>\n\n</think>\n\n{ANSWER}{END}" if template == QWEN3_STYLE
                                             else f"{ANSWER}{END}")
    assert encode_causal_lm(source, tokenizer, recipe(), None) == learn  # learn is the default


def test_masked_reasoning_stays_unlearned_with_the_prompt_learned_and_in_every_turn(tokenizer: Any) -> None:
    with_template(tokenizer, CHATML)  # Qwen3's own drops past turns' reasoning; ChatML keeps every turn's inline
    source = {"messages": [USER, {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING},
                           {"role": "user", "content": "And 35?"}, {"role": "assistant", "content": "35"},
                           {"role": "user", "content": "And 36?"},
                           {"role": "assistant", "content": "<think>36 = 35 + 1</think>36"}]}
    mask = encode_causal_lm(source, tokenizer, recipe("data.reasoning=mask", "data.mask_prompt=false"), None)
    learned = learned_text(tokenizer, mask)
    assert USER["content"] in learned and "And 36?" in learned  # mask_prompt off: the prompt is learned
    assert REASONING not in learned and "36 = 35 + 1" not in learned and "<think>" not in learned
    assert REASONING in tokenizer.decode(mask["input_ids"]) and "36 = 35 + 1" in tokenizer.decode(mask["input_ids"])
    assert learned.count("<|im_end|>") == 6 and f"{ANSWER}{END}" in learned and learned.endswith(f"36{END}")


@pytest.mark.parametrize("mode", ["learn", "mask", "drop"])
def test_records_without_reasoning_tokenize_exactly_as_before(tokenizer: Any, mode: str) -> None:
    with_template(tokenizer, QWEN3_STYLE)
    source = {"messages": [USER, {"role": "assistant", "content": ANSWER}]}
    assert encode_causal_lm(source, tokenizer, recipe(f"data.reasoning={mode}"), None) == \
        tokenize_chat(tokenizer, source["messages"], 512, True)


def test_enable_thinking_false_drops_reasoning_and_trains_the_answer_after_the_empty_block(tokenizer: Any) -> None:
    with_template(tokenizer, QWEN3_STYLE)
    records = [record(content=ANSWER, reasoning_content=REASONING)]
    no_think = recipe("data.enable_thinking=false")
    rows = tokenize_split(records, tokenizer, no_think)
    assert "set enable_thinking = false" in tokenizer.chat_template  # saved with the tokenizer after training
    text = tokenizer.decode(rows[0]["input_ids"])
    assert REASONING not in text and text.endswith(f"<|im_start|>assistant\n<think>\n\n</think>\n\n34{END}")
    assert learned_text(tokenizer, rows[0]) == f"{ANSWER}{END}"  # the empty block is the prompt's
    assert not reasoning_trained(records, no_think) and reasoning_trained(records, recipe())
    assert not reasoning_trained([record(content=ANSWER)], recipe())
    with pytest.raises(UsageError, match="data.reasoning: mask trains reasoning traces"):
        recipe("data.enable_thinking=false", "data.reasoning=mask")


def test_a_tiny_model_trains_on_masked_reasoning_with_a_finite_loss_from_the_answer_alone(
        tokenizer: Any, tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    with_template(tokenizer, QWEN3_STYLE)
    row = encode_causal_lm(record(content=ANSWER, reasoning_content=REASONING), tokenizer,
                           recipe("data.reasoning=mask"), None)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tokenizer))
    ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
    loss = model(input_ids=ids, labels=labels).loss
    logits = model(input_ids=ids).logits[0, :-1]  # (seq - 1, vocab): each position predicts the next token
    targets = labels[0, 1:]
    learned = targets != IGNORE_INDEX
    by_hand = torch.nn.functional.cross_entropy(logits[learned], targets[learned])
    assert torch.isfinite(loss) and torch.allclose(loss, by_hand)
    assert int(learned.sum()) == len(tokenizer(f"{ANSWER}{END}", add_special_tokens=False)["input_ids"])


def test_a_training_run_learns_the_answers_after_masked_reasoning_and_saves_the_thinking_default(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    import json

    from ayar.data.prepare import PreparedData
    from ayar.data.synthetic import write_jsonl
    from ayar.train.engine import train

    records = [record(content=str(n), reasoning_content=f"{n} = {n - 1} + 1") for n in range(2, 10)]
    write_jsonl(records, tmp_path / "data" / "train.jsonl")
    write_jsonl([], tmp_path / "data" / "validation.jsonl")
    run = recipe(f"model.name_or_path={tiny_model_dir}", "data.reasoning=mask", "data.enable_thinking=true",
                 "data.max_length=96", "train.precision=fp32", "train.max_steps=2", "train.batch_size=4",
                 "train.logging_steps=1", "run.seed=0")
    run.data.template = QWEN3_STYLE
    result = train(run, str(tiny_model_dir), PreparedData(tmp_path / "data"), tmp_path / "run")
    saved = load_tokenizer(str(result.model_dir))
    assert saved.chat_template.startswith("{%- if enable_thinking is not defined %}{%- set enable_thinking = true")
    losses = [r["loss"] for r in json.loads((tmp_path / "run" / "train_history.json").read_text()) if "loss" in r]
    assert losses and all(0 < loss < 100 for loss in losses)


# ---------------------------------------------------------------- the loss-mask report and evaluation


def _prepared_with_reasoning(tokenizer: Any, tmp_path: Path, mode: str) -> dict[str, Any]:
    """The data card's loss-mask report of two reasoning records prepared under ``data.reasoning: mode``."""
    import json

    from ayar.data.prepare import prepare
    from ayar.recipe import DataConfig

    tokenizer.save_pretrained(tmp_path / "tok")
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(record(content=str(n), reasoning_content=f"{n} = {n - 1} + 1"))
                              for n in (12, 47)), encoding="utf-8")
    cfg = DataConfig.model_validate({"inputs": [{"path": str(path)}], "format": "messages", "save_arrow": False,
                                     "template": QWEN3_STYLE, "reasoning": mode, "dedup": {"near": False},
                                     "split": {"train": 1.0, "validation": 0.0, "test": 0.0}})
    return prepare(cfg, tmp_path / mode, seed=0, tokenizer=str(tmp_path / "tok")).card["loss_mask"]["roles"]


def test_the_loss_mask_report_counts_masked_reasoning_apart_and_unlearned(tokenizer: Any, tmp_path: Path) -> None:
    masked, learned = (_prepared_with_reasoning(tokenizer, tmp_path, mode) for mode in ("mask", "learn"))
    assert masked["reasoning"]["tokens"] > 0 and masked["reasoning"]["learned"] == 0
    assert masked["assistant"]["learned"] == masked["assistant"]["tokens"] > 0
    assert "reasoning" not in learned  # learned: the trace is part of the assistant's learned tokens
    assert learned["assistant"]["learned"] == masked["assistant"]["learned"] + masked["reasoning"]["tokens"]


def test_evaluation_scores_the_answer_after_the_think_block(tokenizer: Any) -> None:
    from ayar.eval.tasks import answers_and_reasoning

    with_template(tokenizer, QWEN3_STYLE)
    asked = [[USER]] * 3
    outputs = [f"<think>\n{REASONING}\n</think>\n\n{ANSWER}", ANSWER, "<think>cut off before the answer"]
    answers, traces = answers_and_reasoning(tokenizer, outputs, asked, [None] * 3)
    assert answers == [ANSWER, ANSWER, ""] and traces == [REASONING, None, "cut off before the answer"]
    opened = with_template(tokenizer, QWEN3_STYLE.replace(
        "{{- '<|im_start|>assistant\\n' }}{%- if enable", "{{- '<|im_start|>assistant\\n<think>\\n' }}{%- if enable"))
    assert render_prompt(opened, [USER]).endswith("<think>\n")  # the prompt opens the block: the answer starts in it
    assert answers_and_reasoning(opened, [f"{REASONING}\n</think>\n\n{ANSWER}"], [[USER]], [None]) == \
        ([ANSWER], [REASONING])


def test_evaluation_loss_counts_the_answer_alone_where_training_masked_the_reasoning(
        tokenizer: Any, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from ayar.eval.tasks import evaluate_causal_lm

    with_template(tokenizer, QWEN3_STYLE)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tokenizer))
    records = [record(content=ANSWER, reasoning_content=REASONING)]
    answer_tokens = len(tokenizer(f"{ANSWER}{END}", add_special_tokens=False)["input_ids"])
    scored = {mode: evaluate_causal_lm(model, tokenizer, records, ["p"], recipe(
        f"data.reasoning={mode}", "eval.max_new_tokens=2"))["summary"]["response_tokens"] for mode in ("mask", "learn")}
    assert scored["mask"] == answer_tokens < scored["learn"]
