"""Train only the parts a recipe names: block ranges, module patterns, embeddings, head, norms."""

from __future__ import annotations

import re

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from transformers import PreTrainedModel

from ayar.console import say
from ayar.errors import UsageError
from ayar.methods import register
from ayar.methods.base import Method
from ayar.methods.structure import (
    block_stacks,
    embedding_params,
    head_modules,
    norm_modules,
    parse_block_spec,
    set_trainable,
    trainable_summary,
)


class LayersParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blocks: list[str | int] | str | int | None = Field(
        "-2:",
        description="Transformer blocks to train, Python index/slice style per stack: '-2:' (last two), "
        "'0:4', 3, or a list of these. Encoder-decoders apply it to the encoder and the decoder each.",
    )
    modules: list[str] = Field(
        default_factory=list, description="Regular expressions; every parameter whose name matches trains."
    )
    embeddings: bool = Field(False, description="Train the input embeddings (token, position).")
    head: bool = Field(True, description="Train the task head (LM output layer or classifier).")
    norms: bool = Field(False, description="Train every normalisation layer.")

    @field_validator("modules")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"'{pattern}' is not a valid regular expression: {exc}") from None
        return patterns


def selected_params(model: torch.nn.Module, params: LayersParams) -> list[torch.nn.Parameter]:
    """The parameters the recipe names (deduplicated; tied weights count once)."""
    chosen: dict[int, torch.nn.Parameter] = {}

    def add(module_params: object) -> None:
        for p in module_params:  # type: ignore[attr-defined]
            chosen[id(p)] = p

    specs = params.blocks if isinstance(params.blocks, list) else ([] if params.blocks is None else [params.blocks])
    for _, stack in block_stacks(model):
        for spec in specs:
            for index in parse_block_spec(spec, len(stack)):
                add(stack[index].parameters())
    if params.head:
        for _, module in head_modules(model):
            add(module.parameters())
    if params.embeddings:
        add(embedding_params(model))
    if params.norms:
        for _, module in norm_modules(model):
            add(module.parameters())
    for pattern in params.modules:
        matched = [p for name, p in model.named_parameters() if re.search(pattern, name)]
        if not matched:
            raise UsageError(f"method.modules pattern '{pattern}' matches no parameter of {type(model).__name__}")
        add(matched)
    return list(chosen.values())


@register
class Layers(Method):
    name = "layers"
    summary = "Train only named blocks/modules (e.g. the top 2 blocks + head): cheap, keeps lower layers intact."
    params_model = LayersParams

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        chosen = selected_params(model, self.params)
        if not chosen:
            raise UsageError("method 'layers' selects no parameter: name blocks, modules, embeddings, head or norms")
        set_trainable(model, chosen)
        say(f"layers: {trainable_summary(model)}")
        return model
