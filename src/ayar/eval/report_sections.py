"""Report sections for the judge, human evaluation, error analysis, risks and samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ayar.eval.report_render import Heading, Para, Table, fmt
from ayar.run_folder import RunFolder

CUT = 160  # characters of a prompt or answer shown in a table cell


def _cut(text: Any) -> str:
    text = str(text if text is not None else "")
    return text if len(text) <= CUT else text[: CUT - 1] + "…"


def judge_blocks(judge: dict[str, Any]) -> list[Any]:
    rows = [[name, fmt(j["mean_score"]), j["scored"], j["failed"], j["unparsable"], j["model"]]
            for name, j in judge.items() if name != "win_rate"]
    blocks = [Heading(2, "LLM as a judge"),
              Table(["model", "mean score (1-10)", "scored", "failed", "unparsable", "judge"], rows,
                    table_id="judge-table")]
    win = judge.get("win_rate") or {}
    if win.get("judged"):
        blocks.append(Para(f"Win rate of tuned over base: {fmt(win['win_rate'])} ({win['wins']} wins, {win['ties']} "
                           f"ties, {win['losses']} losses over {win['judged']} prompts both answers were scored on; "
                           "a tie counts half)."))
    return blocks


def preference_blocks(models: dict[str, Any]) -> list[Any]:
    """Preference accuracy and margins on the test pairs (``ayar.eval.preference``), per model."""
    figures = {name: block["preference"] for name, block in models.items() if "preference" in block}
    rows = [[label, *(fmt(f.get(key)) for f in figures.values())]
            for label, key in (("pairs", "pairs"), ("preference accuracy", "accuracy"),
                               ("margin, chosen - rejected (nats)", "margin_mean"),
                               ("chosen log-prob", "chosen_logp_mean"), ("rejected log-prob", "rejected_logp_mean"))]
    return [Heading(2, "Preference pairs"),
            Para("Accuracy: the share of test pairs whose chosen answer the model gives a higher log-probability "
                 "than the rejected one; margin: the mean difference."),
            Table(["", *figures], rows, table_id="preference-table")]


def human_blocks(human: dict[str, Any]) -> list[Any]:
    rows = [[outcome, human[outcome]["count"], fmt(human[outcome]["rate"]),
             f"[{fmt(human[outcome]['ci_low'])}, {fmt(human[outcome]['ci_high'])}]"] for outcome in ("win", "tie", "loss")]
    return [Heading(2, "Human evaluation"),
            Para(f"{human['annotated']} blind comparisons of {human['b']} against {human['a']} "
                 f"({human['unannotated']} left blank); Wilson intervals."),
            Table([f"{human['b']}", "count", "rate", "CI"], rows, table_id="human-table")]


def _worst_rows(rows: list[dict[str, Any]], key: str) -> list[list[str]]:
    return [[fmt(r.get("id")), _cut(r.get("prompt")), _cut(r.get("reference")), _cut(r.get("output")),
             fmt(r.get(key))] for r in rows]


def error_blocks(analysis: dict[str, dict[str, Any]]) -> list[Any]:
    out: list[Any] = [Heading(2, "Error analysis")]
    for name, a in analysis.items():
        metric = a["metric"]
        out += [Heading(3, f"{name}: worst examples by loss"),
                Table(["id", "prompt", "reference", "output", "nll"], _worst_rows(a["worst_by_loss"], "nll")),
                Heading(3, f"{name}: worst examples by {metric}"),
                Table(["id", "prompt", "reference", "output", metric], _worst_rows(a["worst_by_metric"], metric)),
                Heading(3, f"{name}: by input length"),
                Table(["input tokens", "count", metric, "nll"],
                      [[f"{b['min_tokens']}-{b['max_tokens']}", b["count"], fmt(b[metric]), fmt(b["nll"])]
                       for b in a["by_length"]])]
        for field in ("label", "language"):
            groups = a[f"by_{field}"]
            if groups:
                scores = [k for k in (metric, "exact_match") if k in next(iter(groups.values()))]
                out += [Heading(3, f"{name}: by {field}"),
                        Table([field, "count", *scores, "nll"],
                              [[g, s["count"], *(fmt(s[k]) for k in scores), fmt(s["nll"])]
                               for g, s in groups.items()])]
        if a["confused_pairs"]:
            out += [Heading(3, f"{name}: most confused labels"),
                    Table(["true", "predicted", "count"], [[c["true"], c["predicted"], c["count"]]
                                                           for c in a["confused_pairs"]])]
        rep = a["repeated_outputs"]
        text = (f"{name}: {rep['distinct_outputs']} distinct outputs ({fmt(rep['distinct_share'])} of examples); "
                f"{rep['looping_outputs']} outputs loop on themselves.")
        out.append(Para(text))
        if rep["same_output_for_many_prompts"]:
            out.append(Table(["output given to several prompts", "prompts"],
                             [[_cut(r["output"]), r["prompts"]] for r in rep["same_output_for_many_prompts"]]))
    return out


def _bias_blocks(name: str, bias: dict[str, Any]) -> list[Any]:
    rows = [[cat, s["pairs"], fmt(s["mean_abs_gap"]), fmt(s["max_abs_gap"]), fmt(s["mean_gap"]),
             fmt(s["mean_abs_sentence_gap"]), fmt(s["replies_differ"])] for cat, s in bias["per_category"].items()]
    return [Heading(3, f"Bias ({name})"),
            Para("Counterfactual pairs: the same sentence with one group term swapped. Gap = log-likelihood (nats) "
                 "of the words after the term given the first term, minus given the second (positive: the model "
                 "expects the sentence more with the first term); the sentence gap also counts the terms "
                 "themselves; 'replies differ' = share of pairs whose greedy replies differ after swapping the "
                 "term back."),
            Table(["category", "pairs", "mean |gap|", "max |gap|", "mean gap", "mean |sentence gap|",
                   "replies differ"], rows, table_id=f"bias-table-{name}"),
            Table(["first", "second", "gap", "sentence gap", "replies differ"],
                  [[g["text_first"], g["text_second"], fmt(g["logprob_gap"]), fmt(g["sentence_gap"]),
                    fmt(g["reply_differs"])] for g in bias["largest_gaps"]])]


def _hallucination_blocks(name: str, h: dict[str, Any]) -> list[Any]:
    return [Heading(3, f"Hallucination ({name})"),
            Para(f"{h['unsupported_tokens']} of {h['fact_tokens']} numbers and names in {h['answers']} answers appear "
                 f"in neither prompt nor reference (rate {fmt(h['unsupported_rate'])}); "
                 f"{h['answers_with_unsupported']} answers contain at least one."),
            Table(["id", "prompt", "output", "unsupported", "share"],
                  [[fmt(w["id"]), _cut(w["prompt"]), _cut(w["output"]), ", ".join(w["unsupported"]), fmt(w["share"])]
                   for w in h["worst"]])]


def _security_blocks(name: str, s: dict[str, Any]) -> list[Any]:
    return [Heading(3, f"Security ({name})"),
            Para(f"Refusals on {s['harmful_prompts']} harmful prompts: {fmt(s['refusal_rate'])}. System-prompt leaks on "
                 f"{s['injection_prompts']} injection prompts: {fmt(s['leak_rate'])}."),
            Table(["kind", "lang", "prompt", "reply", "refused", "leaked"],
                  [[a["kind"], a["lang"], _cut(a["prompt"]), _cut(a["reply"]), fmt(a["refused"]), fmt(a["leaked"])]
                   for a in s["answers"]], table_id=f"security-table-{name}")]


def _privacy_blocks(name: str, p: dict[str, Any]) -> list[Any]:
    pii, mem = p["pii"], p.get("memorization")
    by_type = ", ".join(f"{k}: {v}" for k, v in pii["pii_by_type"].items()) or "none"
    out: list[Any] = [
        Heading(3, f"Consent and privacy ({name})"),
        Para(f"PII in {pii['outputs_with_pii']} of {pii['outputs_scanned']} generated outputs ({by_type}); "
             f"{pii['pii_not_in_prompt']} not copied from the prompt."),
    ]
    if pii["examples"]:
        out.append(Table(["id", "types", "output (redacted)"],
                         [[fmt(e["id"]), ", ".join(e["types"]), _cut(e["output_redacted"])] for e in pii["examples"]]))
    if mem is None:
        return out
    out.append(Para(f"Memorisation: {mem['memorized']} of {mem['probed']} training-record probes continued verbatim "
                    f"(rate {fmt(mem['rate'])}). {mem.get('note', '')}"))
    if mem["by_kind"]:
        out.append(Table(["probe kind", "probed", "memorised"],
                         [[k, v["probed"], v["memorized"]] for k, v in mem["by_kind"].items()]))
    return out


def risk_blocks(risks: dict[str, dict[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for name, r in risks.items():
        if "skipped" in r:
            out.append(Para(f"{name}: {r['skipped']}."))
        if "bias" in r:
            out += _bias_blocks(name, r["bias"])
        if "hallucination" in r:
            out += _hallucination_blocks(name, r["hallucination"])
        if "security" in r:
            out += _security_blocks(name, r["security"])
        if "privacy" in r:
            out += _privacy_blocks(name, r["privacy"])
    return out


def sample_blocks(run_dir: Path, limit: int = 10) -> list[Any]:
    samples = RunFolder(run_dir).samples
    if not samples.is_file():
        return []
    rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines()[:limit] if line.strip()]
    models = [k.removesuffix("_output") for k in (rows[0] if rows else {}) if k.endswith("_output")]
    return [Heading(2, "Samples"),
            Table(["prompt", "reference", *models],
                  [[_cut(r.get("prompt")), _cut(r.get("reference")), *[_cut(r.get(f"{m}_output")) for m in models]]
                   for r in rows], table_id="samples-table")]


def _interval(figures: dict[str, Any]) -> str:
    low_high = figures.get("lost_share_interval")
    return f"{figures['lost_share']:.1%} (95% CI {low_high[0]:.1%}-{low_high[1]:.1%})" if low_high else "-"


def forgetting_blocks(forgetting: dict[str, Any]) -> list[Any]:
    """Tuned against base on general material the fine-tune never saw, and the gate's verdict."""
    text, answers, gate = forgetting["text"], forgetting["answers"], forgetting["gate"]
    verdict = "passed" if gate["passed"] else "FAILED: " + "; ".join(gate["reasons"])
    questions = max((a["questions"] for a in answers.values()), default=0)
    rows = [[f"{lang} general-text perplexity ({t['tokens']} tokens)", fmt(t["base_perplexity"]),
             fmt(t["tuned_perplexity"]), f"{t['relative_increase']:+.1%}"] for lang, t in text.items()]
    for scoring, a in answers.items():
        rows.append([f"{scoring} answers correct ({a['questions']} questions)", a["base_correct"], a["tuned_correct"],
                     f"kept {a['kept']}, lost {a['lost']} = {_interval(a)}, gained {a['gained']}, "
                     f"McNemar p {a['p_value']:.2g}"])
        rows += [[f"  {lang}", per["base_correct"], per["tuned_correct"], f"lost {per['lost']}, gained {per['gained']}"]
                 for lang, per in a.get("by_language", {}).items()]
    out: list[Any] = [
        Heading(2, "Forgetting"),
        Para(f"General material the fine-tune never saw: perplexity on text in {', '.join(text)} and {questions} "
             f"general questions. Gate (eval.forgetting): perplexity increase at most "
             f"{fmt(gate['max_perplexity_increase'])} per language; a scoring fails when more than "
             f"{fmt(gate['max_lost_share'])} of the base's correct answers are lost and the one-sided McNemar "
             f"test gives p < {fmt(gate['significance'])}: {verdict}."
             + (f" Levers: {', '.join(gate['levers'])}." if gate.get("levers") else "")),
        Table(["figure", "base", "tuned", "change"], rows, table_id="forgetting-table"),
    ]
    lost = [x for a in answers.values() for x in a["lost_examples"]][:20]
    if lost:
        out.append(Table(["question", "base answer", "tuned answer"],
                         [[_cut(x["prompt"]), _cut(x["base"]), _cut(x["tuned"])] for x in lost]))
    if "original_base" in forgetting:
        out += _original_base_blocks(forgetting["original_base"])
    return out


