"""The rehearsal set: the base model's own finished answers, never a forgetting probe, mixed into training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ayar.data.prepare import PreparedData
from ayar.data.rehearsal import BUILTIN_PROMPTS, similarity
from ayar.data.synthetic import generate_records, write_jsonl
from ayar.errors import UsageError
from ayar.eval import rehearsal
from ayar.eval.forgetting import GENERAL_QUESTIONS
from ayar.eval.generate import generate_chat
from ayar.eval.rehearsal import PROBE_SIMILARITY, build_rehearsal, probe_match
from ayar.models.load import load_for_inference
from ayar.recipe import load_recipe


def test_no_builtin_prompt_is_a_forgetting_probe_or_names_its_answer() -> None:
    for prompt in BUILTIN_PROMPTS:
        assert probe_match(prompt) is None, prompt
        for question in GENERAL_QUESTIONS:  # nor asks about a probe's subject (its answer in the prompt)
            assert similarity(prompt, question.prompt) < PROBE_SIMILARITY
            assert not question.is_answered_by(prompt), (prompt, question.prompt)


@pytest.mark.parametrize("question", GENERAL_QUESTIONS, ids=lambda q: q.prompt[:30])
def test_every_probe_and_a_rephrasing_of_it_is_recognised(question) -> None:
    assert probe_match(question.prompt) == question.prompt
    assert probe_match(question.prompt.rstrip("?") + ", please?") == question.prompt


def _prepared(tmp_path: Path, train: int) -> PreparedData:
    data = tmp_path / "data"
    write_jsonl(list(generate_records(train, seed=1, languages=["en"], tasks=["upper"]))[:train], data / "train.jsonl")
    write_jsonl([], data / "validation.jsonl")
    write_jsonl([], data / "test.jsonl")
    (data / "data_card.json").write_text(json.dumps({
        "accounting": "x", "steps": [], "sources": [], "pii": {}, "splits": {}, "lengths_chars": {},
        "removed_examples": {}, "reject_examples": [], "notes": []}), encoding="utf-8")
    return PreparedData(data, counts={"train": train})


def _recipe(tmp_path: Path, model_dir: Path, prompts: Path, *extra: str):
    return load_recipe(None, [f"model.name_or_path={model_dir}", f"run.output_dir={tmp_path}", "run.name=r",
                              "data.template=chatml", f"data.rehearsal.prompts={prompts}",
                              "data.rehearsal.max_new_tokens=8", "data.rehearsal.share=0.25", *extra])


def test_the_set_holds_the_answers_the_base_finished_and_no_probe(chatml_model_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"Say hi.": "Hi there!", "Tell me a long story about trains.": "Once upon a time " * 10}
    asked: list = []

    def base(model, tokenizer, conversations, cfg):
        asked.extend(conversations)
        assert cfg.max_new_tokens == 8 and not cfg.do_sample
        return [answers[c[-1]["content"]] for c in conversations]

    monkeypatch.setattr(rehearsal, "generate_chat", base)
    prompts = tmp_path / "prompts.jsonl"  # one answer written beforehand: used as it is, not generated again
    rows = [{"instruction": "Say hi."}, {"instruction": "What is the capital of France?"},
            {"instruction": "what's the capital of France", "output": "Paris."}, {"instruction": "Suggest a name for a boat.",
            "output": "Blue Wave."}, {"instruction": "Tell me a long story about trains."}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    prepared = _prepared(tmp_path, train=12)
    summary = build_rehearsal(_recipe(tmp_path, chatml_model_dir, prompts), str(chatml_model_dir), prepared)

    assert [c[-1]["content"] for c in asked] == ["Say hi.", "Tell me a long story about trains."]  # probes never asked
    records = prepared.read_rehearsal()
    pair = [{"instruction": "Say hi.", "output": "Hi there!", "task": "rehearsal"},
            {"instruction": "Suggest a name for a boat.", "output": "Blue Wave.", "task": "rehearsal"}]
    assert records == pair * 2  # 4 rows beside 12 task records: a quarter
    assert summary["probes_dropped"] == ["What is the capital of France?", "what's the capital of France"]
    assert (summary["asked"], summary["answered"], summary["unfinished_dropped"]) == (3, 2, 1)
    assert summary["answers_from_file"] == 1 and summary["share"] == 0.25
    card = json.loads((prepared.root / "data_card.json").read_text(encoding="utf-8"))
    assert card["rehearsal"]["records"] == 4
    assert "## Rehearsal" in (prepared.root / "data_card.md").read_text(encoding="utf-8")
    assert all(r.get("task") != "rehearsal" for r in prepared.read_split("train"))  # beside the splits, not in them


def test_smollm2_answers_builtin_prompts_in_its_own_words(smollm2_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe(None, [f"model.name_or_path={smollm2_dir}", f"run.output_dir={tmp_path}",
                                "data.rehearsal.max_prompts=4", "data.rehearsal.max_new_tokens=40"])
    prepared = _prepared(tmp_path, train=40)
    summary = build_rehearsal(recipe, str(smollm2_dir), prepared)
    model, tokenizer = load_for_inference(smollm2_dir)
    records = prepared.read_rehearsal()
    kept = list(dict.fromkeys(r["instruction"] for r in records))
    assert summary["answered"] == len(kept) >= 1 and set(kept) <= set(BUILTIN_PROMPTS[:4])
    greedy = generate_chat(model, tokenizer, [[{"role": "user", "content": p}] for p in kept],
                           recipe.eval.model_copy(update={"max_new_tokens": 40}))
    assert {r["instruction"]: r["output"] for r in records} == dict(zip(kept, [g.strip() for g in greedy], strict=True))


def test_only_probes_or_nothing_finished_is_a_usage_error(chatml_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is the capital of France?\n", encoding="utf-8")
    with pytest.raises(UsageError, match="repeats a forgetting probe"):
        build_rehearsal(_recipe(tmp_path, chatml_model_dir, prompts), str(chatml_model_dir), _prepared(tmp_path, 4))
    prompts.write_text("Tell me a long story about trains.\n", encoding="utf-8")
    with pytest.raises(UsageError, match="finished none"):
        build_rehearsal(_recipe(tmp_path, chatml_model_dir, prompts), str(chatml_model_dir), _prepared(tmp_path, 4))


def test_a_task_without_chat_records_refuses_rehearsal(chatml_model_dir: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, chatml_model_dir, tmp_path / "x.txt", "data.format=text")
    with pytest.raises(UsageError, match="chat data.format"):
        build_rehearsal(recipe, str(chatml_model_dir), _prepared(tmp_path, 4))
