"""One model on one split, per task: per-example rows (output, loss, scores) and the corpus summary.

A task's definition (``ayar.tasks``) names its evaluation and the prompt of a record among the functions here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ayar.data.reasoning import THINK_OPEN, prompt_opens_reasoning, reasoning_mode, split_reasoning
from ayar.data.templates import record_to_messages, record_tools, render_prompt
from ayar.data.tokenize import tokenize_conversation, tokenize_text
from ayar.eval.generate import context_length, generate_chat, generate_seq2seq
from ayar.eval.metrics import classification_metrics, text_metrics
from ayar.eval.perplexity import perplexity
from ayar.eval.tool_calls import tool_call_scores
from ayar.recipe import Recipe
from ayar.tasks import get_task

Evaluator = Callable[[Any, Any, list[dict], list[str], Recipe], dict]  # (model, tokenizer, records, prompts, recipe)
Prompt = Callable[[dict[str, Any], Recipe], str]


def _base_rows(records: list[dict[str, Any]], prompts: list[str], references: list[str], tokenizer: Any,
               recipe: Recipe) -> list[dict[str, Any]]:
    field = recipe.eval.label_field
    return [{"id": r.get("id", str(i)), "prompt": p, "reference": ref, "lang": r.get("lang"),
             "label": r.get(field, r.get("task")),
             "input_tokens": len(tokenizer(p, add_special_tokens=False)["input_ids"])}
            for i, (r, p, ref) in enumerate(zip(records, prompts, references, strict=True))]


def _attach(rows: list[dict[str, Any]], outputs: list[str], per_example: dict[str, list[float]],
            ppl: dict[str, Any] | None) -> None:
    for index, row in enumerate(rows):
        row["output"] = outputs[index]
        row |= {name: values[index] for name, values in per_example.items()}
        if ppl is not None:
            row["nll"], row["tokens"] = ppl["per_example_nll"][index], ppl["per_example_tokens"][index]


def _generation_summary(corpus: dict[str, float], ppl: dict[str, Any] | None, n: int) -> dict[str, Any]:
    summary: dict[str, Any] = {"perplexity": ppl["perplexity"] if ppl else math.nan,
                               "nll": ppl["nll"] if ppl else math.nan, **corpus, "examples": n}
    summary["response_tokens"] = ppl["tokens"] if ppl else 0
    return summary


def evaluate_causal_lm(model: Any, tokenizer: Any, records: list[dict], prompts: list[str], recipe: Recipe) -> dict:
    """Response perplexity, greedy (or sampled) generations and their text metrics."""
    cfg = recipe.data
    if cfg.format == "text":  # plain text has no reference answer: perplexity only
        examples = [tokenize_text(tokenizer, r["text"], cfg.max_length) for r in records]
        ppl = perplexity(model, examples, context_length(model), recipe.eval.perplexity_stride)
        rows = _base_rows(records, [""] * len(records), [""] * len(records), tokenizer, recipe)
        _attach(rows, [""] * len(records), {}, ppl)
        return {"summary": {"perplexity": ppl["perplexity"], "nll": ppl["nll"], "exact_match": None,
                            "examples": len(records), "response_tokens": ppl["tokens"]}, "rows": rows}
    conversations = [record_to_messages(r, cfg.system_prompt) for r in records]
    tools = [record_tools(r) for r in records]  # tool records render (and are scored) with their tools
    mode = reasoning_mode(cfg.reasoning, cfg.enable_thinking)  # the answer's loss counts what training learned
    examples = [tokenize_conversation(tokenizer, c, cfg.max_length, True, t, mode)
                for c, t in zip(conversations, tools, strict=True)]
    ppl = perplexity(model, examples, context_length(model), recipe.eval.perplexity_stride)
    references = [c[-1]["content"] for c in conversations]
    asked = [c[:-1] for c in conversations]
    generated = generate_chat(model, tokenizer, asked, recipe.eval, tools if any(tools) else None)
    outputs, traces = answers_and_reasoning(tokenizer, generated, asked, tools)
    langs = [r.get("lang") for r in records]
    corpus, per_example = text_metrics(outputs, references, recipe.eval.exact_match_normalize, langs)
    tool_summary, tool_rows = tool_call_scores(outputs, [c[-1] for c in conversations], tools)
    corpus, per_example = {**corpus, **tool_summary}, {**per_example, **tool_rows}
    rows = _base_rows(records, prompts, references, tokenizer, recipe)
    _attach(rows, outputs, per_example, ppl)
    for row, trace in zip(rows, traces, strict=True):
        if trace is not None:
            row["reasoning"] = trace
    return {"summary": _generation_summary(corpus, ppl, len(records)), "rows": rows}


def answers_and_reasoning(tokenizer: Any, outputs: list[str], conversations: list[list[dict[str, Any]]],
                          tools: list[list[dict[str, Any]] | None]) -> tuple[list[str], list[str | None]]:
    """Each generated output's final answer and its reasoning trace (None without one). A thinking model's
    answer is scored without its think block, the answer `ayar serve` returns apart from ``reasoning_content``;
    references hold the final answer alone (a record's reasoning is split off when it is read)."""
    opens = THINK_OPEN in str(tokenizer.chat_template or "")
    split = [split_reasoning(output, opens and prompt_opens_reasoning(render_prompt(tokenizer, c, t)))
             for output, c, t in zip(outputs, conversations, tools, strict=True)]
    return [answer for _, answer in split], [reasoning for reasoning, _ in split]


@torch.inference_mode()
def _seq2seq_nll(model: Any, tokenizer: Any, sources: list[str], targets: list[str], max_length: int) -> dict:
    """Token-weighted target perplexity of an encoder-decoder model."""
    model.eval()
    per_nll, per_tokens = [], []
    for source, target in zip(sources, targets, strict=True):
        batch = tokenizer(source, text_target=target, truncation=True, max_length=max_length, return_tensors="pt")
        batch = batch.to(model.device)
        logits = model(**batch).logits.float()
        loss = F.cross_entropy(logits.transpose(1, 2), batch["labels"], reduction="sum")
        count = int(batch["labels"].numel())
        per_nll.append(float(loss) / count if count else math.nan)
        per_tokens.append(count)
    total = sum(n * t for n, t in zip(per_nll, per_tokens, strict=True) if t)
    tokens = sum(per_tokens)
    mean = total / tokens if tokens else math.nan
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": tokens, "per_example_nll": per_nll,
            "per_example_tokens": per_tokens}


