"""Run folders as the pipeline leaves them, and the new-run form as rendered, for the UI's tests."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from ayar.eval.forgetting import compare
from ayar.recipe import ForgettingConfig, dump_recipe, validate_recipe


def forgetting_section(tuned_perplexity: float) -> dict[str, Any]:
    """metrics.json's forgetting section from the real gate: English general text at perplexity 10 for the
    base (the default bound is +25%)."""
    base = {"text": {"en": {"tokens": 512, "perplexity": 10.0}}, "answers": {}}
    tuned = {"text": {"en": {"tokens": 512, "perplexity": tuned_perplexity}}, "answers": {}}
    return compare(base, tuned, ForgettingConfig())


def write_run(root: Path, name: str, metrics: dict[str, Any] | None) -> Path:
    """A run folder with its recipe and, when given, its metrics.json (written after the recipe)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    dump_recipe(validate_recipe({"run": {"name": name}, "model": {"name_or_path": "x"}}), run_dir / "recipe.yaml")
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return run_dir


EVALUATED = {"base": {"perplexity": 9.0, "exact_match": 0.1}, "tuned": {"perplexity": 3.0, "exact_match": 0.4}}


VOID_TAGS = {"input", "br", "meta", "link", "img", "hr"}


class FormFields(HTMLParser):
    """The new-run page's inputs as rendered: one dict per input with its key, its method, whether its field
    is hidden, and the container holding it (``main-settings`` or a folded ``more-<section>``)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.inputs: list[dict[str, Any]] = []
        self.containers: dict[str, dict[str, str | None]] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("details", "fieldset") and found.get("id"):
            self.containers[str(found["id"])] = found
        if "data-key" in found:
            field = next(a for t, a in reversed(self.stack) if t == "div" and "field" in str(a.get("class")))
            container = next(a for t, a in reversed(self.stack) if t in ("details", "fieldset"))
            self.inputs.append({"key": found["data-key"], "method": field.get("data-method"),
                                "hidden": "hidden" in field, "in": container.get("id")})
        if tag not in VOID_TAGS:
            self.stack.append((tag, found))

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop()[0] != tag:
            pass
