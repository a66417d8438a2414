"""Batch inference: one output line per input line, malformed lines reported, resumable after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ayar.errors import UsageError
from ayar.serve import batch as batch_module
from ayar.serve.batch import run_batch

GOOD = [
    {"id": "a", "prompt": "def main"},
    {"id": "b", "messages": [{"role": "user", "content": "Merhaba"}]},
    {"instruction": "Add the numbers.", "input": "2 + 3"},
    {"id": 7, "prompt": "import os"},
    {"id": "e", "prompt": "class A"},
]


def _write_input(path: Path) -> Path:
    lines = [json.dumps(GOOD[0]), json.dumps(GOOD[1]), "{not json", json.dumps(GOOD[2]), "",
             json.dumps({"id": "x", "text": "no prompt field"}), json.dumps(GOOD[3]), json.dumps(GOOD[4]),
             json.dumps({"id": "a", "prompt": "duplicate id"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_input_line_gets_one_output_line(chat_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    summary = run_batch(chat_model_dir, _write_input(tmp_path / "in.jsonl"), out, batch_size=2, max_new_tokens=4)
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["a", "b", "line-3", "line-4", "x", "7", "e", "a"]
    assert summary.lines_in == 8 == summary.answered + summary.rejected and summary.skipped == 0
    errors = {r["line"]: r["error"] for r in rows if "error" in r}
    assert set(errors) == {3, 6, 9} and "duplicate id" in errors[9] and "missing field" in errors[6]
    assert all(isinstance(r["output"], str) for r in rows if "error" not in r)
    rejects = _rows(Path(summary.rejects))
    assert [(r["line"], r["source"]) for r in rejects] == [(n, str(tmp_path / "in.jsonl")) for n in (3, 6, 9)]


def test_output_matches_single_prompt_generation(chat_model_dir: Path, tmp_path: Path) -> None:
    """Batching with left padding gives the same greedy text as generating each prompt alone."""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in GOOD), encoding="utf-8")
    run_batch(chat_model_dir, source, tmp_path / "batched.jsonl", batch_size=5, max_new_tokens=6)
    run_batch(chat_model_dir, source, tmp_path / "single.jsonl", batch_size=1, max_new_tokens=6)
    assert _rows(tmp_path / "batched.jsonl") == _rows(tmp_path / "single.jsonl")


def test_rerun_after_a_crash_resumes_without_repeats(chat_model_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in GOOD), encoding="utf-8")
    import ayar.eval.generate as gen

    real, prompts_seen = gen.generate, []

    def crash_on_second_batch(model, tokenizer, prompts, cfg, seed=0):
        prompts_seen.append(len(prompts))
        if len(prompts_seen) == 2:
            raise RuntimeError("simulated crash")
        return real(model, tokenizer, prompts, cfg, seed)

    monkeypatch.setattr(gen, "generate", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_batch(chat_model_dir, source, out, batch_size=2, max_new_tokens=4)
    assert [r["id"] for r in _rows(out)] == ["a", "b"]
    with out.open("a", encoding="utf-8") as f:
        f.write('{"id": "line-3", "outp')  # a line torn by the crash
    monkeypatch.setattr(gen, "generate", real)
    summary = run_batch(chat_model_dir, source, out, batch_size=2, max_new_tokens=4)
    assert summary.skipped == 2 and summary.answered == 3
    assert [r["id"] for r in _rows(out)] == ["a", "b", "line-3", "7", "e"]
    assert run_batch(chat_model_dir, source, out, batch_size=2).answered == 0  # all done: nothing regenerated


def test_bad_paths_and_over_long_prompts(chat_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        run_batch(chat_model_dir, tmp_path / "missing.jsonl", tmp_path / "o.jsonl")
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": 1, "prompt": "word " * 600}) + "\n", encoding="utf-8")
    with pytest.raises(UsageError, match="differ"):
        run_batch(chat_model_dir, source, source)
    summary = run_batch(chat_model_dir, source, tmp_path / "o.jsonl", max_new_tokens=4)
    assert summary.rejected == 1 and "over the context window of 512" in _rows(tmp_path / "o.jsonl")[0]["error"]
    assert batch_module.BatchSummary(1, 0, 1, 0, "o", "r").as_dict()["rejected"] == 1


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ASK = {"role": "user", "content": "Ankara'da hava nasıl?"}
CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Ankara"}}}]}


@pytest.fixture(scope="module")
def tools_model_dir(chat_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny chat model with the chatml_tools template (the model's weights do not matter here)."""
    import shutil

    from ayar.data.templates import set_template
    from ayar.models.load import load_tokenizer

    out = tmp_path_factory.mktemp("tools_model") / "model"
    shutil.copytree(chat_model_dir, out)
    tokenizer = load_tokenizer(str(out))
    set_template(tokenizer, "chatml_tools")
    tokenizer.save_pretrained(out)
    return out


