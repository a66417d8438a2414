"""The forgetting report: what the fine-tune cost the model on general material it never trained on.

Probes, run on the base and the tuned model alike:

- perplexity on held-out general text in English (CPython's pydoc topics, prose sections: they ship with
  Python) and in Turkish (original prose written for ayar, ``probe_data/turkish_text.txt``), each judged
  on its own;
- general questions with checkable answers (``probe_data/general_questions.jsonl``, about half Turkish:
  facts, arithmetic, language, common sense, following a simple instruction), scored two ways: the greedy
  answer checked against the accepted ones, and multiple-choice log-likelihood of four options (how
  evaluation harnesses score multiple choice: no generation; instruction questions are greedy only).

The gate (``eval.forgetting``): a scoring fails when the one-sided exact McNemar test on the answers lost
against those gained gives p < ``significance`` **and** more than ``max_lost_share`` of the base's correct
answers were lost; perplexity fails past ``max_perplexity_increase`` in either language. So one run's
noise (a few answers flipping both ways) does not fail a run, and real forgetting does.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import xxhash
from scipy.stats import binomtest

from ayar.eval.generate import context_length, generate_chat
from ayar.eval.perplexity import continuation_nll_sums, perplexity
from ayar.recipe import EvalConfig, ForgettingConfig

DATA = Path(__file__).parent / "probe_data"
QUESTIONS_FILE = DATA / "general_questions.jsonl"
TURKISH_TEXT_FILE = DATA / "turkish_text.txt"
# Prose sections of the pydoc topics (not grammar listings): general technical English.
TEXT_TOPICS = ("execmodel", "naming", "exceptions", "truth", "typesmodules", "context-managers")
TEXT_SOURCES = {"en": f"pydoc topics: {', '.join(TEXT_TOPICS)}", "tr": "original Turkish prose (probe_data)"}
LEVERS = ("train.interpolate (WiSE-FT toward the base)", "train.self_distill (KL to the base on general prompts)",
          "data.system_prompt (the task under a system prompt of its own)", "data.rehearsal",
          "a lower learning rate or fewer steps")


@dataclass(frozen=True)
class GeneralQuestion:
    """A question with the answers that count as correct (regular expressions, case-insensitive) and, for
    multiple choice, its options with the correct one first."""

    prompt: str
    answers: tuple[str, ...]
    lang: str = "en"
    subject: str = "fact"
    choices: tuple[str, ...] | None = None
    id: str = ""

    def is_answered_by(self, text: str) -> bool:
        return any(re.search(rf"\b{pattern}\b", text, re.IGNORECASE) for pattern in self.answers)


def load_questions(path: Path = QUESTIONS_FILE) -> tuple[GeneralQuestion, ...]:
    """The probe's questions, in file order."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return tuple(GeneralQuestion(r["prompt"], tuple(r["answers"]), r["lang"], r["subject"],
                                 tuple(r["choices"]) if r.get("choices") else None, r["id"]) for r in rows)


GENERAL_QUESTIONS = load_questions()


def select_questions(max_questions: int | None,
                     questions: tuple[GeneralQuestion, ...] = GENERAL_QUESTIONS) -> tuple[GeneralQuestion, ...]:
    """The first ``max_questions`` with English and Turkish alternating, each language's subjects
    interleaved in proportion, so any size is balanced between the languages and spans every subject;
    all of them when None."""
    by_lang = [_interleave_subjects([q for q in questions if q.lang == lang]) for lang in ("en", "tr")]
    alternating = [q for pair in zip(*by_lang, strict=False) for q in pair]
    longer = max(by_lang, key=len)
    alternating += longer[min(map(len, by_lang)):]
    return tuple(alternating[:max_questions] if max_questions else alternating)


def _interleave_subjects(questions: list[GeneralQuestion]) -> list[GeneralQuestion]:
    """Questions ordered by their relative place within their subject (file order kept inside one), so
    every prefix holds each subject in about its share of the whole."""
    counts = Counter(q.subject for q in questions)
    seen: Counter[str] = Counter()
    keyed = []
    for index, question in enumerate(questions):
        keyed.append(((seen[question.subject] + 0.5) / counts[question.subject], index, question))
        seen[question.subject] += 1
    return [question for *_, question in sorted(keyed, key=lambda item: item[:2])]


@cache
def general_texts() -> dict[str, str]:
    """The held-out general text of each language, the same on every machine."""
    from pydoc_data.topics import topics

    english = "\n\n".join(topics[name] for name in TEXT_TOPICS if name in topics)
    return {"en": english, "tr": TURKISH_TEXT_FILE.read_text(encoding="utf-8")}


