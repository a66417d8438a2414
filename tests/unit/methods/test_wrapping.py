"""Wrapping methods (distill, reweight, alum, guided_attention) hand every hook but the loss to their base method."""

from __future__ import annotations

import inspect

import pytest

from ayar.methods import available_methods, build_method
from ayar.methods.base import Method
from ayar.methods.wrapping import WrappingMethod, wrapping_methods

OWN_HOOKS = {"compute_loss", "extra_loss"}  # the wrapper's own: what it exists to change


def method_hooks() -> set[str]:
    """Every overridable hook of the Method interface, read from the class (not a hand-kept list)."""
    return {name for name, member in vars(Method).items()
            if inspect.isfunction(member) and not name.startswith("_")}


def test_wrapping_method_forwards_every_hook_but_the_loss() -> None:
    forwarded = {name for name in method_hooks() if name in vars(WrappingMethod)}
    assert forwarded == method_hooks() - OWN_HOOKS


def test_the_wrappers_are_derived_from_the_registry() -> None:
    expected = {name for name, cls in available_methods().items() if issubclass(cls, WrappingMethod)}
    assert set(wrapping_methods()) == expected and {"distill", "reweight", "alum", "guided_attention"} <= expected


@pytest.mark.parametrize("name", ["distill", "reweight", "alum", "guided_attention"])
def test_a_wrapper_over_lora_keeps_loras_bf16_frozen_storage(name: str) -> None:
    params = {"base": "lora", "base_params": {"r": 2}}
    if name == "distill":
        params["teacher"] = "unused-teacher"
    wrapped, plain = build_method(name, params), build_method("lora", {"r": 2})
    assert plain.frozen_weights_matmul_only
    assert wrapped.frozen_weights_matmul_only is True
    assert build_method(name, {**params, "base": "full", "base_params": {}}).frozen_weights_matmul_only is False


def test_a_wrapper_cannot_wrap_a_wrapper() -> None:
    from ayar.methods.wrapping import check_base_method

    with pytest.raises(ValueError, match="prepares the model"):
        check_base_method("alum", {})
