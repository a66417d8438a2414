"""Recipe schema: every shipped recipe validates; mistakes name the key; overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from ayar.errors import UsageError
from ayar.methods import check_method
from ayar.recipe import Recipe, apply_overrides, dump_recipe, load_recipe

RECIPES = sorted(Path(__file__).resolve().parents[2].joinpath("recipes").glob("*.yaml"))


def load_checked(path: Path | None, overrides: list[str]) -> Recipe:
    """What the CLI does: the schema, then the method's own keys (which the methods layer knows)."""
    recipe = load_recipe(path, overrides)
    check_method(recipe.method)
    return recipe


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path: Path) -> None:
    recipe = load_checked(path, [])
    assert recipe.run.name


def test_defaults_yaml_and_set_precedence(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("pretrain: {enabled: true}\ntrain: {learning_rate: 0.1, epochs: 2}\n")
    recipe = load_recipe(path, ["train.learning_rate=0.5"])
    assert recipe.train.learning_rate == 0.5  # --set beats YAML
    assert recipe.train.epochs == 2  # YAML beats the default
    assert recipe.train.batch_size == 8  # the default


def test_misspelled_key_names_it_and_suggests(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("pretrain: {enabled: true}\ntrain: {learning_rat: 0.1}\n")
    with pytest.raises(UsageError, match=r"unknown recipe key 'train.learning_rat' \(did you mean 'train.learning_rate'\?\)"):
        load_recipe(path)


def test_misspelled_section_and_method_param() -> None:
    with pytest.raises(UsageError, match="'trian'.*did you mean 'train'"):
        load_recipe(None, ["pretrain.enabled=true", "trian.epochs=1"])
    with pytest.raises(UsageError, match="'method.rank'"):
        load_checked(None, ["pretrain.enabled=true", "method.rank=4"])
    with pytest.raises(UsageError, match="unknown method 'lroa'.*did you mean 'lora'"):
        load_checked(None, ["pretrain.enabled=true", "method.name=lroa"])


@pytest.mark.parametrize(
    ("override", "key"),
    [("train.epochs=-1", "train.epochs"), ("train.batch_size=many", "train.batch_size"),
     ("data.split.train=0.9", "data.split"), ("train.precision=fp8", "train.precision"),
     ("method.r=0", "method.r")],
)
def test_wrong_type_or_impossible_value_names_the_key(override: str, key: str) -> None:
    with pytest.raises(UsageError, match=f"'{key}'"):
        load_checked(None, ["pretrain.enabled=true", override])


def test_a_recipe_needs_a_model() -> None:
    with pytest.raises(UsageError, match="model.name_or_path"):
        load_recipe(None, [])


def test_bad_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML at line"):
        load_recipe(broken)
    with pytest.raises(UsageError, match="dotted.key=value"):
        apply_overrides({}, ["noequals"])


def test_resolved_recipe_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPES[0], ["train.max_steps=7"])
    dump_recipe(recipe, tmp_path / "resolved.yaml")
    again = load_recipe(tmp_path / "resolved.yaml")
    assert again == recipe
    assert again.train.max_steps == 7


def test_the_schemas_allowed_values_each_have_their_implementation() -> None:
    """Where the code keeps its own table for a schema Literal (a priority order, a dtype map), they agree."""
    import typing

    from ayar.data.pii import PII_TYPES
    from ayar.models.load import DTYPES
    from ayar.recipe import ModelConfig, PiiConfig, PiiType

    assert set(PII_TYPES) == set(typing.get_args(PiiType)) == set(PiiConfig().types)
    assert set(DTYPES) == set(typing.get_args(ModelConfig.model_fields["dtype"].annotation))


def test_every_public_name_of_the_recipe_package_is_importable_from_ayar_recipe() -> None:
    """The schema lives in several modules; ``from ayar.recipe import X`` keeps working for every one of them."""
    import importlib
    import pkgutil

    import ayar.recipe

    modules = [importlib.import_module(f"ayar.recipe.{m.name}") for m in pkgutil.iter_modules(ayar.recipe.__path__)]
    defined = {name for module in modules for name, value in vars(module).items()
               if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__}
    assert {"Recipe", "DataConfig", "load_recipe", "params_error"} <= defined
    assert defined <= set(ayar.recipe.__all__)
    assert all(hasattr(ayar.recipe, name) for name in ayar.recipe.__all__)
