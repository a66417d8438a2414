"""What differs between tasks in training: how records become tensors, the collator, model-loading arguments.

A task's definition (``ayar.tasks``) names its encoding and collator among the functions here; everything
else reads the task's facts. causal_lm: chat/instruction records (prompt masked) or plain text.
classification: ``text`` and ``label`` (strings or ints). seq2seq: ``source`` and ``target`` for
encoder-decoder models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

from ayar.data.reasoning import has_reasoning, reasoning_mode
from ayar.data.templates import (
    apply_thinking_default,
    record_to_messages,
    record_tools,
)
from ayar.data.tokenize import IGNORE_INDEX, check_learned_tokens, tokenize_conversation, tokenize_text
from ayar.data.windows import ends_document
from ayar.errors import UsageError
from ayar.recipe import Recipe
from ayar.tasks import get_task

if TYPE_CHECKING:
    from ayar.methods.base import Method


@dataclass
class LabelMap:
    """Class names and their ids, fixed from the training split so every split agrees."""

    names: list[str]

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> LabelMap:
        return cls(sorted({str(r["label"]) for r in records}))

    def id_of(self, label: Any) -> int:
        try:
            return self.names.index(str(label))
        except ValueError:
            raise UsageError(f"label '{label}' does not occur in the training split {self.names}") from None

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_labels": len(self.names), "id2label": dict(enumerate(self.names)),
                "label2id": {n: i for i, n in enumerate(self.names)}}


Encoder = Callable[[dict[str, Any], Any, Recipe, LabelMap | None], dict]  # (record, tokenizer, recipe, labels)
CollatorFactory = Callable[[Any, Any], Any]  # (tokenizer, model) -> a collator


def check_task_format(recipe: Recipe) -> None:
    """A clear error when the data format does not fit the task."""
    allowed = get_task(recipe.task).formats
    if recipe.data.format not in allowed:
        raise UsageError(f"data.format '{recipe.data.format}' does not fit task '{recipe.task}'; "
                         f"use one of {', '.join(allowed)}")


def encode_record(record: dict[str, Any], tokenizer: Any, recipe: Recipe, labels: LabelMap | None) -> dict:
    """One record as token ids and labels for the recipe's task."""
    encode: Encoder = get_task(recipe.task).part("encode")
    return encode(record, tokenizer, recipe, labels)


def encode_classification(record: dict[str, Any], tokenizer: Any, recipe: Recipe, labels: LabelMap | None) -> dict:
    """The text's ids; the label's id in the training split's label map."""
    encoded = tokenizer(record["text"], truncation=True, max_length=recipe.data.max_length)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
            "labels": labels.id_of(record["label"])}


def encode_seq2seq(record: dict[str, Any], tokenizer: Any, recipe: Recipe, labels: LabelMap | None) -> dict:
    """The source's ids; the target's ids as labels."""
    encoded = tokenizer(record["source"], text_target=record["target"], truncation=True,
                        max_length=recipe.data.max_length)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
            "labels": encoded["labels"]}


def encode_causal_lm(record: dict[str, Any], tokenizer: Any, recipe: Recipe, labels: LabelMap | None) -> dict:
    """Plain text as a document, or a conversation through the chat template (prompt masked if asked)."""
    cfg = recipe.data
    if cfg.format == "text":
        return tokenize_text(tokenizer, record["text"], cfg.max_length, add_eos=ends_document(record))
    return tokenize_conversation(tokenizer, record_to_messages(record, cfg.system_prompt), cfg.max_length,
                                 cfg.mask_prompt, record_tools(record), reasoning_mode(cfg.reasoning, cfg.enable_thinking))


