"""Error analysis on hand-made rows."""

from __future__ import annotations

from ayar.eval.error_analysis import (
    analyze_errors,
    confused_pairs,
    length_buckets,
    repeated_ngram_ratio,
    repeated_outputs,
)


def _rows() -> list[dict]:
    return [
        {"id": "1", "prompt": "p1", "output": "42", "lang": "tr", "label": "add", "nll": 0.5, "chrf": 100.0,
         "input_tokens": 5},
        {"id": "2", "prompt": "p2", "output": "x", "lang": "en", "label": "add", "nll": 3.0, "chrf": 0.0,
         "input_tokens": 10},
        {"id": "3", "prompt": "p3", "output": "x", "lang": "en", "label": "date", "nll": 2.0, "chrf": 20.0,
         "input_tokens": 20},
        {"id": "4", "prompt": "p4", "output": "x", "lang": "tr", "label": "date", "nll": 1.0, "chrf": 50.0,
         "input_tokens": 40},
    ]


def test_worst_examples_and_groups() -> None:
    result = analyze_errors(_rows(), "chrf", k=2)
    assert [r["id"] for r in result["worst_by_loss"]] == ["2", "3"]
    assert [r["id"] for r in result["worst_by_metric"]] == ["2", "3"]
    assert result["by_label"]["add"] == {"count": 2, "chrf": 50.0, "nll": 1.75}
    assert result["by_language"]["en"]["chrf"] == 10.0
    assert result["confused_pairs"] == []


def test_groups_show_exact_match_where_rows_have_it() -> None:
    rows = [{**row, "exact_match": float(row["chrf"] == 100.0)} for row in _rows()]
    result = analyze_errors(rows, "chrf", k=2)
    assert result["by_label"]["add"]["exact_match"] == 0.5
    assert result["by_label"]["date"]["exact_match"] == 0.0
    assert "exact_match" not in analyze_errors(_rows(), "chrf")["by_label"]["add"]


def test_length_buckets_cover_every_row() -> None:
    buckets = length_buckets(_rows(), "chrf", buckets=2)
    assert sum(b["count"] for b in buckets) == 4
    assert buckets[0]["chrf"] == 50.0  # the two shortest inputs: 100 and 0


def test_confused_pairs_ranked() -> None:
    pairs = confused_pairs(["a", "a", "a", "b", "c"], ["b", "b", "a", "c", "c"])
    assert pairs[0] == {"true": "a", "predicted": "b", "count": 2}
    assert {"true": "b", "predicted": "c", "count": 1} in pairs


def test_repeated_outputs_found() -> None:
    result = repeated_outputs(_rows(), min_count=3)
    assert result["same_output_for_many_prompts"] == [{"output": "x", "prompts": 3}]
    assert result["distinct_outputs"] == 2
    assert repeated_ngram_ratio("a b c a b c a b c") > 0.5
    assert repeated_ngram_ratio("bir iki üç dört beş") == 0.0
    looping = repeated_outputs([{"output": "la la la la la la la", "prompt": "p"}])
    assert looping["looping_outputs"] == 1
