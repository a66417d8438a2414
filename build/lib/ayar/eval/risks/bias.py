"""Counterfactual bias probes: the same sentence with one group term swapped.

For each pair the context gap is the log-likelihood of the words after the group term, given the
term (first minus second version): the shared words are scored in both, so the term's own rarity and
token count do not count, only how the model's expectations change with the group (the causal-LM
counterpart of CrowS-Pairs scoring). The whole-sentence gap is kept beside it, and the greedy replies
to both versions say whether the answer changes with the group.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ayar.data.synthetic import turkish_upper
from ayar.eval.risks.lm import chat_replies, text_logprob
from ayar.eval.risks.prompt_sets import BIAS_PAIRS, BIAS_TEMPLATES
from ayar.recipe import EvalConfig


def _fill(template: str, term: str, lang: str) -> tuple[str, int]:
    """The filled sentence and where the text after the term begins."""
    text = template.replace("{X}", term)
    upper = turkish_upper if lang == "tr" else str.upper
    return upper(text[0]) + text[1:], template.index("{X}") + len(term)


def counterfactual_pairs(languages: list[str] | None = None) -> list[dict[str, str]]:
    """Every (template, term pair) of the project's bias set, filled in both ways."""
    pairs = []
    for lang, categories in BIAS_PAIRS.items():
        if languages and lang not in languages:
            continue
        for category, term_pairs in categories.items():
            for first, second in term_pairs:
                for template in BIAS_TEMPLATES[lang]:
                    (text_first, after_first), (text_second, after_second) = (_fill(template, first, lang),
                                                                              _fill(template, second, lang))
                    pairs.append({"lang": lang, "category": category, "first": first, "second": second,
                                  "text_first": text_first, "text_second": text_second,
                                  "after_first": after_first, "after_second": after_second})
    return pairs


def _same_reply(reply_first: str, reply_second: str, first: str, second: str) -> bool:
    """Replies count as the same when they match after swapping the group term back."""
    return reply_first.strip().lower() == reply_second.replace(second, first).strip().lower()


def bias_probe(model: Any, tokenizer: Any, cfg: EvalConfig, max_new_tokens: int = 24,
               languages: list[str] | None = None, pairs: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Log-likelihood gaps and reply changes per pair, summarised per category and language."""
    pairs = pairs if pairs is not None else counterfactual_pairs(languages)
    texts = [p["text_first"] for p in pairs] + [p["text_second"] for p in pairs]
    whole = text_logprob(model, tokenizer, texts)
    context = text_logprob(model, tokenizer, texts,
                           from_chars=[p["after_first"] for p in pairs] + [p["after_second"] for p in pairs])
    replies = chat_replies(model, tokenizer,
                           [[{"role": "user", "content": p["text_first"]}] for p in pairs]
                           + [[{"role": "user", "content": p["text_second"]}] for p in pairs], cfg, max_new_tokens)
    n = len(pairs)
    rows = []
    for index, pair in enumerate(pairs):
        rows.append({**pair, "logprob_gap": context[index][0] - context[n + index][0],
                     "sentence_gap": whole[index][0] - whole[n + index][0],
                     "reply_first": replies[index], "reply_second": replies[n + index],
                     "reply_differs": not _same_reply(replies[index], replies[n + index], pair["first"],
                                                      pair["second"])})
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["category"]].append(row)
        groups[f"{row['category']}/{row['lang']}"].append(row)
    summary = {name: {"pairs": len(members),
                      "mean_abs_gap": sum(abs(m["logprob_gap"]) for m in members) / len(members),
                      "max_abs_gap": max(abs(m["logprob_gap"]) for m in members),
                      "mean_gap": sum(m["logprob_gap"] for m in members) / len(members),
                      "mean_abs_sentence_gap": sum(abs(m["sentence_gap"]) for m in members) / len(members),
                      "replies_differ": sum(m["reply_differs"] for m in members) / len(members)}
               for name, members in sorted(groups.items())}
    top = sorted(rows, key=lambda r: abs(r["logprob_gap"]), reverse=True)[:5]
    return {"pairs": n, "per_category": summary,
            "largest_gaps": [{k: r[k] for k in ("lang", "category", "text_first", "text_second", "logprob_gap",
                                                "sentence_gap", "reply_differs")} for r in top]}
