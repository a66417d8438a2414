"""Check an exported GGUF in real llama.cpp (through llama-cpp-python) against the Hugging Face model.

Two checks, because a GGUF can load fine and still be wrong: llama.cpp picks its pre-tokenizer by the
name stored in the file, and a wrong name tokenizes differently without any error. So (1) every reference
conversation, rendered with the saved chat template, must tokenize to transformers' ids, and (2) greedy
answers to held-out prompts are compared token for token with the Hugging Face model's.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ayar.data.templates import render_prompt
from ayar.eval.generate import stop_token_ids

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


def open_gguf(gguf_file: Path, n_ctx: int = 512) -> Any:
    """A llama.cpp model of the file, on the CPU, quiet, with the logits of every position kept."""
    from llama_cpp import Llama

    return Llama(str(gguf_file), n_ctx=n_ctx, n_threads=max(1, (os.cpu_count() or 2) - 1), logits_all=True,
                 verbose=False, seed=0)


def llama_tokens(llm: Any, text: str) -> list[int]:
    """llama.cpp's ids for the text, special tokens parsed, no BOS added (the template writes its own)."""
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def llama_greedy(llm: Any, prompt_ids: list[int], max_new_tokens: int, stops: list[int]) -> list[int]:
    """Greedy continuation in llama.cpp, up to a stop id (excluded) or max_new_tokens."""
    out: list[int] = []
    for token in llm.generate(prompt_ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        if token in stops or len(out) >= max_new_tokens:
            break
        out.append(token)
    return out


@torch.inference_mode()
def hf_greedy(model: Any, prompt_ids: list[int], max_new_tokens: int, stops: list[int]) -> list[int]:
    """Greedy continuation with transformers, up to a stop id (excluded) or max_new_tokens."""
    # no repetition penalty, whatever generation_config.json says: llama_greedy runs without one
    new = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                         repetition_penalty=1.0, eos_token_id=stops, pad_token_id=stops[0])[0, len(prompt_ids):].tolist()
    return new[: next((i for i, t in enumerate(new) if t in stops), len(new))]


def check_gguf(gguf_file: Path, model: Any, tokenizer: Any, prompts: list[str] | None = None,
               conversations: list[list[dict[str, str]]] | None = None, max_new_tokens: int = 16) -> LlamaCppCheck:
    """Run both checks of the module docstring on ``gguf_file`` against ``model``/``tokenizer``.

    prompts are prompt texts as the model sees them (chat template applied); by default HELD_OUT_PROMPTS
    rendered with the tokenizer's chat template.
    """
    try:
        llm = open_gguf(gguf_file)
    except ValueError as exc:  # llama.cpp refused the file (its log, when verbose, says why)
        return LlamaCppCheck(mismatches=[{"load": str(exc)}], loaded=False)
    stops = stop_token_ids(model, tokenizer)
    result = LlamaCppCheck()
    templated = bool(getattr(tokenizer, "chat_template", None))
    for conversation in conversations or REFERENCE_CONVERSATIONS:
        text = (tokenizer.apply_chat_template(conversation, tokenize=False) if templated  # else plain text
                else "\n\n".join(m["content"] for m in conversation))
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
        got = llama_tokens(llm, text)
        result.conversations += 1
        result.tokens_equal += got == expected
        if got != expected:
            result.mismatches.append({"text": text, "transformers": len(expected), "llama.cpp": len(got)})
    if prompts is None:
        prompts = [render_prompt(tokenizer, [{"role": "user", "content": p}]) if templated else p
                   for p in HELD_OUT_PROMPTS]
    model.eval()
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ours, theirs = hf_greedy(model, ids, max_new_tokens, stops), llama_greedy(llm, ids, max_new_tokens, stops)
        result.prompts += 1
        result.answers_agree += ours == theirs
        result.answer_tokens += len(ours)
        result.llama_cpp_answer_tokens += len(theirs)
        result.first_tokens_agree += ours[:1] == theirs[:1]
        if ours != theirs:
            result.mismatches.append({"prompt": prompt, "transformers": tokenizer.decode(ours),
                                      "llama.cpp": tokenizer.decode(theirs)})
    return result