def text_perplexity(model: Any, tokenizer: Any, tokens: int, window: int) -> dict[str, dict[str, Any]]:
    """Perplexity (and mean token loss) of the model on the first ``tokens`` tokens of each language's text,
    in windows of ``window`` tokens (at most the model's context)."""
    window = min(window, context_length(model))
    out = {}
    for lang, text in general_texts().items():
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
        result = perplexity(model, [{"input_ids": ids, "labels": ids}], context=window, stride=window)
        out[lang] = {"perplexity": result["perplexity"], "nll": result["nll"], "tokens": result["tokens"]}
    return out


def answer_general_questions(model: Any, tokenizer: Any, cfg: ForgettingConfig, eval_cfg: EvalConfig,
                             questions: tuple[GeneralQuestion, ...]) -> list[dict[str, Any]]:
    """Each question's greedy answer (chat template) and whether it is correct."""
    decoding = eval_cfg.model_copy(update={"max_new_tokens": cfg.max_new_tokens, "do_sample": False})
    answers = generate_chat(model, tokenizer, [[{"role": "user", "content": q.prompt}] for q in questions], decoding)
    return [{"prompt": q.prompt, "lang": q.lang, "output": a.strip(), "correct": q.is_answered_by(a)}
            for q, a in zip(questions, answers, strict=True)]


def choose_answers(model: Any, tokenizer: Any, questions: tuple[GeneralQuestion, ...]) -> list[dict[str, Any]]:
    """Multiple choice by log-likelihood: each option's summed log-probability after the chat prompt,
    divided by its length in bytes (lm-evaluation-harness's acc_norm, so a longer option is not penalised
    for its length); correct when the first option, the right one, scores highest."""
    from ayar.data.templates import render_prompt

    asked = [q for q in questions if q.choices]
    prompts = [tokenizer(render_prompt(tokenizer, [{"role": "user", "content": q.prompt}]),
                         add_special_tokens=False)["input_ids"] for q in asked]
    options = [[tokenizer(choice, add_special_tokens=False)["input_ids"] for choice in q.choices or ()]
               for q in asked]
    model.eval()
    sums = continuation_nll_sums(model, prompts, options)
    out = []
    for question, question_sums in zip(asked, sums, strict=True):
        choices = question.choices or ()
        scores = [-nll / len(choice.encode("utf-8")) for choice, (nll, _) in zip(choices, question_sums, strict=True)]
        best = max(range(len(scores)), key=scores.__getitem__)
        out.append({"prompt": question.prompt, "lang": question.lang, "output": choices[best], "correct": best == 0})
    return out


def probe(model: Any, tokenizer: Any, eval_cfg: EvalConfig) -> dict[str, Any]:
    """Every probe on one model: text perplexity per language and the answers of each scoring."""
    cfg = eval_cfg.forgetting
    questions = select_questions(cfg.max_questions)
    result: dict[str, Any] = {"text": text_perplexity(model, tokenizer, cfg.text_tokens, cfg.window), "answers": {}}
    if "greedy" in cfg.scoring:
        result["answers"]["greedy"] = answer_general_questions(model, tokenizer, cfg, eval_cfg, questions)
    if "choice" in cfg.scoring:
        result["answers"]["choice"] = choose_answers(model, tokenizer, questions)
    return result


def cache_dir() -> Path:
    """Where base-model probe results are kept, per model hash: ``$AYAR_CACHE/forgetting``, else
    ``~/.cache/ayar/forgetting`` (beside the converted models)."""
    return Path(os.environ.get("AYAR_CACHE") or Path.home() / ".cache" / "ayar") / "forgetting"


def probe_key(model_dir: Path, tokenizer: Any, eval_cfg: EvalConfig, dtype: str) -> str:
    """A hash of everything the base's probe results depend on: the model folder's files (weights, config,
    tokenizer), the chat template, the probe's settings and data, the batch size and the dtype."""
    digest = xxhash.xxh3_128()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode())
        with path.open("rb") as handle:
            while block := handle.read(1 << 24):
                digest.update(block)
    settings = eval_cfg.forgetting.model_dump(include={"max_questions", "text_tokens", "window", "max_new_tokens",
                                                       "scoring"})
    digest.update(json.dumps([settings, eval_cfg.batch_size, dtype, getattr(tokenizer, "chat_template", None)],
                             sort_keys=True).encode())
    digest.update(QUESTIONS_FILE.read_bytes() + TURKISH_TEXT_FILE.read_bytes())
    # the questions asked, not only the file they come from: a change in how they are picked is a new probe
    asked = [(q.prompt, q.choices) for q in select_questions(eval_cfg.forgetting.max_questions)]
    digest.update(json.dumps(asked, ensure_ascii=False).encode())
    return digest.hexdigest()


