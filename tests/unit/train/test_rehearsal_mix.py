"""A supervised run mixes the prepared rehearsal rows into the train split, only when the recipe asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from ayar.data.prepare import PreparedData
from ayar.data.synthetic import generate_records, write_jsonl
from ayar.recipe import load_recipe
from ayar.train import engine, supervised


class Stop(Exception):
    """Raised by the patched tokenizer step: the records are all the test needs."""


@pytest.mark.parametrize(("rehearsal_on", "file_there", "expected"), [
    (True, True, 5 + 3), (False, True, 5), (True, False, 5)])
def test_train_records(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       rehearsal_on: bool, file_there: bool, expected: int) -> None:
    data = tmp_path / "data"
    write_jsonl(list(generate_records(8, seed=1, languages=["en"], tasks=["upper"]))[:5], data / "train.jsonl")
    write_jsonl([], data / "validation.jsonl")
    if file_there:
        write_jsonl([{"instruction": "Say hi.", "output": "Hi!", "task": "rehearsal"}] * 3, data / "rehearsal.jsonl")
    recipe = load_recipe(None, [f"model.name_or_path={tiny_model_dir}", f"run.output_dir={tmp_path}",
                                "data.template=alpaca", *(["data.rehearsal.share=0.3"] if rehearsal_on else [])])
    seen: list[list[dict]] = []

    def capture(records, *args, **kwargs):
        seen.append(records)
        raise Stop

    monkeypatch.setattr(supervised, "tokenize_split", capture)  # the supervised run kind tokenizes
    with pytest.raises(Stop):
        engine.train(recipe, str(tiny_model_dir), PreparedData(data), tmp_path / "run")
    assert len(seen[0]) == expected
    assert sum(r.get("task") == "rehearsal" for r in seen[0]) == expected - 5
