"""Recipe sections of the train stage: the method (``method``) and the training loop (``train``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ayar.recipe.section import Section


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
    shared_opening: bool = Field(False, description="causal_lm with the chunked loss: where a batch's rows open "
                                 "alike (a chat template's system prompt), run the opening once for them all, and "
                                 "score self_distill's KL at the opening once (less work; the same loss and "
                                 "gradients in fp32, within rounding in bf16, which can move a run's "
                                 "trajectory). Off with gradient checkpointing.")
    self_distill: SelfDistillConfig = Field(default_factory=lambda: SelfDistillConfig(),
                                            description="KL to the base on general prompts, against forgetting.")
    interpolate: InterpolateConfig = Field(default_factory=lambda: InterpolateConfig(),
                                           description="WiSE-FT: move the fine-tune back toward its base.")
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=lambda: ["tensorboard"], description="Experiment trackers: tensorboard (<run>/tb), mlflow "
        "(<run>/mlruns unless MLFLOW_TRACKING_URI), wandb (<run>/wandb, offline unless logged in); [] for none.")
