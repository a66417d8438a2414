"""The recipe: one YAML file, validated by this pydantic schema.

Defaults live here and only here (a method's own hyperparameters live in its module in
``ayar.methods``, so that adding a method touches no other file). Precedence is
defaults < YAML < ``--set dotted.key=value``. Unknown keys fail with the closest valid key.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ayar.errors import UsageError
from ayar.tasks import get_task, task_names

DataFormat = Literal["alpaca", "sharegpt", "messages", "text", "classification", "seq2seq", "preference", "kto"]
ExportFormat = Literal["hf", "adapter", "gguf", "onnx", "triton"]  # ayar.export registers a writer for each
GgufDtype = Literal["f16", "bf16", "f32", "q8_0", "q4_k_m", "q4_0"]
PiiType = Literal["EMAIL", "PHONE", "IBAN", "CARD", "TCKN", "IP"]


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(Section):
    name: str = Field("run", description="Run name; the run folder is <output_dir>/<name>.")
    output_dir: Path = Field(Path("runs"), description="Root folder for run folders.")
    seed: int = Field(42, description="Global seed for Python, NumPy, torch and data order.")
    overwrite: bool = Field(True, description="Reuse an existing run folder of the same name.")
    carbon: bool = Field(True, description="Track energy and CO2 of train and eval (codecarbon, offline).")
    country_iso_code: str = Field("TUR", description="Country for codecarbon's carbon intensity.")


class TokenizerTrainConfig(Section):
    vocab_size: int = Field(4096, ge=300, description="Byte-level BPE vocabulary size.")
    min_frequency: int = Field(2, ge=1, description="Minimum pair frequency for a BPE merge.")


class ScratchModelConfig(Section):
    architecture: Literal["llama", "gpt2"] = Field("llama", description="Config family built with from_config.")
    hidden_size: int = Field(256, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(688, ge=8)
    context_length: int = Field(256, ge=16, description="Maximum positions of the model.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ScratchModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self


class PretrainConfig(Section):
    """Pretrain a small base model from scratch (tokenizer and weights)."""

    enabled: bool = Field(False, description="Run the pretraining stage; its model becomes the base model.")
    corpus: str = Field(
        "pydoc_topics",
        description="'pydoc_topics' (CPython's own documentation text, offline) or a path to a .txt file/folder.",
    )
    tokenizer: TokenizerTrainConfig = Field(default_factory=TokenizerTrainConfig)
    model: ScratchModelConfig = Field(default_factory=ScratchModelConfig)
    window: int = Field(128, ge=8, description="Tokens per training window.")
    stride: int = Field(96, ge=1, description="Step between window starts (window - stride tokens overlap).")
    max_steps: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    precision: Literal["fp32", "bf16", "auto"] = Field("auto", description="auto: bf16 autocast where supported.")


class ModelConfig(Section):
    name_or_path: str | None = Field(
        None, description="Hub id or local folder. Empty: the model from the pretrain stage of this recipe."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(False, description="Run code shipped with the model. Off unless you trust it.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")
    num_labels: int | None = Field(None, ge=2, description="Classification: number of labels (inferred if empty).")


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
                              "answer's evidence lies in the user message (for method gate).")
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


class MethodConfig(BaseModel):
    """``name`` picks a method from ``ayar.methods``; the other keys are that method's own parameters.

    The methods layer checks both (``ayar.methods.check_method``, which the CLI calls as it loads a
    recipe, and every method's constructor): this schema sits below the methods and cannot know them.
    """

    model_config = ConfigDict(extra="allow")

    name: str = Field("lora", description="Fine-tuning method; see `ayar train --help`.")

    def params(self) -> dict[str, Any]:
        """The method's own parameters (every key but ``name``)."""
        return dict(self.model_extra or {})


class SelfDistillConfig(Section):
    """Self-distillation toward the base: weight x KL(base || tuned) on general prompts, beside the task loss."""

    weight: float = Field(0.0, ge=0, description="Weight of the KL term (0: off).")
    prompts: str = Field("builtin", description="'builtin' (the general rehearsal instructions, EN and TR) or a "
                         ".txt / .jsonl file as data.rehearsal.prompts takes; a row's 'output' is distilled too.")
    batch_size: int = Field(8, ge=1, description="General prompts per training step.")
    max_length: int = Field(128, ge=8, description="Tokens of each general prompt kept.")


class InterpolateConfig(Section):
    """Interpolation toward the base (WiSE-FT): the fine-tune's change scaled by ``alpha`` after training,
    written into the saved adapter or weights (so generate, serve and every export use it)."""

    alpha: float | Literal["auto"] | None = Field(
        None, description="Empty: off. A number in (0, 1]: that share of the change. auto: chosen on the "
        "validation split (the least forgetting among the values of grid that keep `keep` of the task gain).")
    grid: list[float] = Field([1.0, 0.8, 0.7, 0.6, 0.5, 0.4], min_length=1, description="Values auto tries.")
    keep: float = Field(0.9, gt=0, le=1, description="auto: share of the validation-loss improvement to keep.")
    examples: int = Field(64, ge=1, description="auto: validation records scored.")
    questions: int = Field(80, ge=2, description="auto: general probe questions whose base answers are scored.")
    text_tokens: int = Field(512, ge=16, description="auto: tokens of each language's general text scored.")

    @model_validator(mode="after")
    def _alphas_in_range(self) -> InterpolateConfig:
        values = [*self.grid, *([] if self.alpha in (None, "auto") else [self.alpha])]
        if any(not 0 <= float(v) <= 1 for v in values):
            raise ValueError("train.interpolate: alpha and grid values must lie in [0, 1]")
        return self


class TrainConfig(Section):
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="Optimizer steps; -1 means use epochs.")
    batch_size: int = Field(8, ge=1, description="Examples per device per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float = Field(1.0, ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on a GPU or CPU with native bf16 units, fp32 elsewhere. fp16 needs CUDA."
    )
    eval_steps: int | None = Field(None, ge=0, description="Validate every N steps, and once at the end (default: "
                                   "once per epoch); 0: no validation pass during training.")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps (default: at the end).")
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(10, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1, description="Evaluations without improvement.")
    load_best_model_at_end: bool = Field(False, description="Keep the checkpoint with the lowest validation loss.")
    gradient_checkpointing: bool = False
    group_by_length: bool = Field(
        False, description="Batch examples of similar length to cut padding. Off by default: on mixed-task data "
        "it makes one-task batches, and the quickstart's parity accuracy fell from 100% to 65% with it on.")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice).")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="A NaN/inf loss or gradient: stop with exit code 3, or skip the batch/step and count it."
    )
    on_oom: Literal["halve", "stop"] = Field(
        "halve", description="GPU out of memory: halve the micro-batch and double grad_accum, or stop."
    )
    packing: bool | Literal["auto"] = Field(
        "auto", description="Pack each batch's examples into shared rows (causal_lm; attention stays within an "
        "example via restarted position ids; the same examples per step). auto: wherever that is safe (not for "
        "methods with per-example columns or virtual tokens). Turns group_by_length off.")
    pack_length: int | None = Field(None, ge=1, description="Packed row capacity in tokens (default: the "
                                    "batch's longest example, so no row outgrows the unpacked batch).")
    optim: Literal["adamw_torch_fused", "adamw_torch", "adamw_torch_8bit", "adafactor", "sgd"] = Field(
        "adamw_torch_fused", description="Optimizer (transformers' name); fused AdamW runs on CPUs and GPUs.")
    torch_compile: bool = Field(False, description="torch.compile the model (slow first steps; measure first).")
    chunked_loss: bool = Field(True, description="causal_lm: compute the output layer and cross-entropy a chunk of "
                               "tokens at a time, never all logits at once (same loss; less memory).")
    self_distill: SelfDistillConfig = Field(default_factory=lambda: SelfDistillConfig(),
                                            description="KL to the base on general prompts, against forgetting.")
    interpolate: InterpolateConfig = Field(default_factory=lambda: InterpolateConfig(),
                                           description="WiSE-FT: move the fine-tune back toward its base.")
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=lambda: ["tensorboard"], description="Experiment trackers: tensorboard (<run>/tb), mlflow "
        "(<run>/mlruns unless MLFLOW_TRACKING_URI), wandb (<run>/wandb, offline unless logged in); [] for none.")