def record_as_trained(record: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """The record as a method's ``encode_extra`` sees it: a chat record gains the messages exactly as
    trained (system prompt included) under ``messages``."""
    if not get_task(recipe.task).renders_chat(recipe.data.format):
        return record
    return {**record, "messages": record_to_messages(record, recipe.data.system_prompt)}


def tokenize_split(records: list[dict[str, Any]], tokenizer: Any, recipe: Recipe,
                   labels: LabelMap | None = None, method: Method | None = None) -> Dataset:
    """Tokenize one split; every row keeps its ``example_index`` and ``length`` for methods and sampling.

    With a ``method``, each row also gets the method's extra columns (``Method.encode_extra``).
    """
    if get_task(recipe.task).renders_chat(recipe.data.format):
        # normally set with the template already; repeated here so every tokenized split renders with it
        apply_thinking_default(tokenizer, recipe.data.enable_thinking)
    rows = []
    for index, record in enumerate(records):
        encoded = encode_record(record, tokenizer, recipe, labels)
        extra = method.encode_extra(record_as_trained(record, recipe), encoded, tokenizer, recipe.task) \
            if method is not None else {}
        rows.append({**encoded, **extra, "example_index": index})
    if get_task(recipe.task).renders_chat(recipe.data.format):
        check_learned_tokens(rows, "this split", recipe.data.max_length)
    return Dataset.from_list(rows).map(lambda r: {"length": len(r["input_ids"])})


class PerTokenColumnsCollator:
    """Pads a method's per-token columns (lists as long as ``input_ids``) with 0 on the tokenizer's padding
    side and stacks them; the wrapped collator pads everything else.

    Written by hand because transformers' collators pad only the columns they know (ids, masks, labels).
    """

    def __init__(self, inner: Any, names: Sequence[str], padding_side: str = "right") -> None:
        self.inner, self.names, self.left = inner, tuple(names), padding_side == "left"

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        per_token = [n for n in self.names if features and isinstance(features[0].get(n), list)]
        if not per_token:
            return self.inner(features)
        columns = {name: [f[name] for f in features] for name in per_token}
        batch = self.inner([{k: v for k, v in f.items() if k not in columns} for f in features])
        width = batch["input_ids"].shape[1]
        for name, rows in columns.items():
            padded = torch.zeros((len(rows), width), dtype=torch.long)
            for r, row in enumerate(rows):
                values = torch.tensor(row[:width], dtype=torch.long)
                if self.left:
                    padded[r, width - len(values):] = values
                else:
                    padded[r, :len(values)] = values
            batch[name] = padded
        return batch


def collator_for(recipe: Recipe, tokenizer: Any, model: Any, method_columns: Sequence[str] = ()) -> Any:
    """Pads a batch: labels with -100 for generative tasks, plain padding for classification.

    ``method_columns`` (``Method.model_inputs_extra``) that hold one value per token are padded too.
    """
    make_collator: CollatorFactory = get_task(recipe.task).part("collator")
    collator = make_collator(tokenizer, model)
    if not method_columns:
        return collator
    return PerTokenColumnsCollator(collator, method_columns, getattr(tokenizer, "padding_side", "right"))


def model_kwargs_for(recipe: Recipe, tokenizer: Any, labels: LabelMap | None) -> dict[str, Any]:
    """Extra from_pretrained arguments for the task (label maps, pad token for decoder classifiers)."""
    if not get_task(recipe.task).label_map:
        return {}
    kwargs = labels.model_kwargs()
    if recipe.model.num_labels and recipe.model.num_labels != kwargs["num_labels"]:
        raise UsageError(f"model.num_labels is {recipe.model.num_labels} but the training split has "
                         f"{kwargs['num_labels']} labels: {labels.names}")
    kwargs["pad_token_id"] = tokenizer.pad_token_id  # decoder classifiers find the last token by it
    return kwargs


def causal_lm_collator(tokenizer: Any, model: Any) -> DataCollatorForSeq2Seq:
    """Pads ids and masks, and labels with -100 so padding is never learned."""
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


def classification_collator(tokenizer: Any, model: Any) -> DataCollatorWithPadding:
    """Pads ids and masks; a label is one id per record."""
    return DataCollatorWithPadding(tokenizer)


def seq2seq_collator(tokenizer: Any, model: Any) -> DataCollatorForSeq2Seq:
    """Pads the target labels with -100; the model makes the decoder inputs from them."""
    return DataCollatorForSeq2Seq(tokenizer, model=model, padding=True, label_pad_token_id=IGNORE_INDEX)


def reasoning_trained(records: list[dict[str, Any]], recipe: Recipe) -> bool:
    """Whether training put reasoning traces in the text (the contract then pins a reasoning conversation)."""
    cfg = recipe.data
    if reasoning_mode(cfg.reasoning, cfg.enable_thinking) == "drop" or not get_task(recipe.task).renders_chat(
            cfg.format):
        return False
    return any(has_reasoning(record_to_messages(r, cfg.system_prompt)) for r in records)
