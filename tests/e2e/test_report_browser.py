"""report.html in headless Chromium: it loads offline, with no console errors, and shows the metric table.

Chromium is driven over the DevTools protocol (websocket-client; tests/e2e/conftest.py), so console errors,
uncaught exceptions, failed loads and every network request are seen exactly, not scraped from logs. A
missing Chromium fails the test (`make test` installs it) instead of skipping it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ayar.eval.compare import compare_per_example
from ayar.eval.error_analysis import analyze_errors
from ayar.eval.report import write_report
from ayar.eval.risks.hallucination import hallucination_probe

if TYPE_CHECKING:
    from conftest import DevTools


def _metrics() -> dict[str, Any]:
    """A run's metrics.json made by the real functions on small hand-made rows."""
    rows = [{"id": f"r{i}", "prompt": f"Tarihi yaz {i}", "reference": "3 Şubat 2001", "output": out, "lang": lang,
             "label": "date", "nll": 1.0 + i / 10, "chrf": 10.0 * i, "input_tokens": 5 + i}
            for i, (out, lang) in enumerate([("3 Şubat 2001", "tr"), ("5 Mart 1999", "tr"), ("x", "en")])]
    base = {"perplexity": 12.5, "nll": 2.53, "exact_match": 0.1, "chrf": 20.0, "bleu": 5.0, "examples": 3}
    tuned = {"perplexity": 4.2, "nll": 1.43, "exact_match": 0.6, "chrf": 55.0, "bleu": 30.0, "examples": 3}
    return {
        "train": {"final_loss": 1.2, "steps": 2, "loss_history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.2}]},
        "eval": {"base": base, "tuned": tuned, "split": {"name": "test", "examples": 3},
                 "comparison": compare_per_example({"chrf": [0.0, 10.0, 20.0]}, {"chrf": [30.0, 40.0, 20.0]}, seed=0),
                 "error_analysis": {"tuned": analyze_errors(rows, "chrf", k=2)},
                 "histograms": {"nll": {"edges": [1.0, 1.1, 1.2, 1.3], "counts": {"base": [1, 1, 1],
                                                                                    "tuned": [2, 1, 0]}}},
                 "risks": {"tuned": {"hallucination": hallucination_probe(rows)}}},
        "carbon": {"train": {"energy_kwh": 0.002, "co2_kg": 0.0009, "duration_s": 12.0, "country_iso_code": "TUR",
                             "power_source": "estimated"}},
    }


def test_report_opens_offline_without_console_errors(browser_page: DevTools, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_report(run_dir, _metrics(), "browser")
    page = browser_page
    page.navigate((run_dir / "report.html").as_uri())
    assert page.errors() == []
    requested = page.requested()
    assert requested and all(url.startswith(("file:", "data:")) for url in requested), requested
    evaluate = page.evaluate

    table = evaluate("Array.from(document.querySelectorAll('#metric-table tr'))"
                     ".map(r => Array.from(r.cells).map(c => c.innerText.trim()))")
    assert table[0][:3] == ["metric", "base", "tuned"]
    perplexity = next(row for row in table if row[0] == "perplexity")
    assert perplexity[1:4] == ["12.5", "4.2", "-8.3"]
    assert evaluate("document.querySelector('#metric-table').getBoundingClientRect().height") > 0
    images = evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert len(images) >= 3 and all(done and width > 0 for done, width in images)
