"""`full` and `layers`: exactly the named parts train, everything else stays bitwise frozen."""

from __future__ import annotations

import re

import pytest
from method_helpers import (
    TASK_OF,
    assert_method_effects,
    assert_overfits,
    tiny_batch,
    tiny_model,
    trainable_names,
)

from ayar.errors import UsageError
from ayar.methods import build_method, check_method
from ayar.methods.base import count_parameters
from ayar.recipe import MethodConfig


def names_where(model, pattern: str) -> set[str]:
    return {name for name, _ in model.named_parameters() if re.search(pattern, name)}


def count_of(model, names: set[str]) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name in names)


@pytest.mark.parametrize("family", ["llama", "bert", "t5"])
def test_full_trains_everything(family: str) -> None:
    model = build_method("full").prepare_model(tiny_model(family), TASK_OF[family])
    trainable, total = count_parameters(model)
    assert trainable == total
    assert_method_effects(model, tiny_batch(family))


def test_full_loss_falls() -> None:
    assert_overfits(build_method("full").prepare_model(tiny_model("llama"), "causal_lm"), tiny_batch("llama"))


# (family, params, regex of parameter names that must train): the regexes spell out the intent by hand.
CASES = [
    ("llama", {}, r"^model\.layers\.[12]\.|^lm_head\."),  # defaults: the last two blocks and the head
    ("llama", {"blocks": 0, "head": False, "norms": True}, r"^model\.layers\.0\.|norm"),
    ("gpt2", {"blocks": None, "head": False, "norms": True}, r"\.ln_"),
    ("gpt2", {"blocks": "-1:", "head": False, "embeddings": True}, r"^transformer\.(h\.2\.|wte|wpe)"),
    ("bert", {"blocks": [0], "embeddings": True}, r"^bert\.encoder\.layer\.0\.|^bert\.embeddings\.|^classifier\.|^bert\.pooler\."),
    ("t5", {"blocks": "-1:", "head": False, "modules": [r"SelfAttention\.q\.weight$"]},
     r"^encoder\.block\.2\.|^decoder\.block\.1\.|SelfAttention\.q\.weight$"),
    ("llama_cls", {"blocks": "1:2"}, r"^model\.layers\.1\.|^score\."),
]


@pytest.mark.parametrize(("family", "params", "pattern"), CASES)
def test_layers_trains_exactly_what_is_named(family: str, params: dict, pattern: str) -> None:
    model = tiny_model(family)
    expected = names_where(model, pattern)
    model = build_method("layers", params).prepare_model(model, TASK_OF[family])
    assert trainable_names(model) == expected
    assert count_parameters(model)[0] == count_of(model, expected)
    assert_method_effects(model, tiny_batch(family))


def test_gpt2_head_trains_its_tied_embeddings() -> None:
    model = build_method("layers", {"blocks": None, "head": True}).prepare_model(tiny_model("gpt2"), "causal_lm")
    assert trainable_names(model) == {"transformer.wte.weight"}  # lm_head.weight is the same tensor


@pytest.mark.parametrize(("family", "params"), [("llama", {"blocks": "-1:"}), ("t5", {"blocks": "-1:"}),
                                                ("bert", {"blocks": "-1:"})])
def test_layers_loss_falls(family: str, params: dict) -> None:
    model = build_method("layers", params).prepare_model(tiny_model(family), TASK_OF[family])
    assert_overfits(model, tiny_batch(family))


@pytest.mark.parametrize(("params", "message"), [
    ({"blocks": "7"}, "out of range"),
    ({"blocks": "x:"}, "Python slice"),
    ({"modules": ["nothing_like_this"]}, "matches no parameter"),
    ({"blocks": None, "head": False}, "selects no parameter"),
])
def test_layers_mistakes_are_usage_errors(params: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_method("layers", params).prepare_model(tiny_model("llama"), "causal_lm")


def test_layers_bad_regex_fails_in_the_recipe() -> None:
    with pytest.raises(UsageError, match="method.modules"):
        check_method(MethodConfig(name="layers", modules=["("]))
