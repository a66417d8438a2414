"""Recipe sections of the prepare stage (``data``): inputs, cleaning, filters, dedup, PII, split, rehearsal."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ayar.recipe.section import Section

DataFormat = Literal["alpaca", "sharegpt", "messages", "text", "classification", "seq2seq", "preference", "kto"]
PiiType = Literal["EMAIL", "PHONE", "IBAN", "CARD", "TCKN", "IP"]
ReasoningMode = Literal["learn", "mask", "drop"]  # what training does with assistant reasoning traces


class InputConfig(Section):
    path: str = Field(description="File, folder, or hub dataset name.")
    format: DataFormat | None = Field(None, description="Record shape; defaults to data.format.")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map the shape's field names to your columns, e.g. {instruction: talimat}."
    )
    weight: float = Field(1.0, gt=0, description="Sampling weight when mixing several inputs.")
    split: str | None = Field(None, description="Hub datasets: which split to read.")


class SyntheticConfig(Section):
    """The project's own seeded instruction generator with verifiable answers (TR + EN)."""

    num_records: int = Field(2000, ge=10)
    languages: list[Literal["tr", "en"]] = Field(default_factory=lambda: ["tr", "en"])
    tasks: list[str] = Field(
        default_factory=lambda: ["add", "reverse", "upper", "date"],
        description="Subset of: add, reverse, upper, date, month, parity (instructions) or topic (classification); "
        "or of the tool-calling tasks get_weather, convert_currency, get_local_time, create_reminder, "
        "convert_units, no_tool (format messages).",
    )
    guide_spans: bool = Field(False, description="Give each record with an input a guide_spans field: where its "
                              "answer's evidence lies in the user message (for method guided_attention).")
    tool_results: float = Field(0.25, ge=0, le=1, description="Tool-calling tasks: the share of calls followed by "
                                "the tool's output and a final answer.")


class CleanConfig(Section):
    unicode_nfc: bool = True
    fix_mojibake: bool = True
    strip_control: bool = True
    normalize_whitespace: bool = True
    strip_html: bool = False
    lowercase: bool = Field(False, description="Language-aware lower-casing (Turkish I/ı, İ/i).")
    language: Literal["tr", "en"] | None = Field(None, description="Default language; a record's 'lang' wins.")


class FilterConfig(Section):
    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(100_000, ge=1)
    min_tokens: int = Field(0, ge=0, description="Minimum tokens with the target model's tokenizer.")
    max_tokens: int | None = Field(None, ge=1)
    max_repeated_line_ratio: float = Field(0.5, ge=0, le=1)
    max_repeated_ngram_ratio: float = Field(0.5, ge=0, le=1)
    ngram_size: int = Field(3, ge=1)
    max_symbol_ratio: float = Field(0.5, ge=0)
    drop_empty_response: bool = True


class DedupConfig(Section):
    exact: bool = True
    near: bool = True
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity for near duplicates.")
    num_perm: int = Field(128, ge=16)
    shingle: Literal["word", "char"] = "word"
    ngram: int = Field(3, ge=1, description="Shingle size (words or characters).")


class PiiConfig(Section):
    enabled: bool = True
    types: list[PiiType] = Field(default_factory=lambda: list(typing.get_args(PiiType)))


class ConsentConfig(Section):
    field: str = Field("consent", description="Records whose field is false are dropped.")
    opt_out_file: Path | None = Field(None, description="File of record ids (one per line) to drop.")
    id_field: str = "id"


class SplitConfig(Section):
    train: float = Field(0.8, ge=0, le=1)
    validation: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    seed: int | None = Field(None, description="Split seed; defaults to run.seed.")
    stratify_by: str | None = Field(None, description="Field to stratify by (classification: 'label').")
    group_by: str | None = Field(None, description="Field whose records must stay in one split.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1.0, got {total:g}")
        return self


