"""Recipe sections for the base model: pretrained here from scratch (``pretrain``) or loaded (``model``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ayar.recipe.section import Section


class TokenizerTrainConfig(Section):
    vocab_size: int = Field(4096, ge=300, description="Byte-level BPE vocabulary size.")
    min_frequency: int = Field(2, ge=1, description="Minimum pair frequency for a BPE merge.")


class ScratchModelConfig(Section):
    architecture: Literal["llama", "gpt2"] = Field("llama", description="Config family built with from_config.")
    hidden_size: int = Field(256, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(688, ge=8)
    context_length: int = Field(256, ge=16, description="Maximum positions of the model.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ScratchModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self


class PretrainConfig(Section):
    """Pretrain a small base model from scratch (tokenizer and weights)."""

    enabled: bool = Field(False, description="Run the pretraining stage; its model becomes the base model.")
    corpus: str = Field(
        "pydoc_topics",
        description="'pydoc_topics' (CPython's own documentation text, offline) or a path to a .txt file/folder.",
    )
    tokenizer: TokenizerTrainConfig = Field(default_factory=TokenizerTrainConfig)
    model: ScratchModelConfig = Field(default_factory=ScratchModelConfig)
    window: int = Field(128, ge=8, description="Tokens per training window.")
    stride: int = Field(96, ge=1, description="Step between window starts (window - stride tokens overlap).")
    max_steps: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    precision: Literal["fp32", "bf16", "auto"] = Field("auto", description="auto: bf16 autocast where supported.")


class ModelConfig(Section):
    name_or_path: str | None = Field(
        None, description="Hub id or local folder. Empty: the model from the pretrain stage of this recipe."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(False, description="Run code shipped with the model. Off unless you trust it.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")
    num_labels: int | None = Field(None, ge=2, description="Classification: number of labels (inferred if empty).")
