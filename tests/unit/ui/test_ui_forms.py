"""The new-run form's fields: which the current choices leave unused."""

from __future__ import annotations

from ayar.ui.forms import (
    MAIN_KEYS,
    FormField,
    example_recipes,
    filled_fields,
    is_unused,
    load_example,
    recipe_fields,
    section_switches,
)


def test_section_switches_are_the_enabled_keys_of_the_sections_holding_a_key() -> None:
    switches = {"pretrain.enabled", "eval.judge.enabled", "export.enabled"}
    assert section_switches("pretrain.model.hidden_size", switches) == ["pretrain.enabled"]
    assert section_switches("eval.judge.url", switches) == ["eval.judge.enabled"]
    assert section_switches("pretrain.enabled", switches) == []  # the switch itself stays usable
    assert section_switches("train.max_steps", switches) == []


def test_fields_of_a_switched_off_section_and_of_other_methods_are_unused() -> None:
    values = {"method.name": "lora", "pretrain.enabled": "false", "eval.judge.enabled": "true"}
    assert is_unused(FormField("pretrain.max_steps", "number"), values)
    assert not is_unused(FormField("pretrain.enabled", "bool"), values)
    assert not is_unused(FormField("eval.judge.url", "string"), values)
    assert is_unused(FormField("method.beta", "number", method="dpo"), values)
    assert not is_unused(FormField("method.r", "number", method="lora"), values)
    assert not is_unused(FormField("train.max_steps", "number"), values)


def test_the_main_keys_are_fields_of_the_schema() -> None:
    keys = {f.key for f in recipe_fields()}
    assert keys >= MAIN_KEYS
    assert len(keys) > 5 * len(MAIN_KEYS)  # the main ones are a few of many


def test_an_example_without_pretraining_leaves_the_pretrain_section_unused() -> None:
    fields = filled_fields(load_example(example_recipes()["quickstart"]))  # a hub model, no pretraining
    values = {f.key: f.value for f in fields if f.method is None}
    assert values["pretrain.enabled"] == "false"
    pretrain = [f for f in fields if f.key.startswith("pretrain.") and f.key != "pretrain.enabled"]
    assert pretrain and all(is_unused(f, values) for f in pretrain)
