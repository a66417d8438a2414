"""Server-rendered pages: the forgetting gate's verdict on a run, the new-run form's main fields and folds."""

from __future__ import annotations

from pathlib import Path

from ui_helpers import EVALUATED, FormFields, forgetting_section, write_run

from ayar.ui import pages
from ayar.ui.forms import MAIN_KEYS, example_recipes, filled_fields, load_example
from ayar.ui.runs import summarize


def _form(example: str) -> FormFields:
    fields = filled_fields(load_example(example_recipes()[example]))
    return FormFields(pages.new_run_page("en", [example], example, fields))


def test_the_main_fields_come_first_and_the_rest_is_folded() -> None:
    form = _form("quickstart")
    main = [i for i in form.inputs if i["in"] == "main-settings" and not i["hidden"]]
    assert {i["key"] for i in main} == MAIN_KEYS
    assert [i["method"] for i in main if i["key"] == "method.r"] == ["lora"]  # the chosen method's r only
    folded = [i for i in form.inputs if i["in"] != "main-settings"]
    assert len(folded) > 100 and all(str(i["in"]).startswith("more-") for i in folded)  # every schema leaf
    assert all("open" not in form.containers[str(i["in"])] for i in folded)
    assert {"more-train", "more-eval", "more-data"} <= set(form.containers)


def test_unused_sections_and_other_methods_start_hidden() -> None:
    form = _form("quickstart")  # no pretraining, LoRA, the judge off
    shown = {i["key"] for i in form.inputs if not i["hidden"]}
    assert "pretrain.enabled" in shown and not any(k.startswith("pretrain.") for k in shown - {"pretrain.enabled"})
    assert "hidden" in form.containers["more-pretrain"]  # nothing of it is used: the whole fold goes
    assert "method.beta" not in shown  # DPO, KTO, ... parameters
    assert "method.alpha" in shown and "eval.judge.enabled" in shown and "eval.judge.url" not in shown
    scratch = _form("from-scratch")  # pretrains its own base
    assert "pretrain.max_steps" in {i["key"] for i in scratch.inputs if not i["hidden"]}
    assert "hidden" not in scratch.containers["more-pretrain"]


def test_the_run_page_leads_with_a_failed_forgetting_gate(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "forgot", {"eval": EVALUATED, "forgetting": forgetting_section(15.0)})
    html = pages.run_page("en", summarize(run_dir), "runs/forgot")
    title = html[html.index("<h1>"):html.index("</h1>")]
    assert 'class="status gate_failed"' in title and "stopped by the forgetting gate" in title
    assert "done" not in title
    verdict = html[html.index('id="gate-verdict"'):]
    assert verdict.index("en general-text perplexity rose +50.0% (bound +25%)") < verdict.index("<h2>")
    assert html.index('id="gate-verdict"') < html.index('id="metric-table"')  # at the top, above the figures
    listed = pages.runs_page("en", tmp_path, [summarize(run_dir)])
    assert "stopped by the forgetting gate" in listed and 'title="en general-text perplexity rose' in listed


def test_runs_with_a_passed_gate_or_none_read_done(tmp_path: Path) -> None:
    kept = write_run(tmp_path, "kept", {"eval": EVALUATED, "forgetting": forgetting_section(11.0)})
    older = write_run(tmp_path, "older", {"eval": EVALUATED,
                                          "forgetting": {"general_text_nll": {"base": 3.1, "tuned": 3.3}}})
    passed = pages.run_page("en", summarize(kept), "runs/kept")
    assert 'data-status="done"' in passed and 'class="gate passed"' in passed
    old = pages.run_page("en", summarize(older), "runs/older")
    assert 'data-status="done"' in old and "gate-verdict" not in old and "general_text_nll" in old


def _benchmarks(drop_bound: float) -> dict:
    from ayar.eval.benchmarks import compare
    from ayar.recipe.eval_config import BenchmarksConfig

    base = {"arc_easy": {"metric": "acc_norm", "value": 0.41, "stderr": 0.012, "n": 200},
            "ayar_general": {"metric": "acc_bytes", "value": 0.75, "stderr": 0.05, "n": 40}}
    tuned = {"arc_easy": {"metric": "acc_norm", "value": 0.36, "stderr": 0.011, "n": 200},
             "ayar_general": {"metric": "acc_bytes", "value": 0.8, "stderr": 0.04, "n": 40}}
    return compare(base, tuned, BenchmarksConfig(tasks=list(base), max_drop=drop_bound))


def test_the_run_page_shows_each_benchmark_base_and_tuned_with_its_error(tmp_path: Path) -> None:
    from html import unescape

    run_dir = write_run(tmp_path, "bench", {"eval": {**EVALUATED, "benchmarks": _benchmarks(0.02)}})
    html = pages.run_page("en", summarize(run_dir), "runs/bench")
    section = unescape(html[html.index('id="benchmarks-table"'):])
    section = section[:section.index("</p>")]
    assert "<td>arc_easy</td><td>acc_norm</td><td>0.41 ± 0.012</td><td>0.36 ± 0.011</td><td>0.05</td>" \
           "<td>200</td>" in section
    assert "<td>ayar_general</td><td>acc_bytes</td><td>0.75 ± 0.05</td><td>0.8 ± 0.04</td>" in section
    assert "Past eval.benchmarks.max_drop: benchmark arc_easy acc_norm fell 0.050 (bound 0.02)." in section
    assert "<summary>eval.benchmarks</summary>" not in html  # not again among the unknown sections
    turkish = unescape(pages.run_page("tr", summarize(run_dir), "runs/bench"))
    assert "Standart testler" in turkish and "<th>ince ayarlı</th>" in turkish
    within = write_run(tmp_path, "within", {"eval": {**EVALUATED, "benchmarks": _benchmarks(0.1)}})
    assert "No task fell past" in pages.run_page("en", summarize(within), "runs/within")
    plain = write_run(tmp_path, "plain", {"eval": EVALUATED})
    assert "benchmarks-table" not in pages.run_page("en", summarize(plain), "runs/plain")


def test_the_compare_page_puts_runs_benchmarks_side_by_side(tmp_path: Path) -> None:
    from html import unescape

    runs = [write_run(tmp_path, "bench", {"eval": {**EVALUATED, "benchmarks": _benchmarks(0.02)}}),
            write_run(tmp_path, "plain", {"eval": EVALUATED})]
    html = unescape(pages.compare_page("en", [summarize(r) for r in runs], ["bench", "plain"]))
    assert "<tr><td>arc_easy (tuned)</td><td>0.36 ± 0.011</td><td>-</td></tr>" in html
    assert "<tr><td>ayar_general (base)</td><td>0.75 ± 0.05</td><td>-</td></tr>" in html