class EvalConfig(Section):
    split: Literal["test", "validation"] = "test"
    compare_base: bool = Field(True, description="Evaluate the base model too, side by side.")
    max_examples: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    stop: list[str] = Field(default_factory=list)
    perplexity_stride: int | None = Field(None, ge=1, description="Sliding-window stride for long texts.")
    exact_match_normalize: list[Literal["strip", "lower", "collapse_whitespace", "strip_punct"]] = Field(
        default_factory=lambda: ["strip"]
    )
    num_samples: int = Field(20, ge=0, description="Examples written to samples.jsonl.")
    bootstrap_resamples: int = Field(1000, ge=100, description="Paired bootstrap resamples for base-vs-tuned CIs.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the bootstrap intervals.")
    error_k: int = Field(5, ge=1, description="Error analysis: how many worst examples to list.")
    error_metric: Literal["chrf", "exact_match", "rouge1", "rouge2", "rougeL"] = Field(
        "chrf", description="Error analysis: the per-example score that ranks the worst examples."
    )
    label_field: str = Field("label", description="Record field for per-label buckets (falls back to 'task').")
    annotation_sheet: bool = Field(True, description="Write a blind human-annotation sheet (needs compare_base).")
    judge: JudgeConfig = Field(default_factory=lambda: JudgeConfig())
    risks: RiskConfig = Field(default_factory=lambda: RiskConfig())
    forgetting: ForgettingConfig = Field(default_factory=lambda: ForgettingConfig(),
                                         description="Forgetting report and gate (causal_lm with compare_base).")


