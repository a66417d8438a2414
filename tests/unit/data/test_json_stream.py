""".json inputs stream: a top-level array is parsed element by element in blocks, with json.loads' values."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ayar.data import load
from ayar.data.load import iter_items
from ayar.errors import UsageError

JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _items(path: Path) -> list[tuple[int, Any]]:
    return list(iter_items(str(path), "alpaca"))


@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(values=st.lists(JSON_VALUE, max_size=12), indent=st.sampled_from([None, 0, 2]),
       ascii_only=st.booleans(), block=st.sampled_from([1, 3, 16, 1 << 20]))
def test_array_elements_equal_json_loads_for_any_block_size(tmp_path_factory: pytest.TempPathFactory,
                                                             values: list[Any], indent: int | None,
                                                             ascii_only: bool, block: int) -> None:
    path = tmp_path_factory.mktemp("arr") / "a.json"
    path.write_text(json.dumps(values, indent=indent, ensure_ascii=ascii_only), encoding="utf-8")
    original = load.JSON_BLOCK
    load.JSON_BLOCK = block  # elements, numbers, escapes and UTF-8 sequences cut at every possible place
    try:
        assert _items(path) == list(enumerate(json.loads(path.read_text(encoding="utf-8")), start=1))
    finally:
        load.JSON_BLOCK = original


@pytest.mark.parametrize("block", [1, 4, 1 << 20])
def test_errors_name_the_line_and_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(load, "JSON_BLOCK", block)
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"a": 1},\n  {"b": }\n]', encoding="utf-8")
    with pytest.raises(UsageError, match=r"bad.json:3: invalid JSON: Expecting value"):
        _items(path)
    path.write_text('[\n  {"a": 1}\n  {"b": 2}\n]', encoding="utf-8")
    with pytest.raises(UsageError, match=r"bad.json:3: invalid JSON: Expecting ',' delimiter"):
        _items(path)
    path.write_text('[\n  {"a": 1}\n]\n]', encoding="utf-8")
    with pytest.raises(UsageError, match=r"bad.json:4: invalid JSON: Extra data"):
        _items(path)
    path.write_bytes('[{"a": "çok"}, {"b": "x\xff"}]'.encode().replace(b"\xc3\xbf", b"\xff"))
    offset = path.read_bytes().index(b"\xff")
    with pytest.raises(UsageError, match=rf"bad.json: invalid UTF-8 at byte {offset}$"):
        _items(path)


def test_json_lines_and_wrapped_arrays_still_read(tmp_path: Path) -> None:
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": rows}, indent=2), encoding="utf-8")
    (tmp_path / "arrays.json").write_text("[1]\n[2]\n", encoding="utf-8")  # JSONL whose lines are arrays
    assert _items(tmp_path / "lines.json") == [(1, rows[0]), (2, rows[1])]
    assert _items(tmp_path / "wrapped.json") == [(1, rows[0]), (2, rows[1])]
    assert _items(tmp_path / "arrays.json") == [(1, [1]), (2, [2])]


def test_a_big_array_is_never_held_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "JSON_BLOCK", 1 << 16)
    record = {"instruction": "Bu cümleyi özetle lütfen " * 8, "output": "Özet " * 20}
    path = tmp_path / "big.json"
    with path.open("w", encoding="utf-8") as f:
        f.write("[\n")
        f.write(",\n".join(json.dumps(dict(record, id=i), ensure_ascii=False) for i in range(20_000)))
        f.write("\n]\n")
    assert path.stat().st_size > 7_500_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_items(str(path), "alpaca"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 2_000_000, f"peak {peak} bytes while reading an {path.stat().st_size}-byte file"
