"""Tokenize chat records for causal-LM training, masking prompt tokens out of the loss.

Every assistant turn is learned (its text and its tool calls), unless the turn says ``train: false``;
system, user and tool turns (tool outputs) are context, never learned (with ``mask_prompt``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ayar.data.reasoning import REASONING_KEY, THINK_CLOSE, has_reasoning
from ayar.data.templates import (
    messages_for_template,
    render_conversation,
    render_prompt,
    template_renders_tools,
)
from ayar.errors import UsageError
from ayar.recipe.data_config import ReasoningMode

IGNORE_INDEX = -100  # labels with this value are skipped by the cross-entropy loss
PROMPT_ROLE = "prompt"  # the report's role for prompt text it cannot pin on one message
TEMPLATE_ROLE = "template"  # the report's role for template text between messages (headers, end tokens)

Segment = tuple[str, bool, str]  # (text, learned, role)
REASONING_ROLE = "reasoning"  # an assistant turn's think block, split off its answer


def _split_by_message(tokenizer: Any, messages: list[dict[str, Any]], start: int, end: int, done: str,
                      prompt: str, tools: list[dict[str, Any]] | None) -> list[Segment]:
    """The prompt piece ``prompt[len(done):]`` split into the messages ``start..end-1`` it renders, by role.

    Renders each prefix of the conversation; where a template does not render prefixes as prefixes of
    each other (some group tool outputs), the piece is counted under ``prompt``.
    """
    pieces: list[Segment] = []
    at = done
    for index in range(start, end):
        through = render_conversation(tokenizer, messages[: index + 1], tools)
        if not through.startswith(at) or not prompt.startswith(through):
            return [(prompt[len(done):], False, PROMPT_ROLE)]
        pieces.append((through[len(at):], False, messages[index]["role"]))
        at = through
    pieces.append((prompt[len(at):], False, TEMPLATE_ROLE))  # the assistant header of the generation prompt
    return pieces


def _segments(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
              by_role: bool = False) -> list[Segment]:
    """Split the rendered conversation into (text, learned, role) pieces.

    Each assistant turn is the difference between the conversation rendered up to it (with the
    generation prompt) and rendered through it, so the prompt side is exactly what generation sees.
    With ``by_role``, the prompt pieces are split further by message, for the loss-mask report.
    """
    pieces: list[Segment] = []
    done, previous = "", 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_prompt(tokenizer, messages[:index], tools)
        through = render_conversation(tokenizer, messages[: index + 1], tools)
        if not prompt.startswith(done) or not through.startswith(prompt):
            raise ValueError("chat template does not render conversations as prefixes of each other")
        if by_role:
            pieces += _split_by_message(tokenizer, messages, previous, index, done, prompt, tools)
        else:
            pieces.append((prompt[len(done):], False, PROMPT_ROLE))
        learned = message.get("train", True)
        response = through[len(prompt):]
        eos = tokenizer.eos_token
        if eos and eos in response:  # what a template puts after the end token is context, not a target
            cut = response.index(eos) + len(eos)
            response, tail = response[:cut], response[cut:]
            pieces.append((response, learned, "assistant"))
            if tail:
                pieces.append((tail, False, TEMPLATE_ROLE))
        else:
            pieces.append((response, learned, "assistant"))
        done, previous = through, index + 1
    while pieces and not pieces[-1][1]:  # nothing after the last learned response is trained or needed
        pieces.pop()
    return [piece for piece in pieces if piece[0]]


def check_tools_rendered(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> None:
    """A clear error when the chat template drops the tools, tool calls or tool outputs of a conversation."""
    if not tools and not any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        return
    lost = template_renders_tools(render_conversation(tokenizer, messages, tools), messages, tools)
    if lost:
        raise UsageError(f"the chat template does not render {lost}: it has no tool support. Set data.template: "
                         f"chatml_tools (or a Jinja template that renders tools, tool_calls and tool messages)")


def tokenize_chat(
    tokenizer: Any, messages: list[dict[str, Any]], max_length: int, mask_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None, with_roles: bool = False,
    unlearned_reasoning: list[dict[str, Any]] | None = None,
) -> dict[str, list[Any]]:
    """Token ids and labels for one conversation; an EOS ends every response.

    ``tools`` are the function schemas offered to the model (rendered by the template). With
    ``with_roles``, the result also has ``roles``: the role each token belongs to. With
    ``unlearned_reasoning`` (the conversation before the template rendered it), each assistant turn's think
    block stays in the input but is never a label, not even with ``mask_prompt`` off; its answer is learned.
    """
    check_tools_rendered(tokenizer, messages, tools)
    input_ids: list[int] = []
    labels: list[int] = []
    roles: list[str] = []
    eos = tokenizer.eos_token
    pieces = _segments(tokenizer, messages, tools, by_role=with_roles)
    if unlearned_reasoning is not None:
        pieces = _split_reasoning(pieces, unlearned_reasoning)
    for text, learned, role in pieces:
        if role == "assistant" and learned and eos and eos not in text:
            text = text.rstrip("\n") + eos  # templates without an end token still teach the model to stop
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if learned or (not mask_prompt and role != REASONING_ROLE) else [IGNORE_INDEX] * len(ids)
        roles += [role] * len(ids)
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        input_ids, labels, roles = [tokenizer.bos_token_id] + input_ids, [IGNORE_INDEX] + labels, [TEMPLATE_ROLE] + roles
    out: dict[str, list[Any]] = {"input_ids": input_ids[:max_length], "labels": labels[:max_length]}
    if with_roles:
        out["roles"] = roles[:max_length]
    return out


def tokenize_conversation(
    tokenizer: Any, messages: list[dict[str, Any]], max_length: int, mask_prompt: bool,
    tools: list[dict[str, Any]] | None, reasoning: ReasoningMode, with_roles: bool = False,
) -> dict[str, list[Any]]:
    """A conversation tokenized as training learns it, its reasoning traces (``data.reasoning``, resolved)
    learned, masked (in the input, never a label) or dropped; training, evaluation's loss and the loss-mask
    report all read conversations through this."""
    if not has_reasoning(messages):
        return tokenize_chat(tokenizer, messages, max_length, mask_prompt, tools=tools, with_roles=with_roles)
    rendered = messages_for_template(tokenizer, messages, reasoning)
    return tokenize_chat(tokenizer, rendered, max_length, mask_prompt, tools=tools, with_roles=with_roles,
                         unlearned_reasoning=messages if reasoning == "mask" else None)


def _after_think_block(text: str) -> int | None:
    """Where the answer starts in a rendered response that opens with reasoning: after the first ``</think>``
    and the whitespace behind it (None without one)."""
    end = text.find(THINK_CLOSE)
    if end < 0:
        return None
    end += len(THINK_CLOSE)
    return end + len(text[end:]) - len(text[end:].lstrip())


def _split_reasoning(pieces: list[Segment], messages: list[dict[str, Any]]) -> list[Segment]:
    """Each learned assistant response whose turn has reasoning, split into its think block (not learned) and
    the answer. The template renders a turn's reasoning first, after the assistant header."""
    traces = iter([bool(m.get(REASONING_KEY)) for m in messages if m["role"] == "assistant"])
    out: list[Segment] = []
    for text, learned, role in pieces:
        cut = _after_think_block(text) if role == "assistant" and next(traces, False) and learned else None
        if cut is None:
            out.append((text, learned, role))
        else:
            out += [(text[:cut], False, REASONING_ROLE), (text[cut:], True, role)]
    return out