def probe_cached(model: Any, tokenizer: Any, eval_cfg: EvalConfig, model_dir: str | Path) -> dict[str, Any]:
    """``probe``, read from the cache when this model folder was probed alike before (a hub id: no cache)."""
    folder = Path(model_dir)
    if not (eval_cfg.forgetting.cache and folder.is_dir()):
        return probe(model, tokenizer, eval_cfg)
    path = cache_dir() / f"{probe_key(folder, tokenizer, eval_cfg, str(next(model.parameters()).dtype))}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    result = probe(model, tokenizer, eval_cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)  # atomic: a concurrent run reads a whole file or none
    return result


def answer_figures(base: list[dict[str, Any]], tuned: list[dict[str, Any]]) -> dict[str, Any]:
    """Kept, lost and gained answers, the lost share with its 95% Wilson interval, and the one-sided exact
    McNemar p-value (lost against gained: under no forgetting each changed answer goes either way at 1/2)."""
    pairs = list(zip(base, tuned, strict=True))
    base_correct = sum(b["correct"] for b, _ in pairs)
    lost = [{"prompt": b["prompt"], "lang": b.get("lang"), "base": b["output"], "tuned": t["output"]}
            for b, t in pairs if b["correct"] and not t["correct"]]
    gained = sum(t["correct"] and not b["correct"] for b, t in pairs)
    changed = len(lost) + gained
    p_value = binomtest(len(lost), changed, 0.5, alternative="greater").pvalue if changed else 1.0
    interval = (binomtest(len(lost), base_correct).proportion_ci(0.95, method="wilson")
                if base_correct else None)
    return {"questions": len(pairs), "base_correct": base_correct, "tuned_correct": sum(t["correct"] for _, t in pairs),
            "kept": base_correct - len(lost), "lost": len(lost), "gained": gained,
            "lost_share": len(lost) / base_correct if base_correct else 0.0,
            "lost_share_interval": [interval.low, interval.high] if interval else None,
            "p_value": float(p_value), "lost_examples": lost}


def compare_answers(base: list[dict[str, Any]], tuned: list[dict[str, Any]]) -> dict[str, Any]:
    """answer_figures over all questions, and per language."""
    figures = answer_figures(base, tuned)
    figures["by_language"] = {}
    for lang in sorted({b.get("lang", "en") for b in base}):
        rows = [(b, t) for b, t in zip(base, tuned, strict=True) if b.get("lang", "en") == lang]
        per = answer_figures([b for b, _ in rows], [t for _, t in rows])
        figures["by_language"][lang] = {k: v for k, v in per.items() if k != "lost_examples"}
    return figures


def gate_reasons(text: dict[str, Any], answers: dict[str, Any], cfg: ForgettingConfig) -> list[str]:
    """Why the run fails the forgetting gate (empty: it passes)."""
    reasons = []
    for lang, figures in text.items():
        if cfg.max_perplexity_increase is not None and figures["relative_increase"] > cfg.max_perplexity_increase:
            reasons.append(f"{lang} general-text perplexity rose {figures['relative_increase']:+.1%} "
                           f"(bound {cfg.max_perplexity_increase:+.0%})")
    for scoring, figures in answers.items():
        lost, share, p_value = figures["lost"], figures["lost_share"], figures["p_value"]
        said = (f"{scoring} answers: {lost} of the base's {figures['base_correct']} correct answers lost "
                f"({share:.1%}, McNemar p = {p_value:.2g})")
        if cfg.max_lost_share is not None and share > cfg.max_lost_share and p_value < cfg.significance:
            reasons.append(f"{said}: more than {cfg.max_lost_share:.0%} and significant at {cfg.significance}")
        elif cfg.max_answers_lost is not None and lost > cfg.max_answers_lost:
            reasons.append(f"{said}: more than {cfg.max_answers_lost}")
    return reasons


def compare(base: dict[str, Any], tuned: dict[str, Any], cfg: ForgettingConfig) -> dict[str, Any]:
    """The forgetting figures for metrics.json (key ``forgetting``), with the gate's verdict and reasons."""
    text = {lang: {"source": TEXT_SOURCES.get(lang, lang), "tokens": figures["tokens"],
                   "base_perplexity": figures["perplexity"],
                   "tuned_perplexity": tuned["text"][lang]["perplexity"],
                   "relative_increase": tuned["text"][lang]["perplexity"] / figures["perplexity"] - 1}
            for lang, figures in base["text"].items()}
    answers = {scoring: compare_answers(rows, tuned["answers"][scoring]) for scoring, rows in base["answers"].items()}
    reasons = gate_reasons(text, answers, cfg)
    return {"text": text, "answers": answers,
            "gate": {"passed": not reasons, "reasons": reasons, "levers": [] if not reasons else list(LEVERS),
                     **cfg.model_dump(include={"max_perplexity_increase", "max_lost_share", "significance",
                                               "max_answers_lost"})}}
