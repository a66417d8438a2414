"""The promotion check (v1 against v2) and where an iterated run keeps its result."""

from __future__ import annotations

from ayar.iterate import promotion_check, read_promotion
from ayar.recipe import IterateConfig

EVALS = {"base": {"exact_match": 0.5}, "tuned": {"exact_match": 0.5}}


def test_promotion_wants_the_users_verdict_not_only_the_log_probability_proxy() -> None:
    proxy_rose = {"v1": {"preference": {"accuracy": 0.3}, "answers_right": 52},
                  "v2": {"preference": {"accuracy": 0.6}, "answers_right": 52}}
    tied = promotion_check(EVALS, {**proxy_rose, "answers": {"requests": 80, "v2_wins": 9, "v2_losses": 9}},
                           IterateConfig())
    assert tied["decision"] == "block" and "held-out requests" in tied["reasons"][0]
    won = promotion_check(EVALS, {**proxy_rose, "answers": {"requests": 80, "v2_wins": 10, "v2_losses": 9}},
                          IterateConfig())
    assert won["decision"] == "promote" and won["reasons"] == ["every check within its bound"]
    assert [c["check"] for c in won["checks"]] == ["test exact_match", "held-out requests: answers the user wanted",
                                                   "held-out feedback preference accuracy"]


def test_a_test_drop_a_worse_risk_or_a_failed_forgetting_gate_blocks() -> None:
    feedback = {"v1": {"correction_logp_mean": -9.0}, "v2": {"correction_logp_mean": -4.0}}
    assert promotion_check(EVALS, feedback, IterateConfig())["decision"] == "promote"
    dropped = {"base": {"exact_match": 0.5}, "tuned": {"exact_match": 0.45}}
    assert promotion_check(dropped, feedback, IterateConfig())["reasons"][0].startswith("test exact_match")
    risky = {**EVALS, "risks": {"base": {"security": {"leak_rate": 0.0}}, "tuned": {"security": {"leak_rate": 0.1}}}}
    assert promotion_check(risky, feedback, IterateConfig())["reasons"][0].startswith("security leak rate")
    forgetting = {"text": {"en": {"base_perplexity": 10.0, "tuned_perplexity": 30.0}},
                  "gate": {"passed": False, "reasons": ["en general-text perplexity rose"]}}
    blocked = promotion_check(EVALS, feedback, IterateConfig(), forgetting)
    assert blocked["decision"] == "block" and blocked["checks"][-1]["bound"] == "en general-text perplexity rose"
    assert promotion_check(EVALS, {}, IterateConfig())["decision"] == "block"  # no held-out feedback: no gain shown


def test_the_result_is_read_under_its_key_and_under_the_key_older_runs_wrote() -> None:
    result = {"decision": "promote", "reasons": ["every check within its bound"], "checks": []}
    assert read_promotion({"iterate": {}, "promotion": result}) == result
    assert read_promotion({"iterate": {}, "gate": result}) == result  # a run folder from before the rename
    assert read_promotion({"iterate": {}, "gate": {"decision": "block"}, "promotion": result}) == result
    assert read_promotion({"iterate": {}}) is None
