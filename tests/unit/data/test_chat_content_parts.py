"""Content parts (OpenAI's ``text``, LLaMA-Factory v1's ``value``) and reject reasons that name what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ayar.data.chat import RecordError, content_text, normalize_message, normalize_messages, sharegpt_turn
from ayar.data.prepare import prepare_files


def v1_record(question: str, answer: str) -> dict[str, Any]:
    """A record in LLaMA-Factory's v1 data shape (their v1_sft_demo.jsonl): ``value`` parts, per-turn loss_weight."""
    return {"messages": [
        {"role": "user", "content": [{"type": "text", "value": question}], "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "text", "value": answer}], "loss_weight": 1.0}]}


def test_value_parts_are_read_like_text_parts() -> None:
    parts = [{"type": "text", "value": "Merhaba, "}, {"type": "text", "text": "dünya"}, "!"]
    assert content_text(parts, "messages[0].content") == "Merhaba, dünya!"


def test_v1_record_keeps_its_text_and_learn_flags() -> None:
    messages = normalize_messages(v1_record("Sen kimsin?", "Ben bir yapay zekâ asistanıyım.")["messages"])
    assert messages == [{"role": "user", "content": "Sen kimsin?"},
                        {"role": "assistant", "content": "Ben bir yapay zekâ asistanıyım.", "train": True}]


@pytest.mark.parametrize(("part", "reason"), [
    ({"type": "text"}, "messages[0].content[0] is a 'text' part without a string 'text' (or 'value'); "
                       "it has no other key"),
    ({"type": "text", "text": 3}, "messages[0].content[0] is a 'text' part without a string 'text' (or 'value'); "
                                  "it has 'text' (int)"),
    ({"type": "text", "content": "x"}, "messages[0].content[0] is a 'text' part without a string 'text' "
                                       "(or 'value'); it has 'content' (str)"),
    ({"type": "image_url", "image_url": {"url": "x.png"}},
     "messages[0].content[0] is a 'image_url' part: only text parts are read (no images or audio yet)"),
    ({"text": "x"}, "messages[0].content[0] has no 'type': a text part is {\"type\": \"text\", \"text\": \"...\"}"),
    (7, "messages[0].content[0] must be a string or a text part object, got int"),
])
def test_a_bad_part_is_rejected_with_what_is_wrong(part: Any, reason: str) -> None:
    with pytest.raises(RecordError) as caught:
        content_text([part], "messages[0].content")
    assert str(caught.value) == reason


@pytest.mark.parametrize(("read", "turn", "reason"), [
    (normalize_message, {"role": "user"}, "m.content is missing: a user turn needs a string or a list of text parts"),
    (normalize_message, {"role": "assistant", "content": None},
     "m.content is missing and the turn has no tool_calls: an assistant turn needs one of them"),
    (normalize_message, {"role": "assistant", "content": "", "tool_calls": {"name": "f"}},
     "m.tool_calls must be a list, got dict"),
    (sharegpt_turn, {"from": "gpt"}, "m.value must be a string, got nothing"),
    (sharegpt_turn, {"from": "gpt", "value": ["a"]}, "m.value must be a string, got list"),
])
def test_a_bad_turn_is_rejected_with_what_is_wrong(read: Any, turn: dict[str, Any], reason: str) -> None:
    with pytest.raises(RecordError) as caught:
        read(turn, "m")
    assert str(caught.value) == reason


def test_v1_file_is_kept_and_the_accounting_balances(tmp_path: Path) -> None:
    rows = [v1_record(f"Soru {n}?", f"Yanıt {n}.") for n in range(6)]
    rows.append(v1_record("Soru 0?", "Yanıt 0."))  # line 7: an exact duplicate of line 1
    no_text = v1_record("Soru 7?", "Yanıt 7.")
    no_text["messages"][1]["content"] = [{"type": "text"}]  # line 8
    image = v1_record("Soru 8?", "Yanıt 8.")
    image["messages"][0]["content"].append({"type": "image", "value": "x.png"})  # line 9
    path = tmp_path / "v1_sft.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [*rows, no_text, image]),
                    encoding="utf-8")
    card = prepare_files([path], "messages", tmp_path / "out", dedup={"near": False}, save_arrow=False,
                         split={"train": 1.0, "validation": 0.0, "test": 0.0}).card
    assert (card["records_in"], card["kept"], card["removed_total"], card["rejected"]) == (9, 6, 1, 2)
    assert card["records_in"] == card["kept"] + card["removed_total"] + card["rejected"]
    assert card["accounting_balanced"]
    reasons = {json.loads(line)["line"]: json.loads(line)["reason"]
               for line in (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()}
    assert reasons == {
        8: "messages[1].content[0] is a 'text' part without a string 'text' (or 'value'); it has no other key",
        9: "messages[0].content[1] is a 'image' part: only text parts are read (no images or audio yet)"}
    train = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["messages"][0]["content"] for r in train) == [f"Soru {n}?" for n in range(6)]
    assert all(r["messages"][1]["train"] is True for r in train)
