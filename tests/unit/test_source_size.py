"""Source stays in small units (read from the source with ast): no module past 450 lines, and at most two
functions past 60 lines in the whole package, each under a comment that says why it is one piece."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "ayar"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
LONG_FUNCTIONS_ALLOWED = 2


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def long_functions(path: Path, root: Path = SRC) -> list[tuple[str, int, bool]]:
    """(``file:line name``, length, has a comment above) of every function or method of a module longer
    than MAX_FUNCTION_LINES; nested functions count on their own as well."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                commented = first > 1 and lines[first - 2].lstrip().startswith("#")
                found.append((f"{path.relative_to(root)}:{node.lineno} {node.name}", length, commented))
    return found


def test_the_package_has_modules_to_measure() -> None:
    assert len(modules()) > 50  # a wrong SRC would pass every bound below on no files at all


def test_no_module_is_longer_than_the_limit() -> None:
    lengths = {path.relative_to(SRC): len(path.read_text(encoding="utf-8").splitlines()) for path in modules()}
    over = sorted(f"{path} ({lines} lines)" for path, lines in lengths.items() if lines > MAX_MODULE_LINES)
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them by concern):\n" + "\n".join(over)


def test_at_most_two_functions_are_long_and_each_says_why() -> None:
    found = sorted(item for path in modules() for item in long_functions(path))
    listed = "\n".join(f"{where} ({length} lines)" for where, length, _ in found)
    assert len(found) <= LONG_FUNCTIONS_ALLOWED, (
        f"{len(found)} functions over {MAX_FUNCTION_LINES} lines, at most {LONG_FUNCTIONS_ALLOWED} allowed:\n{listed}")
    silent = [where for where, _, commented in found if not commented]
    assert not silent, f"a function over {MAX_FUNCTION_LINES} lines needs a comment right above it saying why: {silent}"


def test_the_measure_finds_a_long_function_and_its_comment(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "long.py"
    path.write_text(f"def short() -> None:\n    pass\n\n\ndef long() -> None:\n{body}\n\n\n"
                    f"# one piece: the steps share every local\n@staticmethod\ndef said() -> None:\n{body}\n",
                    encoding="utf-8")
    assert long_functions(path, tmp_path) == [("long.py:5 long", MAX_FUNCTION_LINES + 1, False),
                                              (f"long.py:{MAX_FUNCTION_LINES + 10} said", MAX_FUNCTION_LINES + 1,
                                               True)]
