"""Interpolation toward the base (WiSE-FT, Wortsman et al., 2022): the fine-tune's change scaled by alpha.

weights = base + alpha * (tuned - base). For a LoRA adapter the change is B·A·(lora_alpha / r), so scaling
``lora_alpha`` (and every ``alpha_pattern`` entry) by alpha in ``adapter_config.json`` is the same
interpolation, and every reader of the folder (peft, `ayar generate`, `serve`, the HF and GGUF exports,
which merge through peft) applies it with no code of ours. A full fine-tune's weights are interpolated
tensor by tensor and saved back as safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ayar.errors import UsageError

ADAPTER_CONFIG = "adapter_config.json"
INTERPOLATION_FILE = "interpolation.json"
"""Beside the adapter: the alpha applied and the trained lora_alpha/alpha_pattern, so a second application
scales from the trained values (peft warns about keys of its config that it does not know, so not there)."""


def is_lora_folder(folder: Path) -> bool:
    """Whether the folder holds a LoRA adapter (peft's adapter_config.json with peft_type LORA)."""
    path = folder / ADAPTER_CONFIG
    return path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("peft_type") == "LORA"


def scale_adapter(folder: Path, alpha: float) -> dict[str, Any]:
    """Set the adapter's interpolation to ``alpha`` (relative to the trained adapter, not cumulative)."""
    path = folder / ADAPTER_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA":
        raise UsageError(f"train.interpolate scales LoRA adapters and full fine-tunes; {folder} holds a "
                         f"{config.get('peft_type')} adapter")
    record = folder / INTERPOLATION_FILE
    trained = (json.loads(record.read_text(encoding="utf-8")) if record.is_file()
               else {"lora_alpha": config["lora_alpha"], "alpha_pattern": dict(config.get("alpha_pattern") or {})})
    config["lora_alpha"] = trained["lora_alpha"] * alpha
    config["alpha_pattern"] = {k: v * alpha for k, v in trained["alpha_pattern"].items()}
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    record.write_text(json.dumps({**trained, "alpha": alpha}, indent=2), encoding="utf-8")
    return config


def interpolate_state(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                      alpha: float) -> dict[str, torch.Tensor]:
    """base + alpha * (tuned - base) for every floating tensor both have with one shape; others as tuned."""
    out = {}
    for name, weight in tuned.items():
        start = base.get(name)
        if start is not None and start.shape == weight.shape and weight.is_floating_point():
            out[name] = (start.float() + alpha * (weight.float() - start.float())).to(weight.dtype)
        else:
            out[name] = weight
    return out


def interpolate_full(folder: Path, base_state: dict[str, torch.Tensor], trained_state: dict[str, torch.Tensor],
                     alpha: float) -> None:
    """Write base + alpha * (trained - base) into the folder's single safetensors weights file."""
    files = sorted(folder.glob("*.safetensors"))
    if len(files) != 1:
        raise UsageError(f"train.interpolate on a full fine-tune needs one .safetensors file in {folder}, "
                         f"found {len(files)}")
    save_file(interpolate_state(base_state, trained_state, alpha), str(files[0]), metadata={"format": "pt"})


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors files, by name."""
    state: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(path)))
    if not state:
        raise UsageError(f"{folder} has no .safetensors weights to interpolate")
    return state
