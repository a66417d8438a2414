"""Error analysis: where a model fails, grouped so a person can see a pattern.

The k worst examples by loss and by metric, buckets by input length, label and language, the most
confused label pairs, and repeated outputs (the same answer to different prompts, or an answer
that loops on itself).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import numpy as np

SHOWN_FIELDS = ("id", "prompt", "reference", "output", "lang", "label", "nll", "input_tokens")


def _mean(values: list[float]) -> float:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return float(sum(clean) / len(clean)) if clean else math.nan


def _brief(row: dict[str, Any], metric: str) -> dict[str, Any]:
    shown = {k: row[k] for k in SHOWN_FIELDS if k in row}
    if metric in row:
        shown[metric] = row[metric]
    return shown


def worst_examples(rows: list[dict[str, Any]], key: str, k: int, highest: bool) -> list[dict[str, Any]]:
    """The k rows with the highest (loss) or lowest (score) value of ``key``."""
    scored = [r for r in rows if isinstance(r.get(key), int | float) and not math.isnan(r[key])]
    scored.sort(key=lambda r: r[key], reverse=highest)
    return [_brief(r, key) for r in scored[:k]]


def group_stats(rows: list[dict[str, Any]], field: str, metric: str) -> dict[str, dict[str, float]]:
    """Count, mean metric, exact match (where scored) and mean loss of the rows grouped by one field's value."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get(field) is not None:
            groups[str(row[field])].append(row)
    keys = [metric] + (["exact_match"] if metric != "exact_match" and any("exact_match" in r for r in rows) else [])
    return {name: {"count": len(members), **{k: _mean([m.get(k, math.nan) for m in members]) for k in keys},
                   "nll": _mean([m.get("nll", math.nan) for m in members])}
            for name, members in sorted(groups.items())}


def length_buckets(rows: list[dict[str, Any]], metric: str, buckets: int = 4) -> list[dict[str, Any]]:
    """Rows split into input-length quantile buckets, with the metric and loss of each bucket."""
    lengths = np.array([r.get("input_tokens", 0) for r in rows], dtype=float)
    if not rows:
        return []
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, buckets + 1)))
    out = []
    for index, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = index == len(edges) - 2
        members = [r for r, n in zip(rows, lengths, strict=True) if low <= n < high or (last and n == high)]
        out.append({"min_tokens": int(low), "max_tokens": int(high), "count": len(members),
                    metric: _mean([m.get(metric, math.nan) for m in members]),
                    "nll": _mean([m.get("nll", math.nan) for m in members])})
    if len(edges) == 1:  # every input has the same length
        out.append({"min_tokens": int(edges[0]), "max_tokens": int(edges[0]), "count": len(rows),
                    metric: _mean([r.get(metric, math.nan) for r in rows]),
                    "nll": _mean([r.get("nll", math.nan) for r in rows])})
    return out


def confused_pairs(true: list[Any], pred: list[Any], top: int = 5) -> list[dict[str, Any]]:
    """The most frequent (true label, predicted label) mistakes."""
    counts = Counter((str(t), str(p)) for t, p in zip(true, pred, strict=True) if t != p)
    return [{"true": t, "predicted": p, "count": c} for (t, p), c in counts.most_common(top)]


def repeated_ngram_ratio(text: str, n: int = 3) -> float:
    """Share of word n-grams in a text that repeat an earlier one (0 for short texts)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def repeated_outputs(rows: list[dict[str, Any]], min_count: int = 3, loop_threshold: float = 0.5) -> dict:
    """Outputs given to several different prompts, and outputs that loop on themselves."""
    by_output: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        by_output[row.get("output", "").strip()].add(str(row.get("prompt", "")))
    frequent = [{"output": out, "prompts": len(prompts)} for out, prompts in by_output.items()
                if len(prompts) >= min_count]
    frequent.sort(key=lambda item: item["prompts"], reverse=True)
    loops = [{"id": r.get("id"), "output": r.get("output", ""),
              "repeated_ngram_ratio": repeated_ngram_ratio(r.get("output", ""))}
             for r in rows if repeated_ngram_ratio(r.get("output", "")) >= loop_threshold]
    distinct = len(by_output)
    return {"distinct_outputs": distinct, "distinct_share": distinct / len(rows) if rows else math.nan,
            "same_output_for_many_prompts": frequent[:10], "looping_outputs": len(loops), "loops": loops[:10]}


def analyze_errors(rows: list[dict[str, Any]], metric: str = "chrf", k: int = 5,
                   true_labels: list[Any] | None = None, pred_labels: list[Any] | None = None) -> dict[str, Any]:
    """The whole error analysis of one model's per-example rows."""
    return {
        "metric": metric,
        "worst_by_loss": worst_examples(rows, "nll", k, highest=True),
        "worst_by_metric": worst_examples(rows, metric, k, highest=False),
        "by_length": length_buckets(rows, metric),
        "by_label": group_stats(rows, "label", metric),
        "by_language": group_stats(rows, "lang", metric),
        "confused_pairs": confused_pairs(true_labels, pred_labels) if true_labels and pred_labels else [],
        "repeated_outputs": repeated_outputs(rows),
    }
