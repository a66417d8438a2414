"""Which method trains v2, and on which of the feedback records.

The preference methods and the feedback each trains on (pairs, or single answers labelled good or bad)
come from the methods registry, so a new preference method module is chosen here with no change.
"""

from __future__ import annotations

from typing import Any

from ayar.iterate.feedback import Records
from ayar.recipe import Recipe

# What v2 trains with when the recipe's own method does not fit the feedback (IterateConfig.method documents
# these): pairs call for DPO, ratings alone for KTO.
FOR_PAIRS = "dpo"
FOR_RATINGS = "kto"


def _preference_methods(unpaired: bool | None = None) -> dict[str, Any]:
    # imported here: the methods registry imports torch, which `import ayar.iterate` does not need
    from ayar.methods.preference import preference_methods

    return preference_methods(unpaired)


def is_preference_method(name: str) -> bool:
    """True when ``name`` is a registered preference method (trained on pairs or labelled answers)."""
    return name in _preference_methods()


def preference_data_format(name: str) -> str | None:
    """The ``data.format`` a registered preference method trains on; None for any other method."""
    method = _preference_methods().get(name)
    return method.data_format() if method else None


def choose_method(recipe: Recipe, counts: dict[str, int], wanted: str | None) -> str:
    """The v2 method: the one asked for, else the recipe's if the feedback fits it, else what the data calls for."""
    if wanted:
        return wanted
    v1 = recipe.method.name
    if counts["pairs"]:
        return v1 if is_preference_method(v1) else FOR_PAIRS
    if counts["kto"]:
        return v1 if v1 in _preference_methods(unpaired=True) else FOR_RATINGS
    if is_preference_method(v1):  # corrections alone: supervised fine-tuning on the v1 method's base
        return recipe.method.params().get("base", "lora")
    return v1


def training_records(method: str, records: Records) -> list[dict[str, Any]]:
    """What the v2 method trains on: pairs (a pairwise preference method), pairs and ratings (an unpaired one,
    KTO) or corrections (any other method: SFT)."""
    preference = _preference_methods()
    if method not in preference:
        return records["sft"]
    return records["pairs"] + records["kto"] if preference[method].unpaired else records["pairs"]