class LongTextConfig(Section):
    """Long documents (format text) for continued pretraining: split into token windows, never dropped whole."""

    split: bool = Field(True, description="Split text records longer than a window into windows (at paragraph, "
                        "then sentence boundaries). Off: a long record is truncated at max_length in training.")
    window_tokens: int | None = Field(None, ge=8, description="Tokens per window (default: data.max_length - 4, "
                                      "room for the EOS).")
    overlap_tokens: int = Field(0, ge=0, description="Tokens consecutive windows of a document share.")
    txt_records: Literal["document", "paragraph"] = Field(
        "document", description="A .txt file is one document (split into windows), or one record per paragraph.")


class RehearsalConfig(Section):
    """Rehearsal against forgetting: general instructions answered by the base model itself (greedy), mixed
    into the training split, so the fine-tune keeps the base's general behaviour while it learns the task."""

    prompts: str = Field("builtin", description="'builtin' (ayar's general instructions, EN and TR, none of them a "
                         "forgetting probe) or a file: .txt (one instruction a line) or .jsonl (an 'instruction' "
                         "field each). Prompts that match a forgetting probe are dropped.")
    share: float = Field(0.15, gt=0, lt=1, description="Fraction of the training examples that are rehearsal "
                         "(the base's answers repeat to reach it).")
    max_prompts: int | None = Field(None, ge=1, description="Use at most this many prompts (the first ones).")
    max_new_tokens: int = Field(48, ge=1, description="Answer length; an answer the base does not finish within it "
                                "is dropped (a cut-off answer would teach the model to stop mid-sentence).")
    batch_size: int = Field(32, ge=1, description="Prompts per generation batch.")


class DataConfig(Section):
    inputs: list[InputConfig] = Field(default_factory=list, description="Files to read; see also 'synthetic'.")
    synthetic: SyntheticConfig | None = Field(None, description="Generate data instead of reading files.")
    format: DataFormat = "alpaca"
    template: str = Field(
        "auto", description="Chat template: 'auto' (the tokenizer's own, else alpaca), 'alpaca', 'chatml' or "
        "'chatml_tools' (ChatML with tool calls, for models whose own template has none)."
    )
    system_prompt: str | None = None
    max_length: int = Field(256, ge=8, description="Tokens per example after formatting (longer is truncated).")
    mask_prompt: bool = Field(True, description="Loss on response tokens only (prompt labels are -100).")
    reasoning: ReasoningMode | None = Field(
        None, description="Assistant reasoning traces (a reasoning_content field or a leading <think> block): "
        "'learn' them like the answer, 'mask' them (in the input, never a label; the answer is learned), or "
        "'drop' them from the text. Default: learn, or drop when enable_thinking is false.")
    enable_thinking: bool | None = Field(
        None, description="The chat template's enable_thinking (Qwen3-style templates): false trains and serves "
        "a model that answers without thinking. Saved with the template as its default; unset: the template's own.")
    strict: bool = Field(False, description="Stop at the first malformed record instead of rejecting it.")
    clean: CleanConfig = Field(default_factory=CleanConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    consent: ConsentConfig = Field(default_factory=ConsentConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    num_proc: int = Field(1, ge=1, description="Worker processes for cleaning, PII and hashing in prepare.")
    tokenizer: str | None = Field(
        None, description="Tokenizer (folder or hub id) for token-length filters and the data card's token statistics."
    )
    save_arrow: bool = Field(True, description="Also save each split as a datasets Arrow folder (arrow/<split>).")
    card_examples: int = Field(3, ge=0, description="Examples shown per removal reason in the data card.")
    long_text: LongTextConfig = Field(default_factory=LongTextConfig)
    rehearsal: RehearsalConfig | None = Field(
        None, description="Mix the base model's own answers to general instructions into training (forgets less).")

    @model_validator(mode="after")
    def _thinking_agrees(self) -> DataConfig:
        if self.enable_thinking is False and self.reasoning in ("learn", "mask"):
            raise ValueError(f"data.reasoning: {self.reasoning} trains reasoning traces, but data.enable_thinking "
                             f"is false (a model that does not think): set data.reasoning: drop, or leave it unset")
        return self
