"""Property-based fuzzing of record parsing, shape checks, chat templating and tokenization.

10,000 generated records in all (see each test's ``max_examples``): broken Unicode, huge fields,
wrong types, empty turns, wrong role order. Every input ends as a record or a Reject with a reason;
nothing raises; tokenization gives the same ids on every run and for every ``num_proc``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ayar.data.load import FORMATS, Reject, iter_records, parse_json_line, to_record
from ayar.data.templates import ALPACA, record_to_messages
from ayar.data.tokenize import tokenize_chat


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))

SURROGATES = st.sampled_from(["\ud800", "\udfff", "\udc80x", "a\ud83d"])  # lone halves: broken Unicode
TEXT = st.one_of(st.text(max_size=40), st.text(alphabet="çğıöşüÇĞİÖŞÜ ", max_size=20),
                 SURROGATES, st.just(""), st.just("x" * 100_000))  # huge field
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), TEXT)
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                     max_leaves=6)
ROLES = st.sampled_from(["system", "user", "assistant", "tool", "human", "gpt", "", "USER", None, 3])
TURN = st.one_of(st.fixed_dictionaries({"role": ROLES, "content": st.one_of(TEXT, SCALAR)}),
                 st.fixed_dictionaries({"from": ROLES, "value": st.one_of(TEXT, SCALAR)}),
                 st.dictionaries(TEXT, SCALAR, max_size=2), SCALAR)
FIELDS = ["instruction", "input", "output", "text", "label", "source", "target", "prompt", "chosen", "rejected",
          "talimat", "yanıt", "metin", "etiket"]
RECORD = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), st.one_of(TEXT, SCALAR, VALUE), max_size=5),
    st.fixed_dictionaries({"messages": st.one_of(st.lists(TURN, max_size=5), SCALAR)}),
    st.fixed_dictionaries({"conversations": st.one_of(st.lists(TURN, max_size=5), SCALAR)}),
    VALUE,
)


def _checked(record: Any, fmt: str) -> dict[str, Any] | Reject:
    result = to_record(json.loads(json.dumps(record)) if _jsonable(record) else record, fmt, None, "fuzz", 1)
    if isinstance(result, Reject):
        assert result.reason.strip(), "a rejection without a reason"
        assert result.source == "fuzz" and result.line == 1
    else:
        assert isinstance(result, dict)
    return result


def _valid_unicode(record: Any) -> bool:
    """False when some string of the record holds a lone surrogate (it cannot be written as UTF-8)."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@fuzz(4000)
@given(record=RECORD, fmt=st.sampled_from(FORMATS))
def test_shape_check_accepts_or_rejects_with_a_reason(record: Any, fmt: str) -> None:
    _checked(record, fmt)


@fuzz(200)
@given(record=RECORD, fmt=st.sampled_from(FORMATS))
@example(record={"instruction": "a\ud800", "output": "b"}, fmt="alpaca")
def test_accepted_records_are_valid_unicode(record: Any, fmt: str) -> None:
    checked = _checked(record, fmt)
    assert isinstance(checked, Reject) or _valid_unicode(checked)


@fuzz(2000)
@given(raw=st.one_of(st.binary(max_size=200), RECORD.map(lambda r: json.dumps(r).encode("utf-8", "surrogatepass")),
                     st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_json_lines_parse_or_reject_with_a_reason(raw: bytes) -> None:
    result = parse_json_line(raw + b"\n", "fuzz", 7)
    if isinstance(result, Reject):
        assert result.reason and result.line == 7 and len(result.raw) <= 200


@fuzz(100)
@given(lines=st.lists(st.one_of(RECORD.map(json.dumps), st.binary(max_size=60).map(lambda b: b.hex()),
                                st.just("{broken"), st.just("")), min_size=5, max_size=20),
       fmt=st.sampled_from(FORMATS))
def test_jsonl_file_every_line_accounted_for(tmp_path_factory: pytest.TempPathFactory, lines: list[str],
                                             fmt: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = list(iter_records(str(path), fmt))
    assert len(results) == sum(1 for line in lines if line.strip())  # in = kept + rejected
    assert all(isinstance(r, dict) or r.reason for _, r in results)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from ayar.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    tok.chat_template = ALPACA
    return tok


@fuzz(1700)
@given(record=RECORD, fmt=st.sampled_from(["alpaca", "messages", "sharegpt"]))
def test_accepted_chat_records_template_and_tokenize_deterministically(tokenizer: Any, record: Any,
                                                                       fmt: str) -> None:
    checked = _checked(record, fmt)
    if isinstance(checked, Reject) or not _valid_unicode(checked):  # lone surrogates are rejected
        return
    messages = record_to_messages(checked, None)
    first = tokenize_chat(tokenizer, messages, 64)
    assert first == tokenize_chat(tokenizer, messages, 64)
    assert len(first["input_ids"]) == len(first["labels"]) <= 64


def test_prepare_and_tokenize_are_deterministic_across_num_proc(tokenizer: Any, tmp_path: Path) -> None:
    """1,000 records (900 generated, 100 broken lines) give the same splits and token ids for num_proc 1 and 2."""
    from ayar.data.prepare import prepare_files
    from ayar.data.synthetic import generate_records
    from ayar.recipe import load_recipe
    from ayar.train.tasks import tokenize_split

    lines = [json.dumps(r, ensure_ascii=False) for r in generate_records(900, 3, ["tr", "en"], ["add", "reverse", "upper", "date"])]
    lines += ['{"instruction": 5, "output": "x"}', "{broken", '{"output": "no instruction"}', "[]"] * 25
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = load_recipe(None, ["model.name_or_path=x", "data.max_length=64"])
    outputs = []
    for num_proc in (1, 2):
        prepared = prepare_files([source], "alpaca", tmp_path / f"out{num_proc}", num_proc=num_proc,
                                 dedup={"near": False})
        rows = prepared.read_split("train")
        ids = [tokenize_split(rows, tokenizer, recipe)["input_ids"] for _ in range(2)]
        assert ids[0] == ids[1]  # the same ids on every run
        rejects = (prepared.root / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(rejects) == 100 and all(json.loads(r)["reason"] for r in rejects)
        outputs.append((prepared.split_path("train").read_bytes(), ids[0]))
    assert outputs[0] == outputs[1]
