"""The memorisation probe's training texts: every prepared-record format a recipe trains on is rendered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ayar.data.prepare import PreparedData, prepare_files
from ayar.eval.evaluate import _train_texts
from ayar.recipe import Recipe, load_recipe

SYSTEM = "Kısa yanıtla."


class JoiningTokenizer:
    """A chat template that writes each message as ``role: content`` on its own line."""

    def apply_chat_template(self, messages: list[dict[str, Any]], tokenize: bool = True) -> str:
        assert not tokenize
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _recipe(fmt: str, method: str) -> Recipe:
    return load_recipe(None, ["model.name_or_path=unused", f"data.format={fmt}", f"method.name={method}",
                              f"data.system_prompt={SYSTEM}"])


def _prepared(tmp_path: Path, rows: list[dict[str, Any]], fmt: str) -> PreparedData:
    """The rows through ``ayar prepare``: the records evaluation reads are the prepared ones."""
    raw = tmp_path / f"{fmt}.jsonl"
    raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    prepared = prepare_files([raw], fmt, tmp_path / "out", dedup={"near": False}, save_arrow=False,
                             split={"train": 1.0, "validation": 0.0, "test": 0.0})
    assert prepared.counts["train"] == len(rows)
    return prepared


def test_preference_pairs_render_prompt_and_chosen_answer(tmp_path: Path) -> None:
    rows = [{"prompt": "Başkent neresi?", "chosen": "Ankara.", "rejected": "İstanbul."},
            {"prompt": [{"role": "user", "content": "İki artı iki kaç eder?"}],  # conversational, as TRL writes it
             "chosen": [{"role": "assistant", "content": "Dört."}],
             "rejected": [{"role": "assistant", "content": "Beş."}]}]
    texts = _train_texts(_prepared(tmp_path, rows, "preference"), _recipe("preference", "dpo"), JoiningTokenizer())
    assert sorted(texts) == sorted([f"system: {SYSTEM}\nuser: Başkent neresi?\nassistant: Ankara.",
                                    f"system: {SYSTEM}\nuser: İki artı iki kaç eder?\nassistant: Dört."])


def test_kto_records_render_only_completions_labelled_good(tmp_path: Path) -> None:
    rows = [{"prompt": "Başkent neresi?", "completion": "Ankara.", "label": True},
            {"prompt": "En kalabalık şehir hangisi?", "completion": "Ankara.", "label": False}]
    texts = _train_texts(_prepared(tmp_path, rows, "kto"), _recipe("kto", "kto"), JoiningTokenizer())
    assert sorted(texts) == sorted([f"system: {SYSTEM}\nuser: Başkent neresi?\nassistant: Ankara.",
                                    f"system: {SYSTEM}\nuser: En kalabalık şehir hangisi?"])


def test_alpaca_records_render_as_before(tmp_path: Path) -> None:
    rows = [{"instruction": "Büyük harfe çevir.", "input": "ayar", "output": "AYAR"}]
    texts = _train_texts(_prepared(tmp_path, rows, "alpaca"), _recipe("alpaca", "lora"), JoiningTokenizer())
    assert texts == [f"system: {SYSTEM}\nuser: Büyük harfe çevir.\n\n### Input:\nayar\nassistant: AYAR"]
