"""Readers for every input type, shape checks, and rejects with line numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ayar.data.load import Reject, check_shape, iter_records, map_texts, record_texts, response_texts
from ayar.errors import UsageError


def _split(items: list) -> tuple[list[tuple[int, dict]], list[Reject]]:
    good = [(line, r) for line, r in items if not isinstance(r, Reject)]
    bad = [r for _, r in items if isinstance(r, Reject)]
    return good, bad


def test_jsonl_rejects_carry_line_numbers_and_reasons(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    lines = [
        json.dumps({"instruction": "a", "output": "b"}).encode(),  # 1 ok
        b'{"instruction": "a", "output": ',  # 2 invalid JSON
        b"",  # 3 blank: not a record
        b'{"instruction": "a", "output": "\xff\xfe"}',  # 4 invalid UTF-8
        json.dumps({"instruction": "a"}).encode(),  # 5 missing output
        json.dumps({"instruction": "a", "output": 7}).encode(),  # 6 wrong type
        b"{}",  # 7 empty record
        b"[1, 2]",  # 8 not an object
        json.dumps({"instruction": "c", "input": None, "output": "d"}).encode(),  # 9 ok (null input)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    good, bad = _split(list(iter_records(str(path), "alpaca")))
    assert [line for line, _ in good] == [1, 9]
    assert [(r.line, r.reason.split(":")[0].split(" at")[0]) for r in bad] == [
        (2, "invalid JSON"), (4, "invalid UTF-8"), (5, "missing field 'output'"),
        (6, "field 'output' must be a string, got int"), (7, "empty record"), (8, "expected an object, got list"),
    ]
    assert all(r.source == str(path) for r in bad)
    assert bad[0].reason.endswith("(column 32)")  # where the line ends, not "line 2 column 1"


def test_csv_with_turkish_columns_and_a_short_row(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("talimat,yanıt,kaynak\nTopla.,5,x\nYaz.,iki\n", encoding="utf-8")
    good, bad = _split(list(iter_records(str(path), "alpaca")))
    assert good == [(2, {"instruction": "Topla.", "output": "5", "kaynak": "x"})]
    assert (bad[0].line, bad[0].reason) == (3, "row has 2 fields, header has 3")


def test_column_mapping_and_tsv(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("soru\tcevap\nNe?\tBu.\n", encoding="utf-8")
    good, _ = _split(list(iter_records(str(path), "seq2seq", {"source": "soru", "target": "cevap"})))
    assert good == [(2, {"source": "Ne?", "target": "Bu."})]


def test_json_array_parquet_and_arrow_folder(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    rows = [{"text": "iyi", "label": "pos"}, {"text": "kötü", "label": 0}]
    (tmp_path / "a.json").write_text(json.dumps(rows), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist([{"text": "iyi", "label": "pos"}]), tmp_path / "a.parquet")
    Dataset.from_list([{"text": "iyi", "label": "pos"}]).save_to_disk(str(tmp_path / "saved"))
    for name in ("a.json", "a.parquet", "saved"):
        good, bad = _split(list(iter_records(str(tmp_path / name), "classification")))
        assert good[0] == (1, {"text": "iyi", "label": "pos"}) and not bad


def test_text_folder_one_record_per_paragraph(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text("Birinci paragraf\nsürüyor.\n\n\nİkinci.\n", encoding="utf-8")
    (tmp_path / "t" / "b.txt").write_text("Üçüncü.", encoding="utf-8")
    good, _ = _split(list(iter_records(str(tmp_path / "t"), "text")))
    assert [(line, r["text"].strip()) for line, r in good] == [
        (1, "Birinci paragraf\nsürüyor."), (5, "İkinci."), (1, "Üçüncü.")
    ]
    with pytest.raises(UsageError, match="plain text"):
        list(iter_records(str(tmp_path / "t"), "alpaca"))


def test_missing_empty_and_unknown_inputs(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        list(iter_records(str(tmp_path / "nope.jsonl"), "alpaca"))
    (tmp_path / "e.jsonl").write_bytes(b"")
    with pytest.raises(UsageError, match="empty"):
        list(iter_records(str(tmp_path / "e.jsonl"), "alpaca"))
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(UsageError, match="unknown file type"):
        list(iter_records(str(tmp_path / "x.xml"), "alpaca"))
    (tmp_path / "bad.json").write_text('[{"a": 1},')
    with pytest.raises(UsageError, match=r"bad.json:1: invalid JSON"):
        list(iter_records(str(tmp_path / "bad.json"), "alpaca"))


def test_messages_and_sharegpt_shapes(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    records = [
        {"messages": [{"role": "system", "content": "Kısa yaz."}, {"role": "user", "content": "Selam"},
                      {"role": "assistant", "content": "Merhaba"}]},
        {"messages": [{"role": "bot", "content": "x"}]},
        {"messages": []},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    good, bad = _split(list(iter_records(str(path), "messages")))
    record = good[0][1]
    assert record_texts(record, "messages") == ["Kısa yaz.", "Selam", "Merhaba"]
    assert response_texts(record, "messages") == ["Merhaba"]
    map_texts(record, "messages", str.upper)
    assert record["messages"][2]["content"] == "MERHABA"
    assert [r.line for r in bad] == [2, 3] and "role" in bad[0].reason

    sg = {"conversations": [{"from": "human", "value": "Ne?"}, {"from": "gpt", "value": "Bu."}]}
    path.write_text(json.dumps(sg), encoding="utf-8")
    ((_, record),) = list(iter_records(str(path), "sharegpt"))
    assert response_texts(record, "sharegpt") == ["Bu."]


def test_preference_texts_and_responses() -> None:
    record = check_shape({"prompt": "p", "chosen": "c", "rejected": "r"}, "preference")
    assert record == {"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "c"}],
                      "rejected": [{"role": "assistant", "content": "r"}]}
    assert record_texts(record, "preference") == ["p", "c", "r"]
    assert response_texts(record, "preference") == ["c", "r"]
    assert response_texts({"text": "t", "label": 1}, "classification") is None