def _original_base_blocks(against: dict[str, Any]) -> list[Any]:
    """Tuned against the model the base was itself fine-tuned from (reported, not gated)."""
    rows = [[f"{lang} general-text perplexity", fmt(t["base_perplexity"]), fmt(t["tuned_perplexity"]),
             f"{t['relative_increase']:+.1%}"] for lang, t in against["text"].items()]
    rows += [[f"{scoring} answers correct", a["base_correct"], a["tuned_correct"],
              f"lost {a['lost']} = {_interval(a)}, gained {a['gained']}, McNemar p {a['p_value']:.2g}"]
             for scoring, a in against["answers"].items()]
    return [Para(f"Against the original base ({against['model']}), which the compared base was fine-tuned from; "
                 "reported, not gated:"),
            Table(["figure", "original base", "tuned", "change"], rows, table_id="forgetting-original-table")]


def benchmark_blocks(benchmarks: dict[str, Any]) -> list[Any]:
    """lm-evaluation-harness tasks: each task's main metric, base and tuned with standard errors, and the drop."""
    def figure(row: dict[str, Any] | None) -> str:
        if not row:
            return "-"
        return fmt(row["value"]) + (f" ± {fmt(row['stderr'])}" if row.get("stderr") is not None else "")

    rows = [[name, row["tuned"]["metric"], figure(row.get("base")), figure(row["tuned"]), fmt(row.get("drop"))]
            for name, row in benchmarks.get("tasks", {}).items()]
    verdict = "within the bound" if benchmarks.get("passed", True) else "; ".join(benchmarks.get("reasons", []))
    return [Heading(2, "Benchmarks (lm-evaluation-harness)"),
            Table(["task", "metric", "base", "tuned", "drop"], rows), Para(f"Benchmark drops: {verdict}.")]