class JudgeConfig(Section):
    """LLM as a judge: an OpenAI-compatible endpoint scores each answer 1-10 against the reference."""

    enabled: bool = False
    url: str = Field("http://127.0.0.1:8000/v1", description="Base URL of the OpenAI-compatible API.")
    model: str = Field("judge", description="Model name sent to the endpoint.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key (never the key).")
    rubric: str | None = Field(None, description="Prompt with {prompt}, {reference}, {output}; empty: built-in.")
    max_examples: int = Field(50, ge=1, description="Answers sent to the judge per model.")
    timeout_s: float = Field(60.0, gt=0)


class RiskConfig(Section):
    """The risk report's probes (carbon is run.carbon)."""

    enabled: bool = Field(True, description="Run the risk probes at all.")
    bias: bool = Field(True, description="Counterfactual TR/EN probes: log-likelihood gap and reply changes.")
    hallucination: bool = Field(True, description="Numbers and names in answers found in neither prompt nor reference.")
    security: bool = Field(True, description="Harmful and prompt-injection prompts: refusals and system-prompt leaks.")
    privacy: bool = Field(True, description="PII in generations and a verbatim memorisation probe on training records.")
    max_new_tokens: int = Field(24, ge=1, description="Reply length for the bias and security probes.")
    memorization_records: int = Field(50, ge=1, description="Training records probed for verbatim continuation.")
    rare_min_chars: int = Field(6, ge=2, description="A rare string is a token this long found in one record only.")


