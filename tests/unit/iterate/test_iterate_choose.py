"""v2's method comes from the methods registry: a newly registered preference method is chosen and trained
on the feedback it fits, with no change to iterate."""

from __future__ import annotations

from pathlib import Path

import pytest

import ayar.methods as methods
from ayar.iterate import choose_method, training_records, v2_recipe
from ayar.methods.preference import PreferenceMethod, preference_methods
from ayar.recipe import load_recipe

RECORDS = {"sft": [{"instruction": "p1", "output": "good"}],
           "pairs": [{"prompt": "p1", "chosen": "good", "rejected": "bad"}],
           "kto": [{"prompt": "p2", "completion": "fine", "label": True}]}
ONLY_RATINGS = {"sft": 0, "pairs": 0, "kto": 1}
WITH_PAIRS = {"sft": 1, "pairs": 1, "kto": 1}
MODEL = "model.name_or_path=tiny-model"


@pytest.fixture
def fake_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pairwise and an unpaired preference method registered for this test only."""
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods.available_methods()))  # restored after the test

    @methods.register
    class FakePairs(PreferenceMethod):
        name = "fake_pairs"
        summary = "A pairwise preference method of this test."

    @methods.register
    class FakeRatings(PreferenceMethod):
        name = "fake_ratings"
        summary = "An unpaired preference method of this test."
        unpaired = True


def test_the_registry_lists_preference_methods_by_the_feedback_they_train_on() -> None:
    assert set(preference_methods(unpaired=False)) >= {"dpo", "orpo", "simpo"}
    assert set(preference_methods(unpaired=True)) >= {"kto"}
    assert not {"lora", "full", "guided_attention"} & set(preference_methods())
    assert set(preference_methods()) == set(preference_methods(unpaired=False)) | set(preference_methods(True))


def test_a_registered_pairwise_method_is_kept_for_pairs_and_trains_on_them(fake_methods: None,
                                                                          tmp_path: Path) -> None:
    v1 = load_recipe(None, [MODEL, "method.name=fake_pairs", "method.base=dora", "method.base_params={r: 4}"])
    assert "fake_pairs" in preference_methods(unpaired=False)
    assert choose_method(v1, WITH_PAIRS, None) == "fake_pairs"
    assert choose_method(v1, ONLY_RATINGS, None) == "kto"  # ratings alone: it cannot train on them
    assert choose_method(v1, {"sft": 1, "pairs": 0, "kto": 0}, None) == "dora"  # corrections: its base, SFT
    assert training_records("fake_pairs", RECORDS) == RECORDS["pairs"]
    v2 = v2_recipe(v1, "run-v2", tmp_path, "fake_pairs", [])
    assert v2.data.format == "preference" and v2.method.params() == {"base": "dora", "base_params": {"r": 4}}
    sft = v2_recipe(v1, "run-v2", tmp_path, "dora", [])
    assert sft.data.format == "alpaca" and sft.method.params() == {"r": 4}


def test_a_registered_unpaired_method_is_kept_for_ratings_and_trains_on_pairs_and_ratings(fake_methods: None,
                                                                                         tmp_path: Path) -> None:
    v1 = load_recipe(None, [MODEL, "method.name=fake_ratings"])
    assert choose_method(v1, ONLY_RATINGS, None) == "fake_ratings"
    assert choose_method(v1, WITH_PAIRS, None) == "fake_ratings"
    assert training_records("fake_ratings", RECORDS) == RECORDS["pairs"] + RECORDS["kto"]
    assert v2_recipe(v1, "run-v2", tmp_path, "fake_ratings", []).data.format == "kto"
    lora = load_recipe(None, [MODEL, "method.name=lora", "method.r=8"])
    v2 = v2_recipe(lora, "run-v2", tmp_path, "fake_ratings", [])  # a LoRA v1's settings become the base
    assert v2.method.params() == {"base": "lora", "base_params": {"r": 8}}


def test_an_unregistered_name_is_no_preference_method() -> None:
    v1 = load_recipe(None, [MODEL, "method.name=fake_pairs"])
    assert choose_method(v1, WITH_PAIRS, None) == "dpo"  # not registered: pairs call for DPO
    assert choose_method(v1, {"sft": 1, "pairs": 0, "kto": 0}, None) == "fake_pairs"
    assert training_records("fake_pairs", RECORDS) == RECORDS["sft"]
    assert choose_method(v1, WITH_PAIRS, "orpo") == "orpo"  # iterate.method wins
