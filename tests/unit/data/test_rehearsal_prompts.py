"""Rehearsal prompts: reading them, and the arithmetic that mixes them into training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ayar.data.rehearsal import (
    BUILTIN_PROMPTS,
    PROMPTS_FILE,
    REHEARSAL_TASK,
    builtin_prompts,
    load_prompts,
    rehearsal_records,
    repeats_for_share,
    similarity,
)
from ayar.errors import UsageError
from ayar.recipe import RehearsalConfig, load_recipe


def test_builtin_prompts_are_unique_and_in_both_languages() -> None:
    prompts = load_prompts(RehearsalConfig())
    assert prompts == [(p, None) for p in BUILTIN_PROMPTS] and len(set(prompts)) == len(prompts) >= 60
    assert sum(any(c in p for c in "çğıöşüİ") for p, _ in prompts) >= 20  # Turkish ones too
    assert load_prompts(RehearsalConfig(max_prompts=5)) == prompts[:5]


def test_builtin_prompts_are_package_data_with_a_language_each() -> None:
    from importlib import resources

    import ayar.data.rehearsal

    rows = [json.loads(line) for line in resources.files("ayar.data").joinpath(PROMPTS_FILE)
            .read_text(encoding="utf-8").splitlines()]
    assert all(set(row) == {"lang", "topic", "instruction"} and row["instruction"].strip() for row in rows)
    assert builtin_prompts() == BUILTIN_PROMPTS == tuple(row["instruction"] for row in rows)
    assert ayar.data.rehearsal.BUILTIN_PROMPTS is builtin_prompts()  # read once
    by_lang = {lang: [r["instruction"] for r in rows if r["lang"] == lang] for lang in ("en", "tr")}
    assert len(by_lang["en"]) + len(by_lang["tr"]) == len(rows) and 0.5 < len(by_lang["en"]) / len(rows) < 0.7
    turkish = "çğıöşüİ"
    assert not any(c in p for p in by_lang["en"] for c in turkish)  # an English row holds no Turkish letter
    assert sum(any(c in p for c in turkish) for p in by_lang["tr"]) > 0.8 * len(by_lang["tr"])
    assert not hasattr(ayar.data.rehearsal, "NO_SUCH_NAME")


def test_prompts_from_txt_and_jsonl_files(tmp_path: Path) -> None:
    txt = tmp_path / "p.txt"
    txt.write_text("Say hello.\n\n  Say hello.  \nName a color.\n", encoding="utf-8")
    assert load_prompts(RehearsalConfig(prompts=str(txt))) == [("Say hello.", None), ("Name a color.", None)]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"instruction": "Say hello."}) + "\n"
                     + json.dumps({"instruction": "Name a color.", "output": " Red. "}) + "\n", encoding="utf-8")
    assert load_prompts(RehearsalConfig(prompts=str(jsonl))) == [("Say hello.", None), ("Name a color.", "Red.")]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.txt", None, "does not exist"),
    ("p.csv", "a,b\n", "must be .txt"),
    ("p.jsonl", "{not json\n", "p.jsonl:1: not JSON"),
    ("p.jsonl", '{"prompt": "x"}\n', "needs a string field 'instruction'"),
    ("p.jsonl", '{"instruction": "x", "output": 3}\n', "'output' must be a string"),
    ("p.txt", "\n  \n", "holds no instruction"),
])
def test_a_bad_prompt_file_is_a_usage_error(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError, match=message):
        load_prompts(RehearsalConfig(prompts=str(path)))


@pytest.mark.parametrize(("answered", "train", "share"), [(10, 1920, 0.15), (70, 1920, 0.2), (5, 12, 0.5)])
def test_repeats_reach_the_share(answered: int, train: int, share: float) -> None:
    repeats = repeats_for_share(answered, train, share)
    rows = answered * repeats
    assert rows / (rows + train) >= share - 1e-9  # enough rows...
    assert (rows - answered) / (rows - answered + train) < share  # ...and not a whole extra round more


def test_records_are_alpaca_rows_of_the_rehearsal_task() -> None:
    records = rehearsal_records(["a?", "b?"], ["A.", "B."], repeats=3)
    assert len(records) == 6 and records[:2] == records[2:4]
    assert records[0] == {"instruction": "a?", "output": "A.", "task": REHEARSAL_TASK}
    records[0]["output"] = "changed"
    assert records[2]["output"] == "A."  # copies, not one dict shared


def test_similarity_is_content_word_jaccard() -> None:
    assert similarity("What is the capital of France?", "what is the CAPITAL of france") == 1.0
    assert similarity("a cat", "the dog") == 0.0 and similarity("What is it?", "Is it?") == 1.0


def test_the_recipe_option_validates() -> None:
    model = "model.name_or_path=some/model"
    recipe = load_recipe(None, [model, "data.rehearsal.share=0.2"])
    assert recipe.data.rehearsal == RehearsalConfig(share=0.2)
    assert load_recipe(None, [model]).data.rehearsal is None
    with pytest.raises(UsageError, match="share"):
        load_recipe(None, [model, "data.rehearsal.share=1.5"])
