"""Batch inference: a JSONL file of prompts in, one JSONL line per input line out; resumable after a crash.

Each input line is ``{"id": ..., "prompt": "raw text"}``, ``{"id": ..., "messages": [...]}`` or an alpaca
record (``instruction``/``input``); the chat forms are rendered with the model's saved chat template,
with the record's ``tools`` (function schemas) as training rendered them. A record that offers tools gets
the calls parsed from its answer as ``tool_calls`` too (the parser ``ayar serve`` uses).
A line without an id gets ``line-<n>``. Every answered line is flushed to disk at once, so a rerun skips
the ids already in the output. Malformed lines get an ``error`` line in the output and a row in
``<output>.rejects.jsonl`` (source, line, reason), as the data pipeline reports them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ayar.errors import UsageError


@dataclass
class BatchSummary:
    """What a batch run did: lines in = answered + rejected + skipped (already in the output)."""

    lines_in: int
    answered: int
    rejected: int
    skipped: int
    output: str
    rejects: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _record_prompt(record: Any, tokenizer: Any) -> tuple[str, list[dict[str, Any]] | None]:
    """The prompt text of one input record and the tools it offers (None for prompt text and records without
    tools); ValueError names what is wrong with the record."""
    from ayar.data.chat import RecordError
    from ayar.data.templates import record_to_messages, record_tools, render_prompt
    from ayar.data.tokenize import check_tools_rendered

    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if isinstance(record.get("prompt"), str):
        return record["prompt"], None
    if "messages" in record or "instruction" in record:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat records need a model with a chat template; send 'prompt' text instead")
        try:
            messages = record_to_messages({**record, "output": ""})
            tools = record_tools(record)
        except RecordError as exc:
            raise ValueError(str(exc)) from None
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed messages: {exc}") from None
        last = messages[-1] if messages else None
        if last and last["role"] == "assistant" and not last["content"] and not last.get("tool_calls"):
            messages = messages[:-1]  # the empty answer record_to_messages adds to alpaca records
        try:  # a template that drops the tools would answer without them: refuse the line instead
            check_tools_rendered(tokenizer, messages, tools)
        except UsageError as exc:
            raise ValueError(str(exc).replace("Set data.template", "Train with data.template")) from None
        return render_prompt(tokenizer, messages, tools), tools
    raise ValueError("missing field: one of 'prompt' (text), 'messages' or 'instruction'")


def _done_ids(output: Path) -> set[str]:
    """Ids already answered; a torn last line (the crash hit mid-write) is cut off the file."""
    if not output.is_file():
        return set()
    ids, good_bytes = set(), 0
    with output.open("rb") as f:
        for raw in f:
            try:
                ids.add(str(json.loads(raw)["id"]))
            except (ValueError, KeyError, TypeError):
                break
            good_bytes += len(raw)
    if good_bytes < output.stat().st_size:
        with output.open("r+b") as f:
            f.truncate(good_bytes)
    return ids


class _Line(NamedTuple):
    """One non-blank input line: its id, prompt text (None when rejected), line number and offered tools."""

    id: str
    text: str | None
    line: int
    tools: list[dict[str, Any]] | None = None


def _read_inputs(path: Path, tokenizer: Any, context: int, max_new_tokens: int,
                 rejects: list[dict]) -> list[_Line]:
    """Every non-blank input line, read and checked (rejects are added to ``rejects``)."""
    items, seen = [], set()
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            record_id, tools = f"line-{line_no}", None
            try:
                record = json.loads(raw.decode("utf-8"))
                if isinstance(record, dict) and record.get("id") is not None:
                    record_id = str(record["id"])
                if record_id in seen:
                    raise ValueError(f"duplicate id '{record_id}'")
                text, tools = _record_prompt(record, tokenizer)
                n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
                if n_tokens + max_new_tokens > context:
                    raise ValueError(f"prompt is {n_tokens} tokens; with max_new_tokens {max_new_tokens} that is "
                                     f"{n_tokens + max_new_tokens - context} over the context window of {context}")
            except (UnicodeDecodeError, ValueError) as exc:
                rejects.append({"source": str(path), "line": line_no, "id": record_id,
                                "reason": f"{type(exc).__name__}: {exc}"})
                text = None
            seen.add(record_id)
            items.append(_Line(record_id, text, line_no, tools))
    return items


def run_batch(
    model_path: Path,
    input_path: Path,
    output_path: Path,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: list[str] | None = None,
    seed: int = 0,
    force: bool = False,
) -> BatchSummary:
    """Answer every prompt of ``input_path`` not yet in ``output_path`` (greedy unless temperature > 0).

    A model folder that no longer renders its training conversations identically is refused unless force.
    """
    from ayar.eval.generate import generate
    from ayar.export import find_model_dir
    from ayar.models.load import load_for_inference, on_accelerator
    from ayar.models.template_contract import check_contract
    from ayar.recipe import EvalConfig

    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise UsageError(f"batch input not found: {input_path}")
    if input_path.resolve() == output_path.resolve():
        raise UsageError("--output must differ from --input")
    source = find_model_dir(Path(model_path))
    model, tokenizer = load_for_inference(source)
    model = on_accelerator(model)  # generate() puts each batch's inputs where the model is
    check_contract(source, tokenizer, force)
    context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    rejects: list[dict] = []
    items = _read_inputs(input_path, tokenizer, context, max_new_tokens, rejects)
    done = _done_ids(output_path)
    todo = [item for item in items if item.id not in done]
    cfg = EvalConfig(batch_size=batch_size, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                     temperature=temperature or 1.0, top_p=top_p, stop=stop or [])
    rejects_path = output_path.with_name(output_path.name + ".rejects.jsonl")
    rejects_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects), encoding="utf-8")
    reasons = {r["line"]: r["reason"] for r in rejects}
    output_path.parent.mkdir(parents=True, exist_ok=True)
    answered = 0
    with output_path.open("a", encoding="utf-8") as out, _progress(len(todo)) as advance:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            valid = [item for item in chunk if item.text is not None]
            answers = dict(zip([item.id for item in valid],
                               generate(model, tokenizer, [item.text for item in valid], cfg, seed=seed + start)
                               if valid else [], strict=True))
            for item in chunk:
                row = _answer_row(item, answers[item.id]) if item.text is not None else {
                    "id": item.id, "error": reasons[item.line], "line": item.line}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())  # what is written survives a crash; a rerun resumes after it
            answered += len(valid)
            advance(len(chunk))
    return BatchSummary(lines_in=len(items), answered=answered, rejected=sum(1 for i in todo if i.text is None),
                        skipped=len(items) - len(todo), output=str(output_path), rejects=str(rejects_path))


def _answer_row(item: _Line, output: str) -> dict[str, Any]:
    """The output line of an answered input; with tools offered, the calls parsed from the answer too."""
    row: dict[str, Any] = {"id": item.id, "output": output}
    if item.tools:
        from ayar.data.templates import parse_tool_calls

        content, calls = parse_tool_calls(output, item.tools)
        row["content"], row["tool_calls"] = content, calls
    return row


class _progress:
    """A rich progress bar (silent when AYAR_NO_PROGRESS is set or there is nothing to do)."""

    def __init__(self, total: int) -> None:
        self.total, self.bar = total, None

    def __enter__(self):
        if self.total and not os.environ.get("AYAR_NO_PROGRESS"):
            from rich.progress import Progress

            self.bar = Progress()
            self.bar.__enter__()
            task = self.bar.add_task("batch", total=self.total)
            return lambda n: self.bar.advance(task, n)
        return lambda n: None

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
