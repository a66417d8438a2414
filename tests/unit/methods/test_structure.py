"""Finding blocks, heads and layer groups generically across model families."""

from __future__ import annotations

import pytest
from method_helpers import tiny_model

from ayar.errors import UsageError
from ayar.methods.structure import block_stacks, head_modules, layer_groups, parse_block_spec, task_head_names

STACKS = {
    "llama": ["model.layers"],
    "gpt2": ["transformer.h"],
    "bert": ["bert.encoder.layer"],
    "t5": ["encoder.block", "decoder.block"],
}
HEADS = {"llama": ["lm_head"], "gpt2": ["lm_head"], "bert": ["classifier", "bert.pooler"], "t5": ["lm_head"],
         "llama_cls": ["score"]}


@pytest.mark.parametrize("family", sorted(STACKS))
def test_block_stacks_found_for_every_family(family: str) -> None:
    assert [name for name, _ in block_stacks(tiny_model(family))] == STACKS[family]


@pytest.mark.parametrize("family", sorted(HEADS))
def test_head_found_for_every_family(family: str) -> None:
    assert [name for name, _ in head_modules(tiny_model(family))] == HEADS[family]


def test_task_head_names_are_the_new_classifier_modules_only() -> None:
    assert task_head_names(tiny_model("bert")) == ["classifier"]
    assert task_head_names(tiny_model("llama_cls")) == ["score"]
    assert task_head_names(tiny_model("t5")) == []


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert", "t5"])
def test_layer_groups_partition_every_parameter_once(family: str) -> None:
    model = tiny_model(family)
    groups = layer_groups(model)
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert groups[0].name == "head"


def test_t5_groups_pair_encoder_and_decoder_blocks_from_the_top() -> None:
    names = [g.name for g in layer_groups(tiny_model("t5"))]
    # T5 ties its embeddings to the LM head, so they train with the head and form no group of their own.
    assert names == ["head", "blocks encoder.block.2,decoder.block.1", "blocks encoder.block.1,decoder.block.0",
                     "blocks encoder.block.0"]


def test_llama_groups_of_two_blocks() -> None:
    names = [g.name for g in layer_groups(tiny_model("llama"), blocks_per_group=2)]
    assert names == ["head", "blocks model.layers.1,model.layers.2", "blocks model.layers.0", "embeddings"]


@pytest.mark.parametrize(("spec", "expected"), [
    ("-2:", [2, 3]), (":2", [0, 1]), ("1:3", [1, 2]), ("::2", [0, 2]), (-1, [3]), ("0", [0]), ("5:", []),
])
def test_block_specs_follow_python_slices(spec: str | int, expected: list[int]) -> None:
    assert parse_block_spec(spec, 4) == expected


@pytest.mark.parametrize("spec", ["4", -5, "a:b", "1:2:3:4", "::0"])
def test_bad_block_specs_are_usage_errors(spec: str | int) -> None:
    with pytest.raises(UsageError):
        parse_block_spec(spec, 4)
