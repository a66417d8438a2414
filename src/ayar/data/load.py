"""Read records from files and folders, one at a time, and check their shape (:mod:`ayar.data.shapes`).

Every reader streams: JSONL line by line, a JSON array element by element, CSV row by row,
Parquet and ``save_to_disk`` folders in Arrow batches, so a file bigger than memory is never read
whole (the one exception: a ``{"data": [...]}`` wrapper object, which is; use JSONL or a bare
array for big data). A malformed record becomes a :class:`Reject` with its source
and line number instead of stopping the run. JSONL is read by hand rather than with
``datasets``' JSON builder because that builder fails the whole file on the first bad line and
reports no line numbers.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ayar.data.chat import RecordError
from ayar.data.shapes import (
    ASSISTANT_SOURCES,
    CONVERSATION_FIELDS,
    FORMATS,
    RESPONSE_FIELDS,
    SHAPES,
    TURKISH_ALIASES,
    check_shape,
    map_texts,
    prose_texts,
    record_texts,
    response_texts,
)
from ayar.errors import UsageError

# The record shapes moved to ayar.data.shapes; their names stay importable from here.
__all__ = [
    "ASSISTANT_SOURCES", "CONVERSATION_FIELDS", "FORMATS", "RESPONSE_FIELDS", "SHAPES", "TURKISH_ALIASES", "Item",
    "Reject", "check_shape", "iter_items", "iter_records", "map_texts", "parse_json_line", "prose_texts",
    "read_source", "record_texts", "response_texts", "to_record",
]

TEXT_SUFFIXES = {".txt"}
SNIPPET_CHARS = 200
JSON_BLOCK = 1 << 20  # bytes read at a time from a .json file
FIRST_LINE_LIMIT = 1 << 20  # a .json file whose first line is longer is not taken for JSONL
MAX_JSON_ELEMENT = 64 << 20  # characters: an array element this long and still unparsed is broken


@dataclass
class Reject:
    """A record that could not be read or has the wrong shape."""

    source: str
    line: int
    reason: str
    raw: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "reason": self.reason, "raw": self.raw}


Item = tuple[int, Any]  # (line or row number, parsed object) or (line, Reject)


def _snippet(raw: bytes | str) -> str:
    """The start of a bad record, always writable as UTF-8 (a lone surrogate is shown as ``\\ud800``)."""
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="replace")
    else:
        text = raw.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text.strip()[:SNIPPET_CHARS]


def parse_json_line(raw: bytes, source: str, line_no: int) -> Any:
    """One JSONL line parsed, or a Reject saying why it could not be."""
    raw = raw.rstrip(b"\r\n")  # so that an error at the end of the line reports its column, not "line 2"
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Reject(source, line_no, f"invalid UTF-8 at byte {exc.start}", _snippet(raw))
    except json.JSONDecodeError as exc:
        return Reject(source, line_no, f"invalid JSON: {exc.msg} (column {exc.pos + 1})", _snippet(raw))


def _read_jsonl(path: Path, raw: bool = False) -> Iterator[Item]:
    """Lines of a JSONL file, parsed (or, with ``raw``, as bytes for a worker process to parse)."""
    source = str(path)
    with path.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            if line.strip():
                yield line_no, (line if raw else parse_json_line(line, source, line_no))


def _first_line_is_a_record(path: Path) -> bool:
    """True when a .json file is JSONL: its first line (if short) is a whole JSON value and more follows."""
    with path.open("rb") as f:
        head = f.read(FIRST_LINE_LIMIT)
        newline = head.find(b"\n")
        if newline < 0:
            return False
        try:
            json.loads(head[:newline].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return False
        rest = head[newline:]
        while not rest.strip():
            rest = f.read(FIRST_LINE_LIMIT)
            if not rest:
                return False
        return True


class _JsonArrayStream:
    """The elements of a top-level JSON array, parsed block by block with ``json.JSONDecoder.raw_decode``.

    Memory holds one block and the element being parsed, however big the file. The stdlib decoder
    (not a hand-written parser) reads every element, so values are exactly what ``json.loads``
    gives; an element that straddles a block boundary fails to parse and is retried with more text.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.decoder = json.JSONDecoder()
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.lines_before, self.bytes_read, self.eof = "", 0, 0, 0, False

    def _more(self, f: Any) -> bool:
        """Append the next block to the buffer (dropping what was consumed); False at the end of the file."""
        if self.eof:
            return False
        block = f.read(JSON_BLOCK)
        pending = len(self.utf8.getstate()[0])
        try:
            text = self.utf8.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            raise UsageError(f"{self.path}: invalid UTF-8 at byte {self.bytes_read - pending + exc.start}") from None
        self.bytes_read += len(block)
        self.eof = not block
        self.lines_before += self.buf.count("\n", 0, self.pos)
        self.buf, self.pos = self.buf[self.pos:] + text, 0
        return True

    def _next_char(self, f: Any) -> str:
        """The next non-whitespace character (not consumed), or '' at the end of the file."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf) or not self._more(f):
                return self.buf[self.pos:self.pos + 1]

    def _error(self, msg: str, pos: int) -> UsageError:
        line = self.lines_before + self.buf.count("\n", 0, pos) + 1
        return UsageError(f"{self.path}:{line}: invalid JSON: {msg}")

    def _value(self, f: Any) -> Any:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if len(self.buf) - self.pos < MAX_JSON_ELEMENT and self._more(f):
                    continue  # cut off by the block's end, most likely: retry with more text
                raise self._error(exc.msg, exc.pos) from None
            # A number within two characters of the block's end ("1.", "2e+") may go on in the next block.
            if type(value) in (int, float) and len(self.buf) - end <= 2 and self._more(f):
                continue
            self.pos = end
            return value

    def __iter__(self) -> Iterator[Item]:
        with self.path.open("rb") as f:
            if self._next_char(f) != "[":
                raise self._error("expected '['", self.pos)
            self.pos += 1
            index = 0
            if self._next_char(f) == "]":
                self.pos += 1
            else:
                while True:
                    self._next_char(f)
                    index += 1
                    yield index, self._value(f)
                    separator = self._next_char(f)
                    self.pos += 1
                    if separator == "]":
                        break
                    if separator != ",":
                        raise self._error("Expecting ',' delimiter", self.pos - 1)
            if self._next_char(f):
                raise self._error("Extra data", self.pos)


def _read_json(path: Path, raw: bool = False) -> Iterator[Item]:
    with path.open("rb") as f:
        first = f.read(FIRST_LINE_LIMIT).lstrip()[:1]
    if first in (b"[", b"{") and _first_line_is_a_record(path):  # one object per line: read it as JSONL
        yield from _read_jsonl(path, raw)
        return
    if first == b"[":
        yield from _JsonArrayStream(path)
        return
    try:  # a {"data": [...]} wrapper, or not JSON at all: read whole
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: invalid UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one object per line in a .json file: read it as JSONL
            yield from _read_jsonl(path, raw)
            return
        raise UsageError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise UsageError(f"{path}: a .json input must hold an array of records, got {type(data).__name__}")
    yield from enumerate(data, start=1)


def _read_csv(path: Path, delimiter: str) -> Iterator[Item]:
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        for row in reader:
            line_no = reader.line_num
            values = [v for v in row.values() if isinstance(v, str)]
            if any("\udc80" <= ch <= "\udcff" for v in values for ch in v):
                yield line_no, Reject(str(path), line_no, "invalid UTF-8", _snippet(delimiter.join(values)
                                      .encode("utf-8", "surrogateescape")))
            elif None in row or any(v is None for v in row.values()):
                count = len(values) + len(row.get(None) or [])
                yield line_no, Reject(str(path), line_no, f"row has {count} fields, header has {len(header)}",
                                      _snippet(delimiter.join(values)))
            else:
                yield line_no, {k: v for k, v in row.items() if k is not None}


def _read_parquet(path: Path) -> Iterator[Item]:
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        for record in batch.to_pylist():
            row += 1
            yield row, record


def _read_arrow_folder(path: Path, split: str | None) -> Iterator[Item]:
    from datasets import DatasetDict, load_from_disk

    data = load_from_disk(str(path))
    if isinstance(data, DatasetDict):
        name = split or ("train" if "train" in data else None)
        if name not in data:
            raise UsageError(f"{path} holds splits {list(data)}: set the input's split")
        data = data[name]
    row = 0
    for batch in data.iter(batch_size=10_000):
        for values in zip(*batch.values(), strict=True):
            row += 1
            yield row, dict(zip(batch.keys(), values, strict=True))


def _read_text(path: Path, unit: str = "paragraph") -> Iterator[Item]:
    """Plain text: one record per paragraph (blank-line separated; the line is where it starts), or with
    ``unit="document"`` the whole file as one record at line 1, naming its file under ``document``.
    A line that is not UTF-8 is a reject."""
    start, lines, document = 0, [], unit == "document"
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_no, Reject(str(path), line_no, f"invalid UTF-8 at byte {exc.start}", _snippet(raw))
                continue
            if document or line.strip():
                start = start or line_no
                lines.append(line)
            elif lines:
                yield start, {"text": "".join(lines)}
                start, lines = 0, []
    if lines and not document:
        yield start, {"text": "".join(lines)}
    elif lines and "".join(lines).strip():
        yield 1, {"text": "".join(lines), "document": str(path)}


def _read_hub(name: str, split: str | None) -> Iterator[Item]:
    from datasets import load_dataset

    try:
        data = load_dataset(name, split=split or "train", streaming=True)
    except Exception as exc:  # offline, unknown name, gated: all one message for the user
        raise UsageError(f"data input '{name}' is not a file or folder, and the hub dataset failed to load: "
                         f"{type(exc).__name__}: {str(exc)[:200]}") from None
    yield from enumerate(data, start=1)


def _text_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)


def read_source(path_or_name: str, split: str | None = None, raw: bool = False,
                text_unit: str = "paragraph") -> tuple[str, Iterator[Item]]:
    """(kind, items) of one input: a file, a folder (``save_to_disk`` or .txt files) or a hub name.

    With ``raw``, JSONL lines come as bytes, to be parsed by :func:`to_record` in a worker.
    ``text_unit`` ("paragraph" or "document") is what one record of a .txt file is.
    """
    path = Path(path_or_name)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "arrow", _read_arrow_folder(path, split)
        files = _text_files(path)
        if not files:
            raise UsageError(f"data input folder {path} holds no .txt files and is not a saved dataset")
        return "text", (item for file in files for item in _read_text(file, text_unit))
    if not path.is_file():
        if "/" in path_or_name and not path.suffix and not path_or_name.startswith((".", "/")):
            return "hub", _read_hub(path_or_name, split)
        raise UsageError(f"data input not found: {path}")
    if path.stat().st_size == 0:
        raise UsageError(f"data input is empty: {path}")
    suffix = path.suffix.lower()
    readers: dict[str, Callable[[], Iterator[Item]]] = {
        ".jsonl": lambda: _read_jsonl(path, raw),
        ".ndjson": lambda: _read_jsonl(path, raw),
        ".json": lambda: _read_json(path, raw),
        ".csv": lambda: _read_csv(path, ","),
        ".tsv": lambda: _read_csv(path, "\t"),
        ".parquet": lambda: _read_parquet(path),
        ".txt": lambda: _read_text(path, text_unit),
    }
    if suffix not in readers:
        raise UsageError(f"data input {path}: unknown file type '{suffix}'; use one of {sorted(readers)}")
    return ("text" if suffix == ".txt" else "records"), readers[suffix]()


def iter_items(path_or_name: str, fmt: str, split: str | None = None, raw: bool = False,
               text_unit: str = "paragraph") -> Iterator[Item]:
    """(line, item) of one input, unchecked: an object, raw JSONL bytes (with ``raw``) or a Reject."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown data format '{fmt}'; choose from {', '.join(FORMATS)}")
    kind, items = read_source(path_or_name, split, raw, text_unit)
    if kind == "text" and fmt != "text":
        raise UsageError(f"data input {path_or_name} is plain text: set its format to 'text', not '{fmt}'")
    return items


def to_record(item: Any, fmt: str, columns: dict[str, str] | None, source: str, line_no: int) -> dict[str, Any] | Reject:
    """A shape-checked record from one item of :func:`iter_items`, or a Reject saying why not."""
    check_unicode = True
    if isinstance(item, bytes):
        # Valid UTF-8 holds no surrogates: only a \\u escape in the line can make one.
        check_unicode = b"\\u" in item
        item = parse_json_line(item, source, line_no)
    if isinstance(item, Reject):
        return item
    try:
        return check_shape(item, fmt, columns, check_unicode)
    except RecordError as exc:
        return Reject(source, line_no, str(exc), _snippet(json.dumps(item, ensure_ascii=False, default=str)))


def iter_records(
    path_or_name: str, fmt: str, columns: dict[str, str] | None = None, split: str | None = None
) -> Iterator[tuple[int, dict[str, Any] | Reject]]:
    """(line, record) for each record of one input, shape-checked; bad ones come as (line, Reject)."""
    source = str(path_or_name)
    for line_no, item in iter_items(path_or_name, fmt, split):
        yield line_no, to_record(item, fmt, columns, source, line_no)