def tokenize_text(tokenizer: Any, text: str, max_length: int, add_eos: bool = True) -> dict[str, list[int]]:
    """Plain continued pretraining: every token is a label. A window that does not end its document
    (``add_eos=False``) gets no EOS: the document goes on in the next window."""
    ids = tokenizer(text + ((tokenizer.eos_token or "") if add_eos else ""),
                    add_special_tokens=False)["input_ids"][:max_length]
    return {"input_ids": ids, "labels": list(ids)}


def count_mask(encoded: dict[str, list[Any]], counts: dict[str, Counter]) -> None:
    """Add one tokenized conversation's tokens per role to ``counts`` (``{"tokens": ..., "learned": ...}``)."""
    for role, label in zip(encoded["roles"], encoded["labels"], strict=True):
        counts["tokens"][role] += 1
        if label != IGNORE_INDEX:
            counts["learned"][role] += 1


def check_learned_tokens(rows: Any, where: str, max_length: int) -> None:
    """Stop with a clear error when no token of any row is learned (every label -100)."""
    if len(rows) and not any(label != IGNORE_INDEX for row in rows for label in row["labels"]):
        raise UsageError(f"no assistant token is learned in {where}: every label is masked. Check that the "
                         f"records have assistant turns (not all marked train: false or weight: 0) and that "
                         f"data.max_length ({max_length}) leaves room for the answers after the prompts")
