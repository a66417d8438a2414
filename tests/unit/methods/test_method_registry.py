"""Every method is registered with a one-line summary and has a valid example recipe and a docs section."""

from __future__ import annotations

from pathlib import Path

import pytest

from ayar.methods import available_methods
from ayar.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[3]
EXPECTED = {"full", "layers", "gradual_unfreeze", "transfer", "lora", "dora", "ia3", "prompt_tuning",
            "prefix_tuning", "p_tuning", "qlora"}
ADVANCED = {"distill", "reweight", "alum", "guided_attention"}  # documented in docs/advanced-methods.md


def test_every_method_is_registered_with_a_one_line_summary() -> None:
    methods = available_methods()
    assert set(methods) >= EXPECTED | ADVANCED
    for name in EXPECTED | ADVANCED:
        summary = methods[name].summary
        assert summary and "\n" not in summary and len(summary) <= 110, name


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("method-*.yaml")), ids=lambda p: p.stem)
def test_method_recipes_validate(path: Path) -> None:
    recipe = load_recipe(path, ["train.max_steps=2", "pretrain.max_steps=2"])
    assert path.stem == f"method-{recipe.method.name.replace('_', '-')}"


def test_every_method_has_a_docs_section_and_a_recipe() -> None:
    docs = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    recipes = {p.stem.removeprefix("method-").replace("-", "_") for p in (ROOT / "recipes").glob("method-*.yaml")}
    for name in EXPECTED:
        assert f"\n## {name}\n" in docs, name
        assert name in recipes or name in ("full", "lora"), name  # lora: quickstart.yaml, from-scratch.yaml; full: no keys
    advanced = (ROOT / "docs" / "advanced-methods.md").read_text(encoding="utf-8")
    for name in ADVANCED:
        assert f"\n## {name}\n" in advanced and name in recipes, name


def test_default_preflight_refuses_an_unsupported_task() -> None:
    from ayar.errors import UsageError
    from ayar.methods.base import Method

    class DecoderOnly(Method):
        name = "decoder_only"
        tasks = ("causal_lm",)

    DecoderOnly().preflight("causal_lm")
    with pytest.raises(UsageError, match="does not support task 'seq2seq'"):
        DecoderOnly().preflight("seq2seq")


def test_a_name_or_former_name_cannot_be_taken_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    from ayar import methods
    from ayar.methods.base import Method

    monkeypatch.setattr(methods, "_REGISTRY", dict(methods.available_methods()))  # restored after the test
    monkeypatch.setattr(methods, "_FORMER_NAMES", dict(methods._FORMER_NAMES))
    assert methods.current_name("gate") == "guided_attention" and methods.current_name("lora") == "lora"

    class FormerlyLora(Method):
        name = "formerly_lora"
        former_names = ("lora",)

    class NamedLikeAFormerName(Method):
        name = "gate"

    for cls, name in [(FormerlyLora, "lora"), (NamedLikeAFormerName, "gate")]:
        with pytest.raises(ValueError, match=f"'{name}' is registered twice"):
            methods.register(cls)
    assert "formerly_lora" not in methods._REGISTRY and methods.current_name("gate") == "guided_attention"
