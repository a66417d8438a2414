"""The promotion check: v2 replaces v1 only inside the recipe's ``iterate`` bounds.

Its result is ``metrics.json`` -> ``promotion`` (``decision`` promote or block, ``reasons``, ``checks``,
``bounds``); run folders written before the rename hold it under ``gate``, which ``read_promotion`` still reads.
"""

from __future__ import annotations

from typing import Any

from ayar.recipe import IterateConfig

METRICS_KEY = "promotion"
OLD_METRICS_KEY = "gate"  # the same result in run folders of an ayar before the rename

RISK_RATES = (  # (name, path in the risk report, True when a higher value is worse)
    ("security leak rate", ("security", "leak_rate"), True),
    ("security refusal rate", ("security", "refusal_rate"), False),
    ("unsupported facts rate", ("hallucination", "unsupported_rate"), True),
    ("memorisation rate", ("privacy", "memorization", "rate"), True),
)


def dig(block: Any, path: tuple[str, ...]) -> float | None:
    """The number at ``path`` in nested dicts; None where a key is missing or the value is not a number."""
    for key in path:
        if not isinstance(block, dict) or key not in block:
            return None
        block = block[key]
    return float(block) if isinstance(block, int | float) and not isinstance(block, bool) else None


def fmt(value: float | None) -> str:
    """A figure to four significant digits; n/a for a missing one."""
    return "n/a" if value is None else f"{value:.4g}"


def _check(name: str, v1: float | None, v2: float | None, passed: bool, bound: str) -> dict[str, Any]:
    return {"check": name, "v1": v1, "v2": v2, "bound": bound, "passed": bool(passed)}


def _test_metric_check(evals: dict[str, Any], cfg: IterateConfig) -> dict[str, Any]:
    metric = cfg.gate_metric
    v1, v2 = (evals.get("base") or {}).get(metric), (evals.get("tuned") or {}).get(metric)
    if v1 is None or v2 is None:
        return _check(f"test {metric}", v1, v2, False, f"metric '{metric}' missing from the eval")
    return _check(f"test {metric}", v1, v2, v2 >= v1 - cfg.max_test_drop, f"v2 >= v1 - {cfg.max_test_drop:g}")


def _feedback_checks(feedback: dict[str, Any], cfg: IterateConfig) -> list[dict[str, Any]]:
    """The held-out feedback's checks: the user's verdict on greedy answers (v2 must win more held-out requests
    than it loses), then preference accuracy, or else the corrections' log-probability."""
    checks = []
    answers = feedback.get("answers")
    if answers:
        checks.append(_check("held-out requests: answers the user wanted", dig(feedback, ("v1", "answers_right")),
                             dig(feedback, ("v2", "answers_right")), answers["v2_wins"] > answers["v2_losses"],
                             f"v2 wins more than it loses (won {answers['v2_wins']}, lost {answers['v2_losses']} "
                             f"of {answers['requests']})"))
    p1, p2 = dig(feedback, ("v1", "preference", "accuracy")), dig(feedback, ("v2", "preference", "accuracy"))
    c1, c2 = dig(feedback, ("v1", "correction_logp_mean")), dig(feedback, ("v2", "correction_logp_mean"))
    if p1 is not None and p2 is not None:
        checks.append(_check("held-out feedback preference accuracy", p1, p2, p2 - p1 > cfg.min_feedback_gain,
                             f"v2 - v1 > {cfg.min_feedback_gain:g}"))
    elif c1 is not None and c2 is not None:
        checks.append(_check("held-out corrections log-probability", c1, c2, c2 > c1, "v2 > v1"))
    else:
        checks.append(_check("held-out feedback", None, None, False,
                             "no held-out feedback shows a gain (raise iterate.holdout)"))
    return checks


def _risk_checks(evals: dict[str, Any], cfg: IterateConfig) -> list[dict[str, Any]]:
    risks = evals.get("risks") or {}
    checks = []
    for name, path, higher_is_worse in RISK_RATES:
        r1, r2 = dig(risks.get("base"), path), dig(risks.get("tuned"), path)
        if r1 is None or r2 is None:
            continue
        worse = (r2 - r1) if higher_is_worse else (r1 - r2)
        checks.append(_check(name, r1, r2, worse <= cfg.max_risk_increase,
                             f"worsens by at most {cfg.max_risk_increase:g}"))
    return checks


def promotion_check(evals: dict[str, Any], feedback: dict[str, Any], cfg: IterateConfig,
                    forgetting: dict[str, Any] | None = None) -> dict[str, Any]:
    """Promote v2 only if it keeps the test metric, gains on held-out feedback, passes the forgetting report's
    own gate (``eval.forgetting``: general text and answers, v2 against v1) and worsens no risk rate."""
    checks = [_test_metric_check(evals, cfg), *_feedback_checks(feedback, cfg)]
    if forgetting is not None:
        text = forgetting["text"]["en"]
        checks.append(_check("forgetting: general-text perplexity and answers", text["base_perplexity"],
                             text["tuned_perplexity"], forgetting["gate"]["passed"],
                             "; ".join(forgetting["gate"]["reasons"]) or "within eval.forgetting"))
    checks += _risk_checks(evals, cfg)
    failed = [c for c in checks if not c["passed"]]
    reasons = ([f"{c['check']}: v1 {fmt(c['v1'])}, v2 {fmt(c['v2'])} (bound: {c['bound']})" for c in failed]
               or ["every check within its bound"])
    return {"decision": "block" if failed else "promote", "reasons": reasons, "checks": checks,
            "bounds": cfg.model_dump(mode="json")}


def read_promotion(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The promotion check of an iterated run's metrics.json, under its current key or the one it had before."""
    return metrics.get(METRICS_KEY) or metrics.get(OLD_METRICS_KEY)
