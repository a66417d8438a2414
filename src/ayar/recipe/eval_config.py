"""Recipe sections of the eval stage: metrics, the LLM judge, the risk probes and the forgetting gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ayar.recipe.section import Section


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
    benchmarks: BenchmarksConfig = Field(default_factory=lambda: BenchmarksConfig(),
                                         description="Standard benchmarks (lm-evaluation-harness) on base and tuned.")


class BenchmarksConfig(Section):
    """lm-evaluation-harness tasks on the base and the tuned model; empty ``tasks``: none run."""

    tasks: list[str] = Field(default_factory=list, description="lm-eval task names (hub data needs a network), "
                             "paths of local task YAMLs, or ayar_general (ayar's forgetting questions, offline).")
    local_data: dict[str, str] = Field(default_factory=dict, description="Hub task name -> a local folder "
                                       "standing in for its hub dataset, to run it offline: a copy of the dataset's "
                                       "hub repository (README.md with its configs) or a folder of split files "
                                       "(test.jsonl, validation.parquet...).")
    limit: int | None = Field(None, ge=1, description="Examples per task (all when empty).")
    num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples (each task's default when empty).")
    batch_size: int = Field(8, ge=1)
    apply_chat_template: bool = Field(False, description="Prompts in the model's chat template (published "
                                      "scores of base models are without it; ayar_general matches ayar's own "
                                      "choice scoring with it).")
    max_questions: int | None = Field(None, ge=1, description="ayar_general: how many of the probe's questions.")
    max_drop: float | None = Field(None, ge=0, description="Largest allowed fall of a task's main metric "
                                   "(0-1 scale) from base to tuned; past it the forgetting gate fails.")


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
