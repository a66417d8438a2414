"""The whole prepare pipeline: planted duplicates, PII and broken lines; accounting; strict; splits; card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ayar.data.prepare import prepare, prepare_files
from ayar.data.split import SPLITS, assign_splits, split_records
from ayar.errors import UsageError
from ayar.recipe import DataConfig, SyntheticConfig


def _alpaca(i: int, **extra: object) -> dict:
    return {"id": f"r{i}", "instruction": f"Soru numarası {i}: bu cümleyi özetle lütfen.",
            "input": f"Uzun bir metin {i} burada duruyor ve özetlenmeyi bekliyor.", "output": f"Özet {i}.", **extra}


def _messy_file(tmp_path: Path) -> Path:
    lines = [json.dumps(_alpaca(i), ensure_ascii=False) for i in range(40)]
    lines.append(json.dumps(_alpaca(3), ensure_ascii=False))  # exact duplicate of r3
    lines.append(json.dumps({**_alpaca(5), "id": "r5b", "lang": "tr",
                             "instruction": "SORU NUMARASI 5: Bu cümleyi  özetle lütfen."},
                            ensure_ascii=False))  # a duplicate after Turkish lower-casing and whitespace
    long_text = " ".join(f"kelime{i}" for i in range(60))
    lines.append(json.dumps({"id": "long1", "instruction": long_text, "output": "tamam"}))
    lines.append(json.dumps({"id": "long2", "instruction": long_text.replace("kelime30", "farklı"), "output": "tamam"}))
    lines.append(json.dumps(_alpaca(100, output="Bana ali@example.com adresinden veya 0532 123 45 67 numarasından "
                                                  "ulaşın; TCKN 10000000146."), ensure_ascii=False))
    lines.append(json.dumps(_alpaca(101, consent=False), ensure_ascii=False))
    lines.append(json.dumps(_alpaca(102), ensure_ascii=False))  # opted out by id
    lines.append(json.dumps({"id": "empty", "instruction": "Bir şey söyle.", "output": "   "}))
    lines.append('{"instruction": "kırık satır", "output": ')  # invalid JSON
    lines.append(json.dumps({"instruction": "cevapsız"}))  # missing field
    path = tmp_path / "messy.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "optout.txt").write_text("r102\n", encoding="utf-8")
    return path


def _config(path: Path, tmp_path: Path, **extra: object) -> DataConfig:
    return DataConfig.model_validate({"inputs": [{"path": str(path)}], "format": "alpaca",
                                      "consent": {"opt_out_file": str(tmp_path / "optout.txt")}, **extra})


def test_messy_alpaca_file_end_to_end(tmp_path: Path) -> None:
    path = _messy_file(tmp_path)
    out = tmp_path / "out"
    prepared = prepare(_config(path, tmp_path), out, seed=1)
    card = json.loads((out / "data_card.json").read_text(encoding="utf-8"))

    assert card["records_in"] == 50
    assert card["rejected"] == 2
    assert card["removed"] == {"empty_response": 1, "exact_duplicate": 2, "near_duplicate": 1,
                               "no_consent": 1, "opted_out": 1}
    assert card["records_in"] == card["kept"] + card["removed_total"] + card["rejected"]
    assert card["accounting_balanced"]
    assert sum(prepared.counts.values()) == card["kept"] == 42

    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["line"], r["reason"].split(":")[0]) for r in rejects] == [(49, "invalid JSON"),
                                                                         (50, "missing field 'output'")]
    assert all(r["source"] == str(path) for r in rejects)
    removed = [json.loads(x) for x in (out / "removed.jsonl").read_text(encoding="utf-8").splitlines()]
    by_reason = {r["reason"]: r for r in removed}
    assert "record" not in by_reason["no_consent"] and by_reason["opted_out"]["id"] == "r102"
    assert by_reason["near_duplicate"]["record"]["id"] == "long2"

    records = [r for split in SPLITS for r in prepared.read_split(split)]
    pii_record = next(r for r in records if r["id"] == "r100")
    assert pii_record["output"] == "Bana <EMAIL> adresinden veya <PHONE> numarasından ulaşın; TCKN <TCKN>."
    assert card["pii"] == {"EMAIL": 1, "PHONE": 1, "TCKN": 1}
    assert set(records[0]) >= {"id", "instruction", "input", "output"}
    for name in ("data_card.md", "length_hist.png", "arrow/train/dataset_info.json"):
        assert (out / name).is_file(), name
    assert "exact_duplicate" in (out / "data_card.md").read_text(encoding="utf-8")


def test_strict_stops_at_the_first_bad_line(tmp_path: Path) -> None:
    path = _messy_file(tmp_path)
    with pytest.raises(UsageError, match=r"messy.jsonl:49: invalid JSON"):
        prepare(_config(path, tmp_path, strict=True), tmp_path / "out", seed=1)


def test_missing_and_empty_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        prepare_files([tmp_path / "yok.jsonl"], "alpaca", tmp_path / "o")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UsageError, match="empty"):
        prepare_files([tmp_path / "empty.jsonl"], "alpaca", tmp_path / "o")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(UsageError, match="holds no records"):
        prepare_files([tmp_path / "blank.jsonl"], "alpaca", tmp_path / "o")
    with pytest.raises(UsageError, match="dedup.threshold"):
        prepare_files([tmp_path / "blank.jsonl"], "alpaca", tmp_path / "o", dedup={"threshold": 2})


def test_prepare_files_with_turkish_columns_and_weights(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps({"talimat": f"Görev {i} için uzun bir açıklama yaz.", "yanıt": f"Cevap {i}"},
                                      ensure_ascii=False) for i in range(200)), encoding="utf-8")
    b.write_text("\n".join(json.dumps({"instruction": f"Task {i}: write a long explanation here.", "output": f"A{i}"})
                           for i in range(200)), encoding="utf-8")
    cfg = DataConfig.model_validate({"inputs": [{"path": str(a), "weight": 0.5}, {"path": str(b), "weight": 2.0}],
                                     "save_arrow": False})
    prepared = prepare(cfg, tmp_path / "out", seed=3)
    card = prepared.card
    sampled = card["removed"]["sampled_out"]
    assert 70 < sampled < 130  # about half of source a
    assert card["sources"][0]["sampled_out"] == sampled
    train = prepared.read_split("train")
    from_b = [r for r in train if r["instruction"].startswith("Task")]
    assert card["train_repeats"] == len(from_b) // 2 and len(from_b) % 2 == 0
    assert any(r["instruction"].startswith("Görev") for r in train)
    assert card["records_in"] == card["kept"] + card["removed_total"] + card["rejected"]

    prepared = prepare_files([a], "alpaca", tmp_path / "plain", save_arrow=False)
    assert sum(prepared.counts.values()) == 200


def test_classification_is_stratified_by_label(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    rows = ["text,label"] + [f"bu örnek metin numarası {i} oldukça uzun,{'pos' if i % 4 else 'neg'}"
                             for i in range(400)]
    path.write_text("\n".join(rows), encoding="utf-8")
    prepared = prepare_files([path], "classification", tmp_path / "out", save_arrow=False)
    for split, share in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        labels = [r["label"] for r in prepared.read_split(split)]
        assert labels.count("neg") == round(100 * share)


def test_quickstart_synthetic_has_no_train_test_overlap(tmp_path: Path) -> None:
    cfg = DataConfig(synthetic=SyntheticConfig(num_records=400), save_arrow=False)
    prepared = prepare(cfg, tmp_path / "out", seed=42)
    card = prepared.card
    assert card["records_in"] == 400 == card["kept"] + card["removed_total"] + card["rejected"]
    key = lambda r: (r["instruction"], r["input"], r["output"])  # noqa: E731
    train = {key(r) for r in prepared.read_split("train")}
    test = [key(r) for r in prepared.read_split("test")]
    assert test and not train.intersection(test)
    assert all({"id", "task", "lang"} <= set(r) for r in prepared.read_split("test"))


def test_token_statistics_with_the_target_tokenizer(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = DataConfig(synthetic=SyntheticConfig(num_records=50), save_arrow=False, max_length=12,
                     mask_prompt=False)  # every answer is cut off at 12 tokens: learn the prompts
    prepared = prepare(cfg, tmp_path / "out", seed=0, tokenizer=str(tiny_model_dir))
    tokens = prepared.card["tokens"]
    assert tokens["records_measured"] == prepared.counts["train"]
    assert 0 < tokens["p50"] <= tokens["max"]
    assert 0 < tokens["over_max_length"] <= tokens["records_measured"]


def test_num_proc_gives_the_same_result(tmp_path: Path) -> None:
    path = _messy_file(tmp_path)
    one = prepare(_config(path, tmp_path, save_arrow=False), tmp_path / "one", seed=1)
    two = prepare(_config(path, tmp_path, save_arrow=False, num_proc=2), tmp_path / "two", seed=1)
    for split in SPLITS:
        assert one.read_split(split) == two.read_split(split)
    assert one.card["removed"] == two.card["removed"]


def test_grouped_and_stratified_assignment() -> None:
    groups = [i // 7 for i in range(700)]
    assignment = assign_splits(700, (0.8, 0.1, 0.1), 0, groups=groups)
    split_of_group: dict[int, set[int]] = {}
    for g, s in zip(groups, assignment, strict=True):
        split_of_group.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in split_of_group.values())
    assert sorted(assignment.count(i) for i in range(3)) == [70, 70, 560]
    strata = ["a"] * 90 + ["b"] * 10
    assignment = assign_splits(100, (0.8, 0.1, 0.1), 0, strata=strata)
    assert [sum(1 for s, x in zip(strata, assignment, strict=True) if s == "b" and x == i) for i in range(3)] == [8, 1, 1]
    assert assign_splits(100, (0.8, 0.1, 0.1), 5) == assign_splits(100, (0.8, 0.1, 0.1), 5)
    assert assign_splits(100, (0.8, 0.1, 0.1), 5) != assign_splits(100, (0.8, 0.1, 0.1), 6)
    parts = split_records([{"i": i} for i in range(10)], (0.8, 0.1, 0.1), 0)
    assert sorted(r["i"] for p in parts.values() for r in p) == list(range(10))


def test_rejected_lone_surrogate_is_written_escaped(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    (tmp_path / "optout.txt").write_text("", encoding="utf-8")
    path.write_text('{"instruction": "a\\ud800", "output": "b"}\n' + json.dumps(_alpaca(1)) + "\n", encoding="utf-8")
    prepare(_config(path, tmp_path, save_arrow=False), tmp_path / "out", seed=0)
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["reason"].split(":")[0] for r in rejects] == ["invalid Unicode"]
    assert "\\ud800" in rejects[0]["raw"]


def test_card_lists_cleaning_steps_in_pipeline_order(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    (tmp_path / "optout.txt").write_text("", encoding="utf-8")
    records = [_alpaca(i, input=f"BaÅŸkent Ä°stanbul {i}", output=f"Özet {i}\x00  son") for i in range(3)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    card = prepare(_config(path, tmp_path, save_arrow=False), tmp_path / "out", seed=0).card
    changed = next(s for s in card["steps"] if s["step"] == "clean")["records_changed_by"]
    assert list(changed) == ["fix_mojibake", "strip_control", "normalize_whitespace"]
