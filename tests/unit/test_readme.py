"""The READMEs stay a newcomer's page: short, in step with each other, with a recipe that loads and links that resolve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ayar.methods import check_method
from ayar.recipe import validate_recipe

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_TR = ROOT / "README.tr.md"
LINE_LIMITS = {README: 250, README_TR: 280}
DOCS = sorted((ROOT / "docs").rglob("*.md"))
RESULTS = sorted((ROOT / "docs" / "results").glob("*.md"))

# References that mean something only to the people who built ayar, not to its readers.
INTERNAL_REFERENCE = re.compile(r"\bissues? #?\d+|\bprocess document|süreç belge", re.IGNORECASE)
# The READMEs and the dated results pages also name no working session.
SESSION_REFERENCE = re.compile(r"\bsessions?\b|\boturum", re.IGNORECASE)
# An upstream project's issue tracker is a citation, not an internal reference.
UPSTREAM_PROJECTS = ("llama.cpp", "transformers", "peft", "trl", "pytorch", "accelerate")
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _internal_references(text: str) -> list[str]:
    found = []
    for match in INTERNAL_REFERENCE.finditer(text):
        before = text[max(0, match.start() - 20):match.start()].rstrip().lower()
        if not before.endswith(UPSTREAM_PROJECTS):
            found.append(match.group(0))
    return found


def _yaml_blocks(path: Path) -> list[dict[str, Any]]:
    return [yaml.safe_load(block) for block in YAML_BLOCK.findall(path.read_text(encoding="utf-8"))]


def _relative_links(path: Path) -> list[str]:
    targets = MARKDOWN_LINK.findall(path.read_text(encoding="utf-8"))
    return [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:|#", t)]


def _is_subset(part: Any, whole: Any) -> bool:
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and _is_subset(v, whole[k]) for k, v in part.items())
    return part == whole


@pytest.mark.parametrize("path", LINE_LIMITS, ids=lambda p: p.name)
def test_readme_stays_within_its_line_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= LINE_LIMITS[path], f"{path.name} has {lines} lines (limit {LINE_LIMITS[path]})"


@pytest.mark.parametrize("path", [README, README_TR, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_internal_references(path: Path) -> None:
    assert _internal_references(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", [README, README_TR, *RESULTS], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_session_talk_in_readmes_and_results(path: Path) -> None:
    assert SESSION_REFERENCE.findall(path.read_text(encoding="utf-8")) == []


def test_internal_reference_check_catches_them_and_spares_upstream_trackers() -> None:
    assert _internal_references("as issue 18 asked; see the process document") == ["issue 18", "process document"]
    assert _internal_references("open upstream (llama.cpp issue 20824)") == []


@pytest.mark.parametrize("path", [README, README_TR], ids=lambda p: p.name)
def test_first_yaml_block_is_the_quickstart_recipe_and_loads(path: Path) -> None:
    blocks = _yaml_blocks(path)
    assert blocks, f"{path.name} has no ```yaml block"
    recipe = validate_recipe(blocks[0])  # the loader's own check: an unknown key raises UsageError
    check_method(recipe.method)  # the method's own keys (r, alpha, target_modules), as `ayar run` checks them
    shipped = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text(encoding="utf-8"))
    assert _is_subset(blocks[0], shipped), "the example differs from recipes/quickstart.yaml"


@pytest.mark.parametrize("path", [README, README_TR], ids=lambda p: p.name)
def test_every_yaml_block_is_a_valid_recipe(path: Path) -> None:
    for block in _yaml_blocks(path):
        check_method(validate_recipe(block).method)


@pytest.mark.parametrize("path", [README, README_TR, *RESULTS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(path: Path) -> None:
    links = _relative_links(path)
    assert links, f"{path.name} links to nothing"
    missing = [link for link in links if not (path.parent / link).exists()]
    assert missing == []


def test_turkish_readme_keeps_the_english_structure() -> None:
    def sections(path: Path) -> int:
        return len(re.findall(r"^## ", path.read_text(encoding="utf-8"), re.MULTILINE))

    assert sections(README_TR) == sections(README)
    assert len(_yaml_blocks(README_TR)) == len(_yaml_blocks(README))
