"""ONNX export of a merged LoRA run: onnxruntime's logits and greedy tokens against PyTorch's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ayar.export import export_model, load_merged
from ayar.export.onnx import LOGITS_ATOL, OnnxDecoder, verify_onnx

# prompts of neither the run's test split nor the exporter's own check
PROMPTS = ["Kısa bir şiir yaz.", "List three animals that live in the sea, please."]


@pytest.fixture(scope="module")
def onnx_export(adapter_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(adapter_run, tmp_path_factory.mktemp("onnx") / "out", "onnx")


@pytest.fixture(scope="module")
def merged(adapter_run: Path) -> tuple:
    model, tokenizer = load_merged(adapter_run / "model")
    return model.float().eval(), tokenizer


def test_folder_holds_the_graph_tokenizer_and_its_check(onnx_export: Path, adapter_run: Path) -> None:
    folder = onnx_export.parent
    assert onnx_export.name == "model.onnx"
    for name in ("tokenizer.json", "config.json", "generation_config.json", "onnx_export.json"):
        assert (folder / name).is_file(), name
    info = json.loads((folder / "onnx_export.json").read_text())
    check = info["verification"]
    assert check["passed"] and check["prompts"] == 3  # the run's three held-out records
    assert "Bir cümle yaz." in check["generations"][0]["prompt"]  # in the alpaca template
    assert check["max_abs_logits_diff"] <= LOGITS_ATOL
    names = [i["name"] for i in info["inputs"]]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert "past_key_values.1.value" in names and "present.1.value" in [o["name"] for o in info["outputs"]]


def test_logits_match_pytorch_on_a_padded_batch(onnx_export: Path, merged: tuple) -> None:
    import onnxruntime

    model, tokenizer = merged
    tokenizer.padding_side = "left"
    batch = tokenizer([tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                     add_generation_prompt=True) for p in PROMPTS],
                      return_tensors="pt", padding=True, add_special_tokens=False)
    mask = batch["attention_mask"]
    assert (mask == 0).any()  # the shorter prompt is left-padded
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        reference = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions).logits.numpy()
    session = onnxruntime.InferenceSession(str(onnx_export), providers=["CPUExecutionProvider"])
    feed = {"input_ids": batch["input_ids"].numpy(), "attention_mask": mask.numpy(),
            "position_ids": positions.numpy()}
    for spec in session.get_inputs()[3:]:
        feed[spec.name] = np.zeros((2, spec.shape[1], 0, spec.shape[3]), dtype=np.float32)  # no past yet
    logits = session.run(["logits"], feed)[0]
    real = mask.numpy().astype(bool)
    assert np.abs(logits - reference)[real].max() <= LOGITS_ATOL


def test_greedy_generation_with_the_kv_cache_matches_generate(onnx_export: Path, merged: tuple) -> None:
    model, tokenizer = merged
    decoder = OnnxDecoder(onnx_export)
    for prompt in PROMPTS:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            expected = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=12, min_new_tokens=12,
                                      pad_token_id=tokenizer.eos_token_id)[0, len(ids):].tolist()
        assert decoder.greedy(ids, 12, eos=set()) == expected


def test_verification_catches_a_graph_that_differs(onnx_export: Path, merged: tuple, adapter_run: Path) -> None:
    from ayar.models.load import load_for_inference

    other, tokenizer = load_for_inference(adapter_run / "model")  # the adapter unmerged is the same model...
    with torch.no_grad():
        for param in other.parameters():
            param.add_(0.05 * torch.randn_like(param))  # ...until its weights move
    check = verify_onnx(other.float().eval(), tokenizer, onnx_export, PROMPTS, max_new_tokens=4)
    assert not check["passed"] and check["max_abs_logits_diff"] > LOGITS_ATOL
