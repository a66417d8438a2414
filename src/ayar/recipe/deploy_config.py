"""Recipe sections after training: export, serving, drift monitoring and iteration on feedback."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ayar.recipe.section import Section

ExportFormat = Literal["hf", "adapter", "gguf", "onnx", "triton"]  # ayar.export registers a writer for each
GgufDtype = Literal["f16", "bf16", "f32", "q8_0", "q4_k_m", "q4_0"]


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
    tool_call_grammar: bool = Field(True, description="With tool_choice auto, hold a call the model opens to an "
                                    "offered function and its schema (transformers engine; free text stays free).")
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
    """`ayar iterate`: feedback from serving -> v2, and the bounds of the promotion check that promotes or blocks it."""

    method: str | None = Field(None, description="Method for v2; empty: the recipe's own if the feedback fits it, "
                               "else dpo for pairs, kto for ratings alone, the SFT method for corrections alone.")
    holdout: float = Field(0.2, ge=0, lt=1, description="Share of feedback prompts held out to evaluate v1 vs v2.")
    min_records: int = Field(4, ge=1, description="Fewer usable feedback records than this: stop with an error.")
    replay: float = Field(0.5, ge=0, lt=1, description="Share of v2's training rows drawn from v1's own training "
                          "split (a seeded sample), so v2 keeps what v1 learned while it learns the feedback; used "
                          "when v2 trains on v1's record format (SFT after SFT), else 0. 0: feedback only.")
    gate_metric: str = Field("exact_match", description="Test-split metric the promotion check guards (a key of eval's "
                             "summary: exact_match, chrf, rougeL...).")
    max_test_drop: float = Field(0.02, ge=0, description="Largest allowed fall of gate_metric on the original "
                                 "test split (forgetting).")
    min_feedback_gain: float = Field(0.0, description="Held-out feedback preference accuracy must rise by more "
                                     "than this.")
    max_risk_increase: float = Field(0.05, ge=0, description="Largest allowed worsening of each risk rate (leaks, "
                                     "unsupported facts, memorisation, PII, fewer refusals).")
    drift_embeddings: bool = Field(True, description="Include the MiniLM embedding score in the drift report.")
