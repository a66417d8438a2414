"""Tool calls of a fine-tune as an API client gets them: the run's held-out test split sent through `ayar serve`
with the official `openai` client, with `tool_choice: auto`, once with the call held to the offered schemas
(the default) and once free (`serve.tool_call_grammar: false`). Scored as `ayar eval` scores tool calls:
right function, a call that parses, exact arguments, and no call where the reference answers in text.

    .venv/bin/python bench/served_tool_calls.py runs/tool-calling
    .venv/bin/python bench/served_tool_calls.py runs/tool-calling --max-examples 60 --json out.json

The server runs in this process (fastapi's test client), so the figures are the engine's, not the network's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from served_client import (  # bench/ is on sys.path when a script there runs
    held_out_conversations,
    openai_client,
)


def load_cases(run: Path, max_examples: int) -> tuple[list[list[dict]], list[dict], list[list[dict] | None]]:
    """(prompts, reference assistant turns, offered tools) of the run's test split, as `ayar eval` reads it."""
    from ayar.data.templates import record_tools

    _, records, conversations = held_out_conversations(run)
    records, conversations = records[:max_examples], conversations[:max_examples]
    return [c[:-1] for c in conversations], [c[-1] for c in conversations], [record_tools(r) for r in records]


def as_template_text(message: Any) -> str:
    """An API answer written back as the template writes it, so ayar's own scorer reads it as `ayar eval` does."""
    blocks = [f'<tool_call>\n{{"name": {json.dumps(c.function.name)}, "arguments": {c.function.arguments}}}\n'
              "</tool_call>" for c in message.tool_calls or []]
    return "\n".join([message.content or "", *blocks]).strip()


def for_the_api(message: dict) -> dict:
    """A conversation turn as the openai client sends it (call arguments as JSON text)."""
    calls = [{"id": f"call_{i}", "type": "function", "function": {
        "name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False)}}
        for i, c in enumerate(message.get("tool_calls") or [])]
    return {**message, "tool_calls": calls} if calls else {k: v for k, v in message.items() if k != "tool_calls"}


def run_client(run: Path, held: bool, cases: tuple, max_tokens: int) -> dict[str, Any]:
    from ayar.eval.tool_calls import tool_call_scores

    prompts, references, tools = cases
    outputs, started = [], time.perf_counter()
    with openai_client(run, tool_call_grammar=held) as client:
        for prompt, offered in zip(prompts, tools, strict=True):
            reply = client.chat.completions.create(model="run", messages=[for_the_api(m) for m in prompt],
                                                   tools=offered, tool_choice="auto" if offered else None,
                                                   temperature=0, max_tokens=max_tokens)
            outputs.append(as_template_text(reply.choices[0].message))
    summary, _ = tool_call_scores(outputs, references, tools)
    return {"held": held, "seconds": round(time.perf_counter() - started, 1), **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder trained on tool-calling records")
    parser.add_argument("--max-examples", type=int, default=60, help="test examples (the recipe's eval uses 60)")
    parser.add_argument("--max-tokens", type=int, default=56, help="tokens per answer (the recipe's eval: 56)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    cases = load_cases(args.run, args.max_examples)
    rows = [run_client(args.run, held, cases, args.max_tokens) for held in (False, True)]
    for row in rows:
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
