"""What differs between tasks: how records become tensors, the collator, and model-loading arguments.

causal_lm: chat/instruction records (prompt masked) or plain text. classification: ``text`` and
``label`` (strings or ints). seq2seq: ``source`` and ``target`` for encoder-decoder models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

from ayar.data.templates import record_to_messages
from ayar.data.tokenize import IGNORE_INDEX, tokenize_chat, tokenize_text
from ayar.errors import UsageError
from ayar.recipe import Recipe

TASK_FORMATS = {
    "causal_lm": ("alpaca", "messages", "sharegpt", "text"),
    "classification": ("classification",),
    "seq2seq": ("seq2seq",),
}


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


def check_task_format(recipe: Recipe) -> None:
    """A clear error when the data format does not fit the task."""
    allowed = TASK_FORMATS[recipe.task]
    if recipe.data.format not in allowed:
        raise UsageError(f"data.format '{recipe.data.format}' does not fit task '{recipe.task}'; "
                         f"use one of {', '.join(allowed)}")


def encode_record(record: dict[str, Any], tokenizer: Any, recipe: Recipe, labels: LabelMap | None) -> dict:
    """One record as token ids and labels for the recipe's task."""
    cfg = recipe.data
    if recipe.task == "classification":
        encoded = tokenizer(record["text"], truncation=True, max_length=cfg.max_length)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                "labels": labels.id_of(record["label"])}
    if recipe.task == "seq2seq":
        encoded = tokenizer(record["source"], text_target=record["target"], truncation=True,
                            max_length=cfg.max_length)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                "labels": encoded["labels"]}
    if cfg.format == "text":
        return tokenize_text(tokenizer, record["text"], cfg.max_length)
    return tokenize_chat(tokenizer, record_to_messages(record, cfg.system_prompt), cfg.max_length, cfg.mask_prompt)


def tokenize_split(records: list[dict[str, Any]], tokenizer: Any, recipe: Recipe,
                   labels: LabelMap | None = None) -> Dataset:
    """Tokenize one split; every row keeps its ``example_index`` and ``length`` for methods and sampling."""
    rows = [{**encode_record(r, tokenizer, recipe, labels), "example_index": i} for i, r in enumerate(records)]
    return Dataset.from_list(rows).map(lambda r: {"length": len(r["input_ids"])})


def collator_for(recipe: Recipe, tokenizer: Any, model: Any) -> Any:
    """Pads a batch: labels with -100 for generative tasks, plain padding for classification."""
    if recipe.task == "classification":
        return DataCollatorWithPadding(tokenizer)
    return DataCollatorForSeq2Seq(tokenizer, model=model if recipe.task == "seq2seq" else None, padding=True,
                                  label_pad_token_id=IGNORE_INDEX)


def model_kwargs_for(recipe: Recipe, tokenizer: Any, labels: LabelMap | None) -> dict[str, Any]:
    """Extra from_pretrained arguments for the task (label maps, pad token for decoder classifiers)."""
    if recipe.task != "classification":
        return {}
    kwargs = labels.model_kwargs()
    if recipe.model.num_labels and recipe.model.num_labels != kwargs["num_labels"]:
        raise UsageError(f"model.num_labels is {recipe.model.num_labels} but the training split has "
                         f"{kwargs['num_labels']} labels: {labels.names}")
    kwargs["pad_token_id"] = tokenizer.pad_token_id  # decoder classifiers find the last token by it
    return kwargs
