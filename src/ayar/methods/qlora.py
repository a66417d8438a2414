"""QLoRA: the base loaded in 4-bit NF4 (or 8-bit) through bitsandbytes, LoRA adapters trained on top."""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

import torch
from peft import prepare_model_for_kbit_training
from pydantic import Field, field_validator
from transformers import BitsAndBytesConfig, PreTrainedModel

from ayar.errors import UsageError
from ayar.methods import register
from ayar.methods.base import Method
from ayar.methods.lora import LoraOptions, LoraParams, lora_config, wrap_peft

COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class QLoraParams(LoraParams):
    bits: Literal[4, 8] = Field(4, description="Bits per base weight: 4 (QLoRA) or 8 (LLM.int8).")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 suits normal weights.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (saves ~0.4 bit/weight).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="dtype of the matrix products on the de-quantized weights."
    )

    @field_validator("init_lora_weights")
    @classmethod
    def _init_keeps_the_quantized_base(cls, value: bool | str) -> bool | str:
        # PiSSA/OLoRA rewrite each base weight; on a quantized base the adapter converted for the original
        # weights no longer matches (Quant(W - AB) + AB differs from Quant(W)), so the saved model would drift
        if isinstance(value, str) and (value.startswith("pissa") or value == "olora"):
            raise ValueError(f"{value} rewrites the base weights, which a 4/8-bit base cannot take back exactly; "
                             "use method.name: lora with init_lora_weights: pissa/olora, or true/gaussian here")
        return value


def require_cuda_and_bitsandbytes(method: str) -> None:
    """Stop with one clear line where k-bit loading cannot work (no CUDA GPU, no bitsandbytes)."""
    if not torch.cuda.is_available():
        raise UsageError(f"method '{method}' loads the base model in 4/8-bit with bitsandbytes, which needs a CUDA "
                         "GPU, and this machine has none; use method.name: lora (same adapters, full-precision base)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UsageError(f"method '{method}' needs the bitsandbytes package: pip install 'bitsandbytes>=0.45'")


def quantization_config(params: QLoraParams) -> BitsAndBytesConfig:
    """The bitsandbytes loading config for the recipe's parameters."""
    if params.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=params.quant_type,
        bnb_4bit_use_double_quant=params.double_quant,
        bnb_4bit_compute_dtype=COMPUTE_DTYPES[params.compute_dtype],
    )


@register
class QLora(LoraOptions, Method):
    name = "qlora"
    summary = "LoRA on a 4-bit NF4 (or 8-bit) base: the largest model that fits one GPU; needs CUDA."
    params_model = QLoraParams
    is_adapter = True

    def preflight(self, task: str) -> None:
        super().preflight(task)
        require_cuda_and_bitsandbytes(self.name)

    def model_load_kwargs(self, task: str) -> dict[str, Any]:
        self.preflight(task)
        return {"quantization_config": quantization_config(self.params),
                "device_map": {"": torch.cuda.current_device()}}

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        if not (getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)):
            raise UsageError("method 'qlora' got a full-precision model: load it with method.model_load_kwargs() "
                             "(a bitsandbytes quantization config)")
        # Gradient checkpointing stays the recipe's choice (train.gradient_checkpointing).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        config = lora_config(model, task, self.params, use_dora=False, own_trainer=True)
        return self.remember_initial_adapter(wrap_peft(model, config, self.name))
