"""Text and classification metrics: sacrebleu, rouge-score and scikit-learn do the scoring.

What is written here by hand is only what those libraries lack: exact match with configurable
normalisation, and a ROUGE tokenizer that keeps Turkish letters (rouge-score's default one
replaces every non-ASCII letter with a space, so ``"çalışıyorum"`` would fall apart).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from rouge_score import rouge_scorer
from rouge_score.tokenizers import Tokenizer
from sacrebleu.metrics import BLEU, CHRF

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_WORD = re.compile(r"\w+", re.UNICODE)
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def turkish_lower(text: str) -> str:
    """Lower-case with Turkish rules: I→ı and İ→i (str.lower() gives i and i + combining dot)."""
    return text.replace("I", "ı").replace("İ", "i").lower()


def language_lower(text: str, lang: str | None) -> str:
    """Lower-case for the text's language; without one, İ still becomes a plain i."""
    if lang == "tr":
        return turkish_lower(text)
    return text.replace("İ", "i").lower()


def normalize_answer(text: str, steps: Iterable[str], lang: str | None = None) -> str:
    """Apply exact-match normalisation steps in a fixed order."""
    steps = set(steps)
    if "strip_punct" in steps:
        text = _PUNCT.sub("", text)
    if "lower" in steps:
        text = language_lower(text, lang)
    if "collapse_whitespace" in steps:
        text = " ".join(text.split())
    if "strip" in steps:
        text = text.strip()
    return text


def exact_match(
    predictions: list[str],
    references: list[str],
    normalize: Iterable[str] = ("strip",),
    langs: Sequence[str | None] | None = None,
) -> list[float]:
    """1.0 where the normalised prediction equals the normalised reference, else 0.0."""
    steps = list(normalize)
    langs = langs or [None] * len(predictions)
    return [float(normalize_answer(p, steps, lang) == normalize_answer(r, steps, lang))
            for p, r, lang in zip(predictions, references, langs, strict=True)]


class UnicodeWordTokenizer(Tokenizer):
    """ROUGE tokenizer: lower-cased Unicode words, so Turkish (and any non-ASCII) letters survive."""

    def __init__(self, lang: str | None = None) -> None:
        self.lang = lang

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(language_lower(text, self.lang))


@lru_cache(maxsize=8)
def _rouge_scorer(lang: str | None) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=UnicodeWordTokenizer(lang))


def rouge(predictions: list[str], references: list[str],
          langs: Sequence[str | None] | None = None) -> dict[str, list[float]]:
    """Per-example ROUGE-1/2/L F1 (0..1) with the Unicode tokenizer."""
    langs = langs or [None] * len(predictions)
    scores: dict[str, list[float]] = {name: [] for name in ROUGE_TYPES}
    for pred, ref, lang in zip(predictions, references, langs, strict=True):
        result = _rouge_scorer(lang).score(ref, pred)
        for name in ROUGE_TYPES:
            scores[name].append(result[name].fmeasure)
    return scores


def corpus_bleu_chrf(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, 0..100)."""
    if not predictions:
        return {"bleu": 0.0, "chrf": 0.0}
    refs = [list(references)]
    return {"bleu": BLEU().corpus_score(predictions, refs).score,
            "chrf": CHRF().corpus_score(predictions, refs).score}


def sentence_chrf(predictions: list[str], references: list[str]) -> list[float]:
    """Per-example chrF (0..100), the per-example score the paired bootstrap resamples."""
    chrf = CHRF()
    return [chrf.sentence_score(p, [r]).score for p, r in zip(predictions, references, strict=True)]


def text_metrics(
    predictions: list[str],
    references: list[str],
    normalize: Iterable[str] = ("strip",),
    langs: Sequence[str | None] | None = None,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Corpus figures and per-example scores for generated text against references."""
    per_example: dict[str, list[float]] = {
        "exact_match": exact_match(predictions, references, normalize, langs),
        "chrf": sentence_chrf(predictions, references),
        **rouge(predictions, references, langs),
    }
    corpus: dict[str, float] = dict(corpus_bleu_chrf(predictions, references))
    n = len(predictions)
    corpus["exact_match"] = sum(per_example["exact_match"]) / n if n else 0.0
    for name in ROUGE_TYPES:
        corpus[name] = sum(per_example[name]) / n if n else 0.0
    return corpus, per_example


def classification_metrics(y_true: Sequence[Any], y_pred: Sequence[Any],
                           labels: Sequence[Any] | None = None) -> dict[str, Any]:
    """Accuracy, macro and micro precision/recall/F1 and the confusion matrix (scikit-learn)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(labels) if labels is not None else sorted(set(y_true) | set(y_pred), key=str)
    result: dict[str, Any] = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for average in ("macro", "micro"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                     zero_division=0)
        result |= {f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)}
    result["labels"] = [str(label) for label in labels]
    result["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return result
