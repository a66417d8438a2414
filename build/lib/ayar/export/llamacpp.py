"""Check an exported GGUF in real llama.cpp (through llama-cpp-python) against the Hugging Face model.

Two checks, because a GGUF can load fine and still be wrong: llama.cpp picks its pre-tokenizer by the
name stored in the file, and a wrong name tokenizes differently without any error. So (1) every reference
conversation, rendered with the saved chat template, must tokenize to transformers' ids, and (2) greedy
answers to held-out prompts are compared token for token with the Hugging Face model's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ayar.data.templates import render_prompt
from ayar.eval.generate import stop_token_ids
from ayar.export.isolated import run_isolated

REFERENCE_CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris."}],
    [{"role": "system", "content": "Answer in Turkish."},
     {"role": "user", "content": "Ankara'nın nüfusu kaç? 3 ayrı tahmin ver: 5.7, 5,8 ya da 6 milyon."},
     {"role": "assistant", "content": "Yaklaşık 5,8 milyon — İstanbul'dan (15,6 milyon) çok daha az."}],
    [{"role": "user", "content": "def f(x):\n\treturn x**2  # square\n\nprint(f(12))"},
     {"role": "assistant", "content": "It prints `144`.\n\n```\n144\n```"},
     {"role": "user", "content": "Emoji 🦙 and CJK 我想 and   spaces\n\n\n?"}],
]
"""Conversations whose text exercises what pre-tokenizers disagree on: digits, punctuation runs,
apostrophes, non-Latin scripts, emoji, tabs and runs of spaces and newlines."""

HELD_OUT_PROMPTS = [
    "What is the capital of France?", "Name three primary colors.", "What is 12 times 7?",
    "Translate 'good morning' into Turkish.", "Write one sentence about the sea.",
    "What is the opposite of 'hot'?", "List the days of the week.", "Spell 'cat' backwards.",
    "Türkiye'nin başkenti neresidir?", "How many legs does a spider have?",
]


@dataclass
class LlamaCppCheck:
    """What llama.cpp did with the GGUF, against the Hugging Face model."""

    conversations: int = 0
    tokens_equal: int = 0
    prompts: int = 0
    answers_agree: int = 0
    first_tokens_agree: int = 0
    """Prompts whose answers start with the same token (where quantized types mostly still agree)."""
    answer_tokens: int = 0
    """Tokens of the Hugging Face model's answers, all prompts together (0 would make agreement empty)."""
    llama_cpp_answer_tokens: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    loaded: bool = True

    @property
    def agreement(self) -> float:
        """Share of prompts whose greedy answers are token for token the same."""
        return self.answers_agree / self.prompts if self.prompts else 1.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, agreement included."""
        return {**asdict(self), "agreement": self.agreement}


WORKER = "ayar.export.llamacpp_worker"


def in_llama_cpp(gguf_file: Path, what: str, **request: Any) -> dict[str, Any]:
    """Run a request of ayar.export.llamacpp_worker (tokenize, greedy, scores, end_of_generation) on the
    file in a child process; ``what`` names the file and its type in a crash's error (ConsumerCrash)."""
    return run_isolated(WORKER, {"gguf": str(gguf_file), **request}, "llama.cpp", what)


def gguf_token_ids(gguf_file: Path, texts: list[str]) -> list[list[int]]:
    """llama.cpp's ids for each text (special tokens parsed, no BOS), read from the file's vocabulary only."""
    return in_llama_cpp(gguf_file, f"the vocabulary of {gguf_file}", tokenize=texts)["tokens"]


@torch.inference_mode()
def hf_greedy(model: Any, prompt_ids: list[int], max_new_tokens: int, stops: list[int]) -> list[int]:
    """Greedy continuation with transformers, up to a stop id (excluded) or max_new_tokens."""
    # no repetition penalty, whatever generation_config.json says: llama_greedy runs without one
    new = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                         repetition_penalty=1.0, eos_token_id=stops, pad_token_id=stops[0])[0, len(prompt_ids):].tolist()
    return new[: next((i for i, t in enumerate(new) if t in stops), len(new))]


def check_gguf(gguf_file: Path, model: Any, tokenizer: Any, prompts: list[str] | None = None,
               conversations: list[list[dict[str, str]]] | None = None, max_new_tokens: int = 16,
               dtype: str = "") -> LlamaCppCheck:
    """Run both checks of the module docstring on ``gguf_file`` against ``model``/``tokenizer``; llama.cpp
    runs in a child process, so its crash raises ConsumerCrash naming the file and ``dtype``.

    prompts are prompt texts as the model sees them (chat template applied); by default HELD_OUT_PROMPTS
    rendered with the tokenizer's chat template.
    """
    stops = stop_token_ids(model, tokenizer)
    templated = bool(getattr(tokenizer, "chat_template", None))
    texts = [tokenizer.apply_chat_template(conversation, tokenize=False) if templated  # else plain text
             else "\n\n".join(m["content"] for m in conversation)
             for conversation in conversations or REFERENCE_CONVERSATIONS]
    if prompts is None:
        prompts = [render_prompt(tokenizer, [{"role": "user", "content": p}]) if templated else p
                   for p in HELD_OUT_PROMPTS]
    prompt_ids = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    reply = in_llama_cpp(gguf_file, f"{gguf_file} ({dtype or 'GGUF'})", tokenize=texts,
                         greedy={"prompts": prompt_ids, "max_new_tokens": max_new_tokens, "stops": stops})
    if "load_error" in reply:
        return LlamaCppCheck(mismatches=[{"load": reply["load_error"]}], loaded=False)
    result = LlamaCppCheck()
    for text, got in zip(texts, reply["tokens"], strict=True):
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
        result.conversations += 1
        result.tokens_equal += got == expected
        if got != expected:
            result.mismatches.append({"text": text, "transformers": len(expected), "llama.cpp": len(got)})
    model.eval()
    for prompt, ids, theirs in zip(prompts, prompt_ids, reply["greedy"], strict=True):
        ours = hf_greedy(model, ids, max_new_tokens, stops)
        result.prompts += 1
        result.answers_agree += ours == theirs
        result.answer_tokens += len(ours)
        result.llama_cpp_answer_tokens += len(theirs)
        result.first_tokens_agree += ours[:1] == theirs[:1]
        if ours != theirs:
            result.mismatches.append({"prompt": prompt, "transformers": tokenizer.decode(ours),
                                      "llama.cpp": tokenizer.decode(theirs)})
    return result
