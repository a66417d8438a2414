"""Preference and KTO records in the shapes public datasets use, normalised to TRL's conversational shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ayar.data.load import check_shape
from ayar.data.prepare import prepare_files

USER = {"role": "user", "content": "Başkent neresi?"}


def _write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                    encoding="utf-8")
    return path


def _prepare(tmp_path: Path, rows: list, fmt: str):
    path = _write(tmp_path / f"{fmt}.jsonl", rows)
    return prepare_files([path], fmt, tmp_path / "out", dedup={"near": False}, save_arrow=False,
                         split={"train": 1.0, "validation": 0.0, "test": 0.0})


def _rejects(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]


def test_every_preference_shape_becomes_the_same_record() -> None:
    expected = {"prompt": [USER], "chosen": [{"role": "assistant", "content": "Ankara."}],
                "rejected": [{"role": "assistant", "content": "İstanbul."}]}
    shapes = [
        {"prompt": "Başkent neresi?", "chosen": "Ankara.", "rejected": "İstanbul."},  # strings
        {"conversations": [{"from": "human", "value": "Başkent neresi?"}],  # sharegpt (LLaMA-Factory dpo)
         "chosen": {"from": "gpt", "value": "Ankara."}, "rejected": {"from": "gpt", "value": "İstanbul."}},
        {"messages": [USER], "chosen": [{"role": "assistant", "content": "Ankara."}],  # OpenAI-style messages
         "rejected": {"role": "assistant", "content": "İstanbul."}},
        {"prompt": [USER], "chosen": [{"role": "assistant", "content": "Ankara."}],  # TRL conversational
         "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "İstanbul."}]}]},
        {"input": {"messages": [USER]}, "preferred_output": [{"role": "assistant", "content": "Ankara."}],
         "non_preferred_output": [{"role": "assistant", "content": "İstanbul."}]},  # OpenAI preference tuning
        {"chosen": [USER, {"role": "assistant", "content": "Ankara."}],  # implicit prompt (Anthropic HH)
         "rejected": [USER, {"role": "assistant", "content": "İstanbul."}]},
    ]
    for shape in shapes:
        assert check_shape(json.loads(json.dumps(shape)), "preference") == expected, shape


def test_system_column_and_other_fields_are_kept() -> None:
    record = check_shape({"id": 7, "system": "Kısa yanıtla.", "prompt": "Başkent neresi?", "chosen": "Ankara.",
                          "rejected": "İstanbul."}, "preference")
    assert record["id"] == 7 and "system" not in record
    assert record["prompt"] == [{"role": "system", "content": "Kısa yanıtla."}, USER]


def test_normalised_preference_record_is_what_trl_reads(tiny_model_dir: Path) -> None:
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    from ayar.data.templates import set_template
    from ayar.models.load import load_tokenizer

    record = check_shape({"conversations": [{"from": "human", "value": "Başkent neresi?"}],
                          "chosen": {"from": "gpt", "value": "Ankara."},
                          "rejected": {"from": "gpt", "value": "İstanbul."}}, "preference")
    assert is_conversational(record)
    tok = load_tokenizer(str(tiny_model_dir))
    set_template(tok, "chatml")
    text = maybe_apply_chat_template(record, tok)
    assert text["prompt"].endswith("<|im_start|>assistant\n") and text["chosen"].startswith("Ankara.")
    kto = check_shape({"messages": [USER, {"role": "assistant", "content": "Ankara."}], "label": True}, "kto")
    assert is_conversational(kto)
    assert maybe_apply_chat_template(kto, tok)["completion"].startswith("Ankara.")


def test_kto_shapes() -> None:
    completion = [{"role": "assistant", "content": "Ankara."}]
    for shape, label in [
        ({"prompt": "Başkent neresi?", "completion": "Ankara.", "label": True}, True),
        ({"prompt": [USER], "completion": completion, "label": "false"}, False),
        ({"messages": [USER, completion[0]], "label": 1}, True),
        ({"conversations": [{"from": "human", "value": "Başkent neresi?"}, {"from": "gpt", "value": "Ankara."}],
          "label": False}, False),
    ]:
        assert check_shape(shape, "kto") == {"prompt": [USER], "completion": completion, "label": label}


def test_preference_rejects_are_named_and_accounted(tmp_path: Path) -> None:
    rows = [{"prompt": f"Soru {i}?", "chosen": f"İyi yanıt {i}.", "rejected": f"Kötü yanıt {i}."} for i in range(6)]
    rows += [
        {"prompt": "Eksik?", "chosen": "Var."},  # line 7
        {"prompt": "Aynı?", "chosen": "Aynı.", "rejected": "Aynı."},  # line 8
        {"conversations": [{"from": "robot", "value": "?"}], "chosen": {"from": "gpt", "value": "a"},
         "rejected": {"from": "gpt", "value": "b"}},  # line 9
        {"prompt": "Resim?", "chosen": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {}}]}],
         "rejected": "Yok."},  # line 10
        "{not json",  # line 11
    ]
    prepared = _prepare(tmp_path, rows, "preference")
    card = prepared.card
    assert card["records_in"] == 11 and card["kept"] == 6 and card["rejected"] == 5 and card["accounting_balanced"]
    reasons = {r["line"]: r["reason"] for r in _rejects(tmp_path)}
    assert reasons[7] == "missing field 'rejected'"
    assert reasons[8] == "chosen and rejected are the same"
    assert "conversations[0].from must be one of" in reasons[9]
    assert "'image_url' part: only text parts are read" in reasons[10]
    assert reasons[11].startswith("invalid JSON")
    train = prepared.read_split("train")
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in train)
    assert train[0]["chosen"] == [{"role": "assistant", "content": "İyi yanıt 0."}]


def test_kto_rejects_a_label_that_is_not_boolean(tmp_path: Path) -> None:
    rows = [{"prompt": f"Soru {i}?", "completion": f"Yanıt {i}.", "label": i % 2 == 0} for i in range(4)]
    rows += [{"prompt": "Soru?", "completion": "Yanıt.", "label": "belki"}, {"prompt": "Soru?", "completion": "Y."}]
    prepared = _prepare(tmp_path, rows, "kto")
    assert (prepared.card["kept"], prepared.card["rejected"]) == (4, 2)
    reasons = [r["reason"] for r in _rejects(tmp_path)]
    assert reasons == ["field 'label' must be true or false, got 'belki'", "missing field 'label'"]
    assert [r["label"] for r in prepared.read_split("train")] == [True, False, True, False]


@pytest.mark.parametrize("fmt", ["preference", "kto"])
def test_pii_is_redacted_inside_conversations(tmp_path: Path, fmt: str) -> None:
    row = {"prompt": "Yaz: ali@example.com", "chosen": "Tamam ali@example.com", "rejected": "Hayır."} \
        if fmt == "preference" else {"prompt": "Yaz: ali@example.com", "completion": "Tamam.", "label": True}
    prepared = _prepare(tmp_path, [row], fmt)
    (record,) = prepared.read_split("train")
    assert record["prompt"][0]["content"] == "Yaz: <EMAIL>"
    assert prepared.card["pii"] == {"EMAIL": 2 if fmt == "preference" else 1}


def test_a_reject_shows_the_record_as_read(tmp_path: Path) -> None:
    _prepare(tmp_path, [{"prompt": "x", "completion": "y", "label": "belki"},
                        {"prompt": "Soru?", "completion": "Yanıt.", "label": True}], "kto")
    (reject,) = _rejects(tmp_path)
    assert json.loads(reject["raw"]) == {"prompt": "x", "completion": "y", "label": "belki"}