class ForgettingConfig(Section):
    """Tuned against base on general material the fine-tune never saw; the run fails past the bounds.

    The answers gate fails when the one-sided exact McNemar test on lost against gained answers gives
    p < ``significance`` and more than ``max_lost_share`` of the base's correct answers are lost: a run's
    noise alone does not fail it, real forgetting does. Each scoring is judged on its own."""

    enabled: bool = Field(True, description="Measure forgetting (causal_lm runs that evaluate the base too).")
    max_questions: int | None = Field(
        None, ge=2, description="General questions asked (English and Turkish alternate; empty: all of them).")
    text_tokens: int = Field(1024, ge=16, description="Tokens of held-out general text per language (en, tr).")
    window: int = Field(256, ge=8, description="Perplexity window in tokens (at most the model's context).")
    max_new_tokens: int = Field(24, ge=1, description="Answer length for the general questions (greedy scoring).")
    scoring: list[Literal["greedy", "choice"]] = Field(
        ["greedy", "choice"], min_length=1, description="greedy: generated answers checked against the accepted "
        "ones; choice: multiple-choice log-likelihood of the options (no generation; instruction questions "
        "are scored greedy only).")
    max_perplexity_increase: float | None = Field(
        0.25, ge=0, description="Fail when the general-text perplexity rises more than this in a language "
        "(relative; empty: no bound).")
    max_lost_share: float | None = Field(
        0.10, ge=0, le=1, description="Fail when more than this share of the base's correct answers is lost "
        "and the loss is significant (empty: no bound).")
    significance: float = Field(0.05, gt=0, lt=1, description="p-value below which the lost answers count as "
                                "significant (one-sided exact McNemar test).")
    max_answers_lost: int | None = Field(
        None, ge=0, description="Also fail when more than this many correct answers are lost (empty: no bound).")
    cache: bool = Field(True, description="Keep the base model's probe results by model hash "
                        "(~/.cache/ayar/forgetting; AYAR_CACHE moves it): a run evaluates the base once.")


class ExportConfig(Section):
    """What `ayar run` exports at its end when ``enabled`` (`ayar export` takes the same as options)."""

    enabled: bool = Field(False, description="End `ayar run` with this export (off: run stops after eval).")
    out: Path | None = Field(None, description="Where to write it (default: <run>/export/<format>).")
    format: ExportFormat = "hf"
    merge: bool = Field(True, description="Merge adapters into the base weights.")
    gguf_dtype: GgufDtype = Field(
        "f16", description="Weights type of a GGUF export (4-bit types use llama.cpp's quantizer).")


