"""The child process of ayar.export.llamacpp: llama.cpp opens the GGUF here, so a native crash kills this
process only (see ayar.export.isolated). Request keys: ``gguf``, ``n_ctx``, and any of ``tokenize`` (texts),
``greedy`` ({prompts: [ids], max_new_tokens, stops}), ``scores`` (ids: the logits of every position),
``end_of_generation`` (true: the ids llama.cpp ends a generation at)."""

from __future__ import annotations

import os
from typing import Any

from ayar.export.isolated import worker_main


def open_gguf(gguf_file: str, n_ctx: int, vocab_only: bool) -> Any:
    """A llama.cpp model of the file, on the CPU, quiet, with the logits of every position kept."""
    from llama_cpp import Llama

    if vocab_only:  # the tokenizer alone, no weights
        return Llama(gguf_file, vocab_only=True, verbose=False)
    return Llama(gguf_file, n_ctx=n_ctx, n_threads=max(1, (os.cpu_count() or 2) - 1), logits_all=True,
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


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Answer the request (module docstring)."""
    decodes = any(request.get(key) for key in ("greedy", "scores"))
    try:
        llm = open_gguf(request["gguf"], request.get("n_ctx", 512), vocab_only=not decodes)
    except ValueError as exc:  # llama.cpp refused the file (its log, when verbose, says why)
        return {"load_error": str(exc)}
    reply: dict[str, Any] = {"tokens": [llama_tokens(llm, text) for text in request.get("tokenize", [])]}
    greedy = request.get("greedy")
    if greedy:
        reply["greedy"] = [llama_greedy(llm, ids, greedy["max_new_tokens"], greedy["stops"])
                           for ids in greedy["prompts"]]
    if request.get("scores"):
        llm.reset()
        llm.eval(request["scores"])
        reply["arrays"] = {"scores": llm.scores[: len(request["scores"])].copy()}
    if request.get("end_of_generation"):
        import llama_cpp

        vocab = llm._model.vocab
        reply["end_of_generation"] = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    llm.close()  # now, not at interpreter exit (where llama-cpp-python's __del__ can fail)
    return reply


if __name__ == "__main__":
    worker_main(handle)