def _prompts_sent(monkeypatch: pytest.MonkeyPatch, answer: str | None = None) -> list[str]:
    """Record the prompts batch sends to generation (and answer each with ``answer`` when given)."""
    import ayar.eval.generate as gen

    real, seen = gen.generate, []

    def spy(model, tokenizer, prompts, cfg, seed=0):
        seen.extend(prompts)
        return [answer] * len(prompts) if answer is not None else real(model, tokenizer, prompts, cfg, seed)

    monkeypatch.setattr(gen, "generate", spy)
    return seen


def test_tool_records_render_their_tools_as_training_does(tools_model_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The prompt of a tools record is the prompt training learned the call after: the tools' schemas included."""
    from ayar.data.tokenize import IGNORE_INDEX, tokenize_chat
    from ayar.models.load import load_tokenizer

    tokenizer = load_tokenizer(str(tools_model_dir))
    trained = tokenize_chat(tokenizer, [ASK, CALL], 512, tools=TOOLS)
    first_learned = next(i for i, label in enumerate(trained["labels"]) if label != IGNORE_INDEX)
    prompt_ids = trained["input_ids"][:first_learned]
    source = tmp_path / "in.jsonl"
    after_call = [ASK, CALL, {"role": "tool", "content": '{"derece": 12}'}]
    source.write_text(json.dumps({"id": "ask", "tools": TOOLS, "messages": [ASK]}) + "\n"
                      + json.dumps({"id": "after", "tools": json.dumps(TOOLS), "messages": after_call}) + "\n",
                      encoding="utf-8")
    seen = _prompts_sent(monkeypatch)
    summary = run_batch(tools_model_dir, source, tmp_path / "out.jsonl", max_new_tokens=3)
    assert summary.answered == 2 and summary.rejected == 0
    assert tokenizer(seen[0], add_special_tokens=False)["input_ids"] == prompt_ids
    assert '"name": "get_weather"' in seen[0] and "<tools>" in seen[0]
    # a conversation whose last assistant turn is a call (empty content) keeps that call
    assert "<tool_call>" in seen[1] and seen[1].endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_answers_to_tool_records_carry_the_parsed_calls(tools_model_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "t", "tools": TOOLS, "messages": [ASK]}) + "\n"
                      + json.dumps({"id": "p", "messages": [ASK]}) + "\n", encoding="utf-8")
    _prompts_sent(monkeypatch, answer='<tool_call>\n{"name": "get_weather", "arguments": {"city": "Ankara"}}\n'
                                      '</tool_call>')
    run_batch(tools_model_dir, source, tmp_path / "out.jsonl", max_new_tokens=3)
    rows = {r["id"]: r for r in _rows(tmp_path / "out.jsonl")}
    assert rows["t"]["tool_calls"] == [CALL["tool_calls"][0]] and rows["t"]["content"] == ""
    assert "tool_calls" not in rows["p"] and rows["p"]["output"].startswith("<tool_call>")


def test_tool_records_need_a_template_with_tool_support(chat_model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "t", "tools": TOOLS, "messages": [ASK]}) + "\n"
                      + json.dumps({"id": "bad", "tools": [{"description": "no name"}], "messages": [ASK]}) + "\n",
                      encoding="utf-8")
    summary = run_batch(chat_model_dir, source, tmp_path / "out.jsonl", max_new_tokens=3)
    errors = {r["id"]: r["error"] for r in _rows(tmp_path / "out.jsonl")}
    assert summary.rejected == 2 and "no tool support" in errors["t"] and "Train with data.template" in errors["t"]
    assert "tools[0] must be a function schema" in errors["bad"]