def evaluate_seq2seq(model: Any, tokenizer: Any, records: list[dict], prompts: list[str], recipe: Recipe) -> dict:
    """Target perplexity and generated-target text metrics of an encoder-decoder model."""
    references = [str(r["target"]) for r in records]
    ppl = _seq2seq_nll(model, tokenizer, prompts, references, recipe.data.max_length)
    outputs = generate_seq2seq(model, tokenizer, prompts, recipe.eval, recipe.data.max_length)
    corpus, per_example = text_metrics(outputs, references, recipe.eval.exact_match_normalize,
                                       [r.get("lang") for r in records])
    rows = _base_rows(records, prompts, references, tokenizer, recipe)
    _attach(rows, outputs, per_example, ppl)
    return {"summary": _generation_summary(corpus, ppl, len(records)), "rows": rows}


@torch.inference_mode()
def evaluate_classification(model: Any, tokenizer: Any, records: list[dict], prompts: list[str],
                            recipe: Recipe) -> dict:
    """Accuracy, P/R/F1 and confusion matrix; loss is the cross-entropy of the true label."""
    model.eval()
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    label2id = {v: k for k, v in id2label.items()}
    true = [str(r["label"]) for r in records]
    pred: list[str] = []
    nll: list[float] = []
    size = recipe.eval.batch_size
    for start in range(0, len(records), size):
        batch = tokenizer(prompts[start:start + size], truncation=True, max_length=recipe.data.max_length,
                          padding=True, return_tensors="pt").to(model.device)
        logprobs = F.log_softmax(model(**batch).logits.float(), dim=-1)
        for row, label in zip(logprobs, true[start:start + size], strict=True):
            pred.append(id2label[int(row.argmax())])
            nll.append(-float(row[label2id[label]]) if label in label2id else math.nan)
    summary = classification_metrics(true, pred, labels=sorted(set(true) | set(id2label.values())))
    known = [v for v in nll if not math.isnan(v)]
    mean = sum(known) / len(known) if known else math.nan
    summary = {"perplexity": math.exp(mean), "nll": mean, "exact_match": summary["accuracy"], **summary,
               "examples": len(records)}
    rows = _base_rows(records, prompts, true, tokenizer, recipe)
    for row, p, loss in zip(rows, pred, nll, strict=True):
        row |= {"output": p, "label": row["reference"], "correct": float(p == row["reference"]), "nll": loss,
                "tokens": 1}
    return {"summary": summary, "rows": rows, "true_labels": true, "pred_labels": pred}


def evaluate_model(model: Any, tokenizer: Any, records: list[dict[str, Any]], prompts: list[str],
                   recipe: Recipe) -> dict[str, Any]:
    """{"summary": corpus figures, "rows": per-example rows (+ labels for classification)} for the recipe's task."""
    evaluate: Evaluator = get_task(recipe.task).part("evaluate")
    return evaluate(model, tokenizer, records, prompts, recipe)


def chat_prompt(record: dict[str, Any], recipe: Recipe) -> str:
    """The last user turn of a conversation record, as trained (system prompt included)."""
    messages = record_to_messages(record, recipe.data.system_prompt)
    return messages[-2]["content"] if len(messages) > 1 else ""


def record_prompt(record: dict[str, Any], recipe: Recipe) -> str:
    """What the model is asked for one eval record (shown in the report, fed to generation)."""
    prompt: Prompt = get_task(recipe.task).part("prompt")
    return prompt(record, recipe)


def text_prompt(record: dict[str, Any], recipe: Recipe) -> str:
    """The text a classifier labels."""
    return str(record.get("text", ""))


def source_prompt(record: dict[str, Any], recipe: Recipe) -> str:
    """The source an encoder-decoder answers."""
    return str(record.get("source", ""))
