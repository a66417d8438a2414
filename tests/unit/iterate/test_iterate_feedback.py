"""Feedback rows -> corrections, pairs and ratings; deduplication against v1's splits; the held-out share."""

from __future__ import annotations

from typing import Any

from ayar.iterate import (
    deduplicate,
    feedback_records,
    held_out_targets,
    hold_out,
    next_run_name,
    replay_records,
)


def _rows() -> list[dict[str, Any]]:
    base = {"correction_chars": None, "preferred_id": None, "preferred": None}
    return [
        {**base, "feedback_id": 1, "completion_id": "a", "rating": "down", "correction": "good", "prompt": "p1",
         "completion": "bad", "correction_chars": 4},
        {**base, "feedback_id": 2, "completion_id": "b", "rating": "up", "correction": None, "prompt": "p2",
         "completion": "fine"},
        {**base, "feedback_id": 3, "completion_id": "c", "rating": None, "correction": None, "prompt": "p3",
         "completion": "meh", "preferred_id": "d", "preferred": "better", "preferred_prompt": "p3"},
        {**base, "feedback_id": 5, "completion_id": "f", "rating": None, "correction": None, "prompt": "p3",
         "completion": "meh", "preferred_id": "g", "preferred": "off topic", "preferred_prompt": "p9"},
        {**base, "feedback_id": 4, "completion_id": "e", "rating": "down", "correction": None, "prompt": None,
         "completion": None, "correction_chars": 9},
    ]


def test_replay_is_a_seeded_share_of_v1s_training_rows() -> None:
    v1_train = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(50)]
    replayed = replay_records(v1_train, feedback_count=10, share=0.5, seed=3)
    assert len(replayed) == 10 and all(r in v1_train for r in replayed)  # half of the 20 rows v2 trains on
    assert len({r["instruction"] for r in replayed}) == 10 and replayed == replay_records(v1_train, 10, 0.5, 3)
    assert replayed != replay_records(v1_train, 10, 0.5, 4)
    assert len(replay_records(v1_train, feedback_count=30, share=0.75, seed=3)) == 50  # capped at what v1 has
    assert replay_records(v1_train, feedback_count=10, share=0.0, seed=3) == []


def test_feedback_rules_corrections_pairs_ratings() -> None:
    records, skipped = feedback_records(_rows())
    assert records["sft"] == [{"feedback_id": 1, "completion_id": "a", "instruction": "p1", "output": "good"}]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in records["pairs"]] == [("p1", "good", "bad"),
                                                                                     ("p3", "better", "meh")]
    assert [(r["prompt"], r["completion"], r["label"]) for r in records["kto"]] == [("p2", "fine", True)]
    assert skipped["no_text"] == 1
    assert skipped["preferred_other_prompt"] == 1  # a 'preferred' answer to another prompt is no pair


def test_a_correction_of_an_answer_rated_up_or_equal_to_it_is_no_pair() -> None:
    base = {"feedback_id": 1, "completion_id": "a", "correction_chars": 6, "preferred_id": None, "preferred": None,
            "prompt": "p1", "completion": "Fine."}
    records, _ = feedback_records([{**base, "rating": "up", "correction": "Better"},
                                   {**base, "rating": "down", "correction": "  fine. "}])
    assert [r["output"] for r in records["sft"]] == ["Better", "  fine. "] and records["pairs"] == []


def test_deduplication_and_hold_out() -> None:
    records, _ = feedback_records(_rows() + _rows()[:1])
    train = [{"instruction": "p1", "output": "good"}]  # already trained: the SFT record goes, the pair stays
    test = [{"prompt": "p3", "chosen": "x", "rejected": "y"}]
    kept, dropped = deduplicate(records, train, test)
    assert dropped == {"test_prompt": 1, "in_training_data": 2, "repeated": 1}
    assert [r["prompt"] for r in kept["pairs"]] == ["p1"] and kept["sft"] == []
    first, held = hold_out({"pairs": [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(10)]}, 0.3, 0)
    assert len(held["pairs"]) == 3 and len(first["pairs"]) == 7
    assert hold_out(first, 0.3, 0) == hold_out(first, 0.3, 0)  # seeded: reruns agree
    assert next_run_name("shop") == "shop-v2" and next_run_name("shop-v2") == "shop-v3"


def test_held_out_targets_are_corrections_and_answers_rated_up() -> None:
    held = {"sft": [{"instruction": "p1", "output": "good"}], "pairs": [],
            "kto": [{"prompt": "p2", "completion": "fine", "label": True},
                    {"prompt": "p3", "completion": "bad", "label": False}]}
    assert held_out_targets(held) == [("p1", "good"), ("p2", "fine")]  # a down-rating names no wanted answer
