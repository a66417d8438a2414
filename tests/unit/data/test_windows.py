"""Long documents become token windows at paragraph/sentence boundaries; nothing is dropped whole."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ayar.data.prepare import prepare
from ayar.data.tokenize import tokenize_text
from ayar.data.windows import Windower, ends_document
from ayar.models.load import load_tokenizer
from ayar.recipe import DataConfig

WORDS = ("yolcu", "köy", "dağ", "ırmak", "orman", "şehir", "gece", "sabah", "yağmur", "kar", "rüzgâr",
         "deniz", "gemi", "liman", "kitap", "mektup", "kapı", "pencere", "bahçe", "çocuk", "öğretmen",
         "pazar", "ekmek", "çay", "kahve", "yol", "köprü", "tren", "istasyon", "saat", "ay", "yıldız",
         "güneş", "bulut", "kuş", "balık", "ağaç", "çiçek", "taş", "duvar", "sokak", "çarşı", "han", "kervan",
         "at", "araba", "tarla", "buğday", "değirmen", "su", "kuyu")


def _book(paragraphs: int, seed: int = 0) -> str:
    """Paragraphs of four sentences of seeded random words (varied, so quality filters and dedup keep them)."""
    rng = random.Random(seed)
    out = []
    for p in range(paragraphs):
        sentences = [f"Bölüm {seed}-{p}.{s} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))) + "."
                     for s in range(4)]
        out.append(" ".join(sentences))
    return "\n\n".join(out) + "\n"


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    return load_tokenizer(str(tiny_model_dir))


def _count(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def test_windows_fit_and_cut_at_paragraphs(tok) -> None:
    text = _book(12)
    paragraphs = [p.strip() for p in text.split("\n\n")]
    longest = max(_count(tok, p) for p in paragraphs)
    size = 2 * longest + 8  # two paragraphs fit, three do not
    windows = Windower(size, 0, tok).split(text)
    assert 4 <= len(windows) <= 8
    assert all(_count(tok, w) <= size for w in windows)
    assert all(w.split("\n\n")[0] in paragraphs and w.split("\n\n")[-1] in paragraphs for w in windows)
    assert " ".join(windows).split() == text.split()  # nothing lost, nothing repeated
    cut = Windower(longest // 2, 0, tok).split(text)  # paragraphs longer than a window: cut at sentence ends
    assert all(w.endswith(".") and w.startswith("Bölüm") for w in cut)
    assert " ".join(cut).split() == text.split()


def test_overlap_and_long_sentences(tok) -> None:
    text = _book(8)
    windows = Windower(150, 60, tok).split(text)
    shared = [a.split("\n\n")[-1] for a in windows[:-1]]
    assert sum(b.startswith(s[-40:]) or s[-40:] in b for s, b in zip(shared, windows[1:], strict=True)) > 0
    no_ends = "kelime " * 500  # no paragraph or sentence boundary: token cuts
    pieces = Windower(64, 8, tok).split(no_ends)
    assert len(pieces) > 5 and all(_count(tok, p) <= 64 for p in pieces)
    with pytest.raises(ValueError, match="overlap"):
        Windower(64, 64, tok)


def test_without_a_tokenizer_windows_are_estimated() -> None:
    windows = Windower(100, 0, None).split(_book(10))
    assert len(windows) > 2 and all(len(w.split()) * 1.5 <= 100 for w in windows)


def test_txt_document_is_windowed_not_dropped(tmp_path: Path, tiny_model_dir: Path, tok) -> None:
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text(_book(30, 1), encoding="utf-8")
    (folder / "b.txt").write_text("Kısa bir not.\n", encoding="utf-8")  # short: one window
    (folder / "c.txt").write_text(_book(15, 3), encoding="utf-8")
    cfg = DataConfig.model_validate({"inputs": [{"path": str(folder)}], "format": "text", "max_length": 128,
                                     "filters": {"max_chars": 100_000}, "save_arrow": False,
                                     "long_text": {"overlap_tokens": 16},
                                     "split": {"train": 0.34, "validation": 0.33, "test": 0.33}})
    prepared = prepare(cfg, tmp_path / "out", seed=0, tokenizer=str(tiny_model_dir))
    card = prepared.card
    assert card["records_in"] == 3 and card["kept"] == 3 and card["accounting_balanced"]
    windows = card["windows"]
    assert windows["documents"] == 3 and windows["documents_split"] == 2
    per_doc = {Path(d["doc"]).name: d["windows"] for d in windows["per_document"]}
    assert per_doc["b.txt"] == 1 and per_doc["a.txt"] > per_doc["c.txt"] > 1
    assert sum(prepared.counts.values()) == windows["windows"] > 3
    rows = {split: prepared.read_split(split) for split in ("train", "validation", "test")}
    docs = {split: {r.get("window", {}).get("doc", "whole") for r in split_rows} for split, split_rows in rows.items()}
    assert not docs["train"] & docs["validation"] and not docs["train"] & docs["test"]  # a document stays in one split
    for split_rows in rows.values():
        for row in split_rows:
            encoded = tokenize_text(tok, row["text"], 128, add_eos=ends_document(row))
            assert len(encoded["input_ids"]) <= 128
            assert (encoded["input_ids"][-1] == tok.eos_token_id) == ends_document(row)
    steps = {s["step"]: s for s in card["steps"]}
    assert steps["window"]["out"] == windows["windows"] == steps["split"]["in"]
    assert "## Long documents (windows)" in (tmp_path / "out" / "data_card.md").read_text(encoding="utf-8")


def test_long_jsonl_text_beyond_max_chars_is_split_unless_the_recipe_limits_it(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": _book(n, n)}, ensure_ascii=False) for n in (40, 3)),
                    encoding="utf-8")
    base = {"inputs": [{"path": str(path)}], "format": "text", "save_arrow": False, "max_length": 256,
            "split": {"train": 1.0, "validation": 0.0, "test": 0.0}, "dedup": {"near": False}}
    split = prepare(DataConfig.model_validate({**base, "filters": {"min_chars": 1}}), tmp_path / "a", seed=0)
    assert split.card["kept"] == 2 and split.card["removed_total"] == 0
    assert split.card["windows"]["documents_split"] == 1 and "no tokenizer" in split.card["windows"]["measured_with"]
    limited = prepare(DataConfig.model_validate({**base, "filters": {"max_chars": 5_000}}), tmp_path / "b", seed=0)
    assert limited.card["removed"] == {"too_long": 1}
    whole = prepare(DataConfig.model_validate({**base, "long_text": {"split": False}}), tmp_path / "c", seed=0)
    assert whole.counts["train"] == 2 and whole.card["windows"] is None
