"""Reading run folders: the forgetting gate's verdict and what it makes of a finished run's status."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ui_helpers import EVALUATED, forgetting_section, write_run

from ayar.ui.runs import gate_verdict, run_status, summarize


def test_a_run_whose_forgetting_gate_failed_is_not_done(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "forgot", {"eval": EVALUATED, "forgetting": forgetting_section(15.0)})
    assert run_status(run_dir) == "gate_failed"
    assert run_status(run_dir, job_state="failed") == "gate_failed"  # `ayar run` exits 4 on it
    assert run_status(run_dir, job_state="running") == "running"  # its process still runs: not over yet
    summary = summarize(run_dir)
    assert summary.status == "gate_failed" and summary.as_dict()["gate"] == summary.gate
    assert summary.gate is not None and summary.gate["passed"] is False
    assert summary.gate["reasons"] == ["en general-text perplexity rose +50.0% (bound +25%)"]
    assert summary.gate["levers"]  # what to try, from the gate itself


def test_a_passed_gate_and_runs_without_one_are_done(tmp_path: Path) -> None:
    passed = write_run(tmp_path, "kept", {"eval": EVALUATED, "forgetting": forgetting_section(11.0)})
    assert run_status(passed) == "done" and summarize(passed).gate == {"passed": True, "reasons": [], "levers": []}
    older = write_run(tmp_path, "older", {"eval": EVALUATED,
                                          "forgetting": {"general_text_nll": {"base": 3.1, "tuned": 3.3}}})
    never = write_run(tmp_path, "never", {"eval": EVALUATED})
    for run_dir in (older, never):
        assert run_status(run_dir) == "done" and summarize(run_dir).gate is None


def test_a_gate_verdict_of_an_earlier_evaluation_does_not_mark_a_rerun(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "rerun", {"eval": EVALUATED, "forgetting": forgetting_section(15.0)})
    old = time.time() - 3600
    os.utime(run_dir / "metrics.json", (old, old))  # the recipe was rewritten since: a new run in the folder
    assert run_status(run_dir) == "running"
    os.utime(run_dir / "recipe.yaml", (old - 60, old - 60))
    os.utime(run_dir / "metrics.json", (old, old))
    assert run_status(run_dir) == "gate_failed"  # nothing newer: the verdict stands, however old


def test_gate_verdict_reads_the_gate_at_either_level_and_ignores_other_shapes() -> None:
    gate = forgetting_section(15.0)
    assert gate_verdict({"forgetting": gate})["passed"] is False
    assert gate_verdict({"eval": {"forgetting": gate}})["passed"] is False
    assert gate_verdict({}) is None
    assert gate_verdict({"forgetting": {"gate": {"reasons": ["no verdict"]}}}) is None
    assert gate_verdict({"forgetting": ["not", "a", "section"]}) is None
