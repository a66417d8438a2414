"""Layers import downward only, and no two packages import each other (read from the source with ast).

recipe/errors/safety/tasks at the bottom, then data (with the run folder type), models, methods, train, eval, export, serve, then
pipeline (with iterate and sweep), ui and cli. A module may import its own package and any lower layer, at module level or
inside a function alike (a late import is still a dependency). Code named lazily as ``"ayar.x:function"``
(a task's parts, the serve engines) must exist, and only a task definition names a higher layer's code
(the layer that runs a task's part resolves it itself).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "ayar"
LAYERS = [{"errors", "recipe", "safety", "console", "tasks"}, {"data", "run_folder"}, {"models"}, {"methods"},
          {"train"}, {"eval"},
          {"export"}, {"serve"}, {"pipeline", "iterate", "sweep"}, {"ui"}, {"cli"}]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def unit_of(module: str) -> str:
    """The layer unit of ``ayar.x.y`` (``x``), or ``ayar`` for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ayar"


def imports() -> list[tuple[str, str, str]]:
    """(importing module, imported ayar module, file:line) for every ayar import in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue
            where = f"{path.relative_to(SRC)}:{node.lineno}"
            found += [(module, target, where) for target in targets if target.split(".")[0] == "ayar"]
    return found


def test_every_package_has_a_layer() -> None:
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert units <= set(LEVEL), f"give these a layer in this test and docs/architecture.md: {units - set(LEVEL)}"


def test_layers_import_downward_only() -> None:
    upward = sorted({(unit_of(a), unit_of(b), where) for a, b, where in imports()
                     if unit_of(a) in LEVEL and unit_of(b) in LEVEL and LEVEL[unit_of(b)] > LEVEL[unit_of(a)]})
    assert not upward, "\n".join(f"{a} imports {b} ({where})" for a, b, where in upward)


def lazy_names() -> list[tuple[str, str, str]]:
    """(naming module, named ``"ayar.x.y:function"``, file:line) for every such string in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"ayar(\.\w+)+:\w+", node.value):
                found.append((module, node.value, f"{path.relative_to(SRC)}:{node.lineno}"))
    return found


def test_lazily_named_code_exists() -> None:
    assert {named.split(":")[0] for _, named, _ in lazy_names()} >= {"ayar.train.tasks", "ayar.eval.tasks"}
    missing = []
    for _, named, where in lazy_names():
        module, function = named.split(":")
        parts = module.split(".")
        path = next((p for p in (SRC.joinpath(*parts).with_suffix(".py"), SRC.joinpath(*parts, "__init__.py"))
                     if p.is_file()), None)
        defined = set() if path is None else {
            node.name for node in ast.parse(path.read_text(encoding="utf-8")).body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
        if function not in defined:
            missing.append(f"{where}: {named}")
    assert not missing, "\n".join(missing)


def test_only_task_definitions_name_a_higher_layers_code() -> None:
    upward = sorted(f"{where}: {named}" for module, named, where in lazy_names()
                    if unit_of(module) != "tasks" and LEVEL[unit_of(named.split(":")[0])] > LEVEL[unit_of(module)])
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("package", sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()))
def test_no_module_cycle_inside_a_package(package: str) -> None:
    """Within a package, modules do not import each other in a circle (e.g. a report and its sections)."""
    edges: dict[str, set[str]] = {}
    for a, b, _ in imports():
        if unit_of(a) == package and unit_of(b) == package and a != b:
            edges.setdefault(a, set()).add(b)

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in edges.get(node, ()):
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen and (found := cycle_from(start, nxt, (*seen, nxt))):
                return found
        return None

    for module in edges:
        cycle = cycle_from(module, module, (module,))
        # A package's __init__ registering its submodules (methods discovery) is not a cycle of code.
        if cycle and f"ayar.{package}" not in cycle:
            raise AssertionError(" -> ".join(cycle))
