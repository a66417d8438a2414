"""`ayar iterate`: a served run plus its users' feedback becomes the next run (v2), checked for promotion
against v1.

1. The feedback in the request log (``POST /v1/feedback``; needs ``--log-text`` for the texts, read by
   ``ayar.serve.logging_db.read_feedback``) becomes data (``feedback``): a correction an SFT record; a
   down-rated answer with a correction, or an answer with a preferred alternative, a preference pair (the
   better answer chosen, the served one rejected); a rating alone a KTO record. Records that repeat the
   run's training data or each other are dropped, and so is any whose prompt is in the run's test split
   (no test leakage). A share of the prompts is held out.
2. The drift report over the same log says whether the traffic moved away from the training prompts.
3. v2 trains starting from v1 (``versions``: a LoRA v1 is merged into its base first, so v1 is v2's
   reference model) with the recipe's method when the feedback fits it, else the method the data calls for
   (``choose``, which asks the methods registry which preference methods train on pairs or on ratings).
4. v1 and v2 are evaluated on the original test split (quality, forgetting, risk probes) and on the
   held-out feedback (``evaluate``); the promotion check (``promotion``) promotes v2 only inside the
   recipe's ``iterate`` bounds.

Everything lands in ``<run>-v2/``: ``data/`` (train.jsonl, feedback_heldout.jsonl, card.json),
``model/``, ``metrics.json`` (``iterate``, ``train``, ``eval``, ``forgetting``, ``feedback_eval``,
``promotion``) and the report (``report``).
"""

from __future__ import annotations

from ayar.iterate.choose import choose_method, training_records
from ayar.iterate.evaluate import feedback_eval, held_out_targets
from ayar.iterate.feedback import deduplicate, feedback_records, hold_out, record_prompt, replay_records
from ayar.iterate.promotion import promotion_check, read_promotion
from ayar.iterate.report import write_iteration_report
from ayar.iterate.stage import iterate
from ayar.iterate.versions import merged_base, next_run_name, v2_recipe

__all__ = [
    "choose_method",
    "deduplicate",
    "feedback_eval",
    "feedback_records",
    "held_out_targets",
    "hold_out",
    "iterate",
    "merged_base",
    "next_run_name",
    "promotion_check",
    "read_promotion",
    "record_prompt",
    "replay_records",
    "training_records",
    "v2_recipe",
    "write_iteration_report",
]
