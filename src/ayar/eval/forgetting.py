"""The forgetting report: what the fine-tune cost the model on general material it never trained on.

Two probes, run on the base and the tuned model alike:

- perplexity on held-out general English text that ships with Python itself (CPython's pydoc
  topics, a few prose sections), so the probe works offline and no fine-tune in ayar trains on it;
- a fixed set of general questions with checkable answers: of those the base answers correctly,
  how many the tuned model still answers (kept) and how many it now gets wrong (lost).

The gate (``eval.forgetting``): the run fails when the perplexity rose by more than
``max_perplexity_increase`` (relative: 0.25 means +25%) or more than ``max_answers_lost`` of the
base's correct answers were lost. Catastrophic forgetting is why fine-tunes use small learning
rates and adapters; ayar measures it instead of assuming it away.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ayar.eval.generate import context_length, generate_chat
from ayar.eval.perplexity import perplexity
from ayar.recipe import EvalConfig, ForgettingConfig

# Prose sections of the pydoc topics (not grammar listings): general technical English.
TEXT_TOPICS = ("execmodel", "naming", "exceptions", "truth", "typesmodules", "context-managers")


@dataclass(frozen=True)
class GeneralQuestion:
    """A question with the answers that count as correct (regular expressions, case-insensitive)."""

    prompt: str
    answers: tuple[str, ...]

    def is_answered_by(self, text: str) -> bool:
        return any(re.search(rf"\b{pattern}\b", text, re.IGNORECASE) for pattern in self.answers)


GENERAL_QUESTIONS = (
    GeneralQuestion("What is the capital of France?", ("Paris",)),
    GeneralQuestion("What is the capital of Japan?", ("Tokyo",)),
    GeneralQuestion("What is the capital of Italy?", ("Rome",)),
    GeneralQuestion("What is the capital of Turkey?", ("Ankara",)),
    GeneralQuestion("Who wrote Romeo and Juliet?", ("Shakespeare",)),
    GeneralQuestion("What is the largest planet in our solar system?", ("Jupiter",)),
    GeneralQuestion("What is the chemical symbol for gold?", ("Au",)),
    GeneralQuestion("How many days are there in a week?", ("7", "seven")),
    GeneralQuestion("How many legs does a spider have?", ("8", "eight")),
    GeneralQuestion("What is 2 + 2?", ("4", "four")),
    GeneralQuestion("What color is the sky on a clear day?", ("blue",)),
    GeneralQuestion("What is the opposite of hot?", ("cold",)),
    GeneralQuestion("Which planet is known as the Red Planet?", ("Mars",)),
    GeneralQuestion("What do bees make?", ("honey",)),
    GeneralQuestion("What is the freezing point of water in degrees Celsius?", ("0", "zero")),
    GeneralQuestion("What language is mainly spoken in Brazil?", ("Portuguese",)),
    GeneralQuestion("Which animal is known as the king of the jungle?", ("lion",)),
    GeneralQuestion("What is the largest ocean on Earth?", ("Pacific",)),
    GeneralQuestion("Who painted the Mona Lisa?", ("Leonardo", "da Vinci")),
    GeneralQuestion("Türkiye'nin başkenti neresidir?", ("Ankara",)),
)


def general_text() -> str:
    """The held-out general English text (CPython's pydoc topics, prose sections), the same on every machine."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in TEXT_TOPICS if name in topics)


def text_perplexity(model: Any, tokenizer: Any, cfg: ForgettingConfig) -> dict[str, Any]:
    """Perplexity of the model on the first ``cfg.text_tokens`` tokens of the general text."""
    ids = tokenizer(general_text(), add_special_tokens=False)["input_ids"][: cfg.text_tokens]
    window = min(cfg.window, context_length(model))
    result = perplexity(model, [{"input_ids": ids, "labels": ids}], context=window, stride=window)
    return {"perplexity": result["perplexity"], "tokens": result["tokens"]}


def answer_general_questions(model: Any, tokenizer: Any, cfg: ForgettingConfig, eval_cfg: EvalConfig,
                             questions: tuple[GeneralQuestion, ...] = GENERAL_QUESTIONS) -> list[dict[str, Any]]:
    """Each question's greedy answer (chat template) and whether it is correct."""
    decoding = eval_cfg.model_copy(update={"max_new_tokens": cfg.max_new_tokens, "do_sample": False})
    answers = generate_chat(model, tokenizer, [[{"role": "user", "content": q.prompt}] for q in questions], decoding)
    return [{"prompt": q.prompt, "output": a.strip(), "correct": q.is_answered_by(a)}
            for q, a in zip(questions, answers, strict=True)]


def probe(model: Any, tokenizer: Any, eval_cfg: EvalConfig) -> dict[str, Any]:
    """Both probes on one model: text perplexity and the general answers."""
    cfg = eval_cfg.forgetting
    return {**text_perplexity(model, tokenizer, cfg),
            "answers": answer_general_questions(model, tokenizer, cfg, eval_cfg)}


def compare(base: dict[str, Any], tuned: dict[str, Any], cfg: ForgettingConfig) -> dict[str, Any]:
    """The forgetting figures for metrics.json (key ``forgetting``), with the gate's verdict and reasons."""
    increase = tuned["perplexity"] / base["perplexity"] - 1
    pairs = list(zip(base["answers"], tuned["answers"], strict=True))
    lost = [{"prompt": b["prompt"], "base": b["output"], "tuned": t["output"]}
            for b, t in pairs if b["correct"] and not t["correct"]]
    gained = [t["prompt"] for b, t in pairs if t["correct"] and not b["correct"]]
    reasons = []
    if cfg.max_perplexity_increase is not None and increase > cfg.max_perplexity_increase:
        reasons.append(f"perplexity on general text rose {increase:+.1%} (bound {cfg.max_perplexity_increase:+.0%})")
    if cfg.max_answers_lost is not None and len(lost) > cfg.max_answers_lost:
        reasons.append(f"{len(lost)} of the base's correct general answers were lost (bound {cfg.max_answers_lost})")
    return {
        "text": {"source": f"pydoc topics: {', '.join(TEXT_TOPICS)}", "tokens": base["tokens"],
                 "base_perplexity": base["perplexity"], "tuned_perplexity": tuned["perplexity"],
                 "relative_increase": increase},
        "answers": {"questions": len(pairs), "base_correct": sum(b["correct"] for b, _ in pairs),
                    "tuned_correct": sum(t["correct"] for _, t in pairs),
                    "kept": sum(b["correct"] and t["correct"] for b, t in pairs), "lost": len(lost),
                    "gained": len(gained), "lost_examples": lost},
        "gate": {"passed": not reasons, "reasons": reasons,
                 "max_perplexity_increase": cfg.max_perplexity_increase, "max_answers_lost": cfg.max_answers_lost},
    }
