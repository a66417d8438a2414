"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from ayar.eval.metrics import (
    UnicodeWordTokenizer,
    classification_metrics,
    corpus_bleu_chrf,
    exact_match,
    normalize_answer,
    rouge,
    sentence_chrf,
    text_metrics,
    turkish_lower,
)


def test_rouge_tokenizer_keeps_turkish_word_whole() -> None:
    assert UnicodeWordTokenizer().tokenize("çalışıyorum") == ["çalışıyorum"]
    assert UnicodeWordTokenizer("tr").tokenize("Ilık İzmir, çalışıyorum!") == ["ılık", "izmir", "çalışıyorum"]


def test_rouge_default_tokenizer_would_split_it() -> None:
    # the reason for our tokenizer: rouge-score's own drops non-ASCII letters
    from rouge_score.tokenizers import DefaultTokenizer

    assert DefaultTokenizer().tokenize("çalışıyorum") != ["çalışıyorum"]


def test_rouge_known_values() -> None:
    scores = rouge(["a b c"], ["a b d"])
    assert scores["rouge1"][0] == pytest.approx(2 / 3)
    assert scores["rouge2"][0] == pytest.approx(1 / 2)
    assert scores["rougeL"][0] == pytest.approx(2 / 3)


def test_rouge_matches_turkish_words_exactly() -> None:
    scores = rouge(["bugün çalışıyorum"], ["ben bugün çalışıyorum"], langs=["tr"])
    assert scores["rouge1"][0] == pytest.approx(2 * (1 * 2 / 3) / (1 + 2 / 3))


def test_bleu_known_value() -> None:
    # precisions 5/6, 3/5, 2/4, 1/3 and equal lengths (BP = 1): BLEU = (5/6*3/5*1/2*1/3) ** (1/4)
    result = corpus_bleu_chrf(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert result["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 1 / 2 * 1 / 3) ** 0.25, abs=1e-6)


def test_chrf_identical_and_disjoint() -> None:
    assert sentence_chrf(["merhaba dünya"], ["merhaba dünya"])[0] == pytest.approx(100)
    assert sentence_chrf(["xyz"], ["abc"])[0] == pytest.approx(0)
    assert corpus_bleu_chrf(["çiçek"], ["çiçek"])["chrf"] == pytest.approx(100)


def test_exact_match_normalization_steps() -> None:
    assert exact_match([" 42 "], ["42"], ["strip"]) == [1.0]
    assert exact_match(["Hello, World"], ["hello world"], ["strip"]) == [0.0]
    assert exact_match(["Hello, World"], ["hello world"], ["strip_punct", "lower"]) == [1.0]
    assert exact_match(["a   b"], ["a b"], ["collapse_whitespace"]) == [1.0]


def test_exact_match_turkish_lowercase() -> None:
    assert turkish_lower("IĞDIR İZMİR") == "ığdır izmir"
    assert exact_match(["ILIK"], ["ılık"], ["lower"], langs=["tr"]) == [1.0]
    assert exact_match(["ILIK"], ["ılık"], ["lower"], langs=["en"]) == [0.0]
    assert normalize_answer("İstanbul", ["lower"]) == "istanbul"


def test_text_metrics_corpus_is_mean_of_examples() -> None:
    corpus, per_example = text_metrics(["42", "abc"], ["42", "abd"])
    assert per_example["exact_match"] == [1.0, 0.0]
    assert corpus["exact_match"] == 0.5
    assert corpus["rouge1"] == pytest.approx(sum(per_example["rouge1"]) / 2)


def test_classification_known_values() -> None:
    result = classification_metrics(["a", "a", "b", "b", "c"], ["a", "b", "b", "b", "a"])
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["f1_micro"] == pytest.approx(0.6)
    # per-class F1: a 0.5, b 0.8, c 0.0
    assert result["f1_macro"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert result["precision_macro"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert result["recall_macro"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert result["labels"] == ["a", "b", "c"]
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert not math.isnan(result["precision_micro"])