class ServeConfig(Section):
    """`ayar serve` defaults; its command-line options win."""

    host: str = Field("127.0.0.1", description="Bind address; 0.0.0.0 exposes the server to the network.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    max_queue: int = Field(64, ge=1, description="Requests waiting at most; more get 429 with Retry-After.")
    max_batch: int = Field(32, ge=1, description="Queued requests that decode alike, generated together.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    request_timeout: float = Field(60.0, gt=0, description="Seconds per request, queue wait included (504).")
    drain_timeout: float = Field(30.0, gt=0, description="Seconds SIGTERM waits for requests in flight.")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request names none.")
    log_requests: bool = Field(False, description="Log counts, timings and status per request to log_db.")
    log_text: bool = Field(False, description="Also log prompt text (PII-redacted); turns log_requests on.")
    log_db: Path | None = Field(None, description="SQLite request log (default: <run>/requests.sqlite).")
    engine: Literal["transformers", "llamacpp", "vllm"] = Field(
        "transformers", description="What generates: transformers (adapters by name, parity with training), "
        "llamacpp (an exported GGUF, fast on CPUs) or vllm (GPUs).")


class MonitorConfig(Section):
    """`ayar monitor drift` thresholds: (warn, alert) per score."""

    window: int = Field(1000, ge=20, description="Latest logged requests to compare with the training prompts.")
    psi: tuple[float, float] = Field((0.1, 0.25), description="Prompt-length PSI bands.")
    js: tuple[float, float] = Field((0.15, 0.3), description="Token Jensen-Shannon divergence bands.")
    mmd: tuple[float, float] = Field((0.02, 0.05), description="MiniLM embedding MMD² bands.")
    p_value: float = Field(0.01, gt=0, lt=1, description="An embedding shift counts only below this p-value.")


class IterateConfig(Section):
    """`ayar iterate`: feedback from serving -> v2, and the bounds of the gate that promotes or blocks it."""

    method: str | None = Field(None, description="Method for v2; empty: the recipe's own if the feedback fits it, "
                               "else dpo for pairs, kto for ratings alone, the SFT method for corrections alone.")
    holdout: float = Field(0.2, ge=0, lt=1, description="Share of feedback prompts held out to evaluate v1 vs v2.")
    min_records: int = Field(4, ge=1, description="Fewer usable feedback records than this: stop with an error.")
    replay: float = Field(0.5, ge=0, lt=1, description="Share of v2's training rows drawn from v1's own training "
                          "split (a seeded sample), so v2 keeps what v1 learned while it learns the feedback; used "
                          "when v2 trains on v1's record format (SFT after SFT), else 0. 0: feedback only.")
    gate_metric: str = Field("exact_match", description="Test-split metric the gate guards (a key of eval's "
                             "summary: exact_match, chrf, rougeL...).")
    max_test_drop: float = Field(0.02, ge=0, description="Largest allowed fall of gate_metric on the original "
                                 "test split (forgetting).")
    min_feedback_gain: float = Field(0.0, description="Held-out feedback preference accuracy must rise by more "
                                     "than this.")
    max_risk_increase: float = Field(0.05, ge=0, description="Largest allowed worsening of each risk rate (leaks, "
                                     "unsupported facts, memorisation, PII, fewer refusals).")
    drift_embeddings: bool = Field(True, description="Include the MiniLM embedding score in the drift report.")


class Recipe(Section):
    """A whole fine-tuning recipe."""

    task: str = Field("causal_lm", description="What the model learns; a task of ayar/tasks.py.",
                      # the registry at the time the schema is read (a task registered later shows too)
                      json_schema_extra=lambda schema: schema.update(enum=list(task_names())))
    run: RunConfig = Field(default_factory=RunConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    iterate: IterateConfig = Field(default_factory=IterateConfig)

    @field_validator("task")
    @classmethod
    def _registered_task(cls, task: str) -> str:
        try:
            get_task(task)  # the registry, read now: a task registered after import is accepted
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return task

    @model_validator(mode="after")
    def _has_a_model(self) -> Recipe:
        if self.model.name_or_path is None and not self.pretrain.enabled:
            raise ValueError("model.name_or_path is empty and pretrain.enabled is false: name a base model")
        return self

    @property
    def run_dir(self) -> Path:
        return self.run.output_dir / self.run.name


# ---------------------------------------------------------------- loading and overrides


def _section_fields(path: tuple[str | int, ...]) -> list[str]:
    """Valid keys at a location of the schema, for 'did you mean' hints."""
    model: type[BaseModel] | None = Recipe
    for part in path[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
        model = _first_model(annotation)
    return list(model.model_fields) if model else []


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found:
            return found
    return None


def _describe(err: dict[str, Any], params_model: type[BaseModel] | None = None) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
    key = ".".join(str(p) for p in loc) or "recipe"
    if err["type"] == "extra_forbidden":
        valid = ["name", *params_model.model_fields] if params_model else _section_fields(loc)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f" (did you mean '{'.'.join(str(p) for p in loc[:-1] + (close[0],))}'?)" if close else ""
        return f"unknown recipe key '{key}'{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"recipe key '{key}': {msg}"


def params_error(exc: ValidationError, section: str, params_model: type[BaseModel]) -> UsageError:
    """The UsageError for parameters validated outside this schema (a method's own, under ``section``),
    worded as the recipe's own keys are: ``unknown recipe key 'method.rank' (did you mean ...)``."""
    err = exc.errors()[0]
    return UsageError(_describe({**err, "loc": (section, *err["loc"])}, params_model))


def validate_recipe(data: dict[str, Any]) -> Recipe:
    """Validate a recipe dict; a mistake raises UsageError naming the key."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise UsageError(_describe(exc.errors()[0])) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``dotted.key=value``; the value is read as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise UsageError(f"--set '{text}' must look like dotted.key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise UsageError(f"--set '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides onto a raw recipe dict (creating sections as needed)."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise UsageError(f"--set '{text}': '{key}' is not a section")
            node = child
        node[keys[-1]] = value
    return data


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (or start from defaults when path is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"recipe file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise UsageError(f"recipe {path} is not valid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UsageError(f"recipe {path} must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded
    return validate_recipe(apply_overrides(data, overrides or []))


def dump_recipe(recipe: Recipe, path: Path) -> None:
    """Write the fully resolved recipe (defaults and overrides applied) as YAML."""
    data = recipe.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
