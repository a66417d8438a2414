"""GGUF exports in real llama.cpp (llama-cpp-python, installed by `make test`'s install step): a fine-tuned
model tokenizes reference conversations exactly as transformers does and answers held-out prompts greedily
as the Hugging Face model does; quantized files load and answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ayar.eval.generate import stop_token_ids
from ayar.export import export_model, load_merged
from ayar.export.llamacpp import REFERENCE_CONVERSATIONS, check_gguf, llama_greedy, llama_tokens, open_gguf


def _tuned(base_dir: Path, out: Path, targets: list[str], scale: float) -> Path:
    """A LoRA adapter with random (non-zero) B matrices on base_dir: a stand-in for a fine-tune."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_tuned(chatml_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tuned(chatml_model_dir, tmp_path_factory.mktemp("tiny_tuned"), ["q_proj", "v_proj", "down_proj"], 1.0)


def _info(path: Path) -> dict:
    return json.loads((path.parent / "gguf_export.json").read_text())


def test_tiny_fine_tune_in_llama_cpp_tokenizes_and_computes_as_transformers(tiny_tuned: Path, tmp_path: Path) -> None:
    path = export_model(tiny_tuned, tmp_path / "f32", fmt="gguf", gguf_dtype="f32")
    check = _info(path)["llama_cpp_check"]
    assert check["passed"] and check["tokens_equal"] == check["conversations"] == len(REFERENCE_CONVERSATIONS)
    assert check["answers_agree"] == check["prompts"] > 0
    # the same logits at every position of a conversation (the adapter merged in, q/k layout right)
    model, tokenizer = load_merged(tiny_tuned)
    text = tokenizer.apply_chat_template(REFERENCE_CONVERSATIONS[1], tokenize=False)
    llm = open_gguf(path)
    ids = llama_tokens(llm, text)
    llm.reset()
    llm.eval(ids)
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(llm.scores[: len(ids)] - expected).max() < 1e-3
    # the answer ends at the template's <|im_end|> in llama.cpp too
    prompt = llama_tokens(llm, tokenizer.apply_chat_template([{"role": "user", "content": "merhaba"}],
                                                             tokenize=False, add_generation_prompt=True))
    assert 0 < len(llama_greedy(llm, prompt, 12, stop_token_ids(model, tokenizer))) < 12


def test_tiny_fine_tune_f16_agrees_and_4_bit_loads_and_answers(tiny_tuned: Path, tmp_path: Path) -> None:
    f16 = export_model(tiny_tuned, tmp_path / "f16", fmt="gguf", gguf_dtype="f16")
    check = _info(f16)["llama_cpp_check"]
    print(f"tiny f16: greedy agreement {check['answers_agree']}/{check['prompts']}")
    assert check["passed"] and check["agreement"] >= 0.9
    q4 = export_model(tiny_tuned, tmp_path / "q4", fmt="gguf", gguf_dtype="q4_k_m")
    check = _info(q4)["llama_cpp_check"]
    print(f"tiny q4_k_m: greedy agreement {check['answers_agree']}/{check['prompts']}")
    assert check["tokens_equal"] == check["conversations"] and check["agreement_floor"] is None
    assert q4.stat().st_size < f16.stat().st_size


@pytest.mark.slow
def test_smollm2_fine_tune_f16_agrees_with_transformers_and_q8_0_answers(smollm2_dir: Path, tmp_path: Path) -> None:
    tuned = _tuned(smollm2_dir, tmp_path / "tuned", ["q_proj", "v_proj"], 0.05)
    f16 = export_model(tuned, tmp_path / "f16", fmt="gguf", gguf_dtype="f16")
    check = _info(f16)["llama_cpp_check"]
    print(f"SmolLM2 f16: greedy agreement {check['answers_agree']}/{check['prompts']}; "
          f"mismatches {check['mismatches']}")
    assert check["tokens_equal"] == check["conversations"] == len(REFERENCE_CONVERSATIONS)
    assert check["passed"] and check["agreement"] >= 0.9
    assert "<|im_end|>" in (f16.parent / "Modelfile").read_text()
    q8 = export_model(tuned, tmp_path / "q8", fmt="gguf", gguf_dtype="q8_0", verify=False)
    model, tokenizer = load_merged(tuned)
    q8_check = check_gguf(q8, model, tokenizer, max_new_tokens=8)
    print(f"SmolLM2 q8_0: greedy agreement {q8_check.answers_agree}/{q8_check.prompts}")
    assert q8_check.tokens_equal == q8_check.conversations
    assert q8_check.agreement >= 0.5  # it answers, and mostly as the f32 model does
    assert q8.stat().st_size < 0.6 * f16.stat().st_size
