"""Export tests' models: a tiny run folder whose model is a LoRA adapter (export merges it), and a GPT-2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HELDOUT = [
    {"instruction": "Bir cümle yaz.", "input": "", "output": "Deniz mavi."},
    {"instruction": "What is 2 + 2?", "input": "", "output": "4"},
    {"instruction": "Name a colour.", "input": "kırmızı mı?", "output": "Red."},
]


@pytest.fixture(scope="session")
def adapter_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<run>/model`` holds a LoRA adapter with non-zero deltas on a tiny Llama; ``<run>/data/test.jsonl``
    the held-out records the ONNX check takes its prompts from."""
    from peft import LoraConfig, get_peft_model

    from ayar.data.templates import set_template
    from ayar.models.load import load_tokenizer

    root = tmp_path_factory.mktemp("onnx_run")
    base = root / "base"
    tokenizer = load_tokenizer(str(tiny_model_dir))
    set_template(tokenizer, "alpaca")
    tokenizer.save_pretrained(base)
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(base)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                      init_lora_weights=False))
    run = root / "run"
    model.save_pretrained(run / "model")
    AutoTokenizer.from_pretrained(base).save_pretrained(run / "model")
    (run / "data").mkdir()
    (run / "data" / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in HELDOUT),
                                             encoding="utf-8")
    return run
