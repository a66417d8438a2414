"""LoRA and DoRA through peft: low-rank adapters on chosen linear layers, the base frozen.

Beside the plain adapter: rank-stabilised scaling (rsLoRA), PiSSA and OLoRA initialisation (which move
part of each base weight into the adapter, so the saved adapter is converted back to a plain LoRA on the
original base when training ends) and LoRA+ (a larger learning rate for the B matrices).
"""

from __future__ import annotations

import re
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, TaskType, get_peft_model
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from pydantic import BaseModel, ConfigDict, Field, field_validator
from transformers import PreTrainedModel

from ayar.errors import UsageError
from ayar.methods import register
from ayar.methods.base import Method
from ayar.methods.structure import optimizer_groups, task_head_names
from ayar.tasks import get_task

INIT_CHOICES = "true, gaussian, pissa, pissa_niter_<N>, olora"
LOFTQ_REFUSED = (
    "loftq is not supported: LoftQ quantizes the base with bitsandbytes on a CUDA GPU and the adapter then "
    "belongs to that quantized copy, not to the original base ayar loads it onto; use method.name: qlora "
    "(adapters on a 4-bit base) or init_lora_weights: pissa (full-precision base)"
)
# peft's subfolder name for the adapter as first initialised; it becomes an adapter name during conversion
INITIAL_ADAPTER = "initial_adapter"


def peft_task_type(task: str) -> TaskType:
    """peft's task type for a task, as the task registry names it."""
    return TaskType[get_task(task).peft_task_type]


def checked_init(value: bool | str) -> bool | str:
    """A recipe's ``init_lora_weights`` as peft takes it; a ValueError for what ayar cannot train or save."""
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        return True
    if value in ("gaussian", "pissa", "olora") or (isinstance(value, str) and re.fullmatch(r"pissa_niter_\d+", value)):
        return value
    if value == "loftq":
        raise ValueError(LOFTQ_REFUSED)
    raise ValueError(f"must be one of {INIT_CHOICES}; got {value!r}")


class LoraParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1, description="Rank of the update matrices.")
    alpha: float = Field(16, gt=0, description="Scaling: the update is multiplied by alpha / r.")
    # 0.0 as in peft, torchtune and LLaMA-Factory: dropout on the adapter input keeps one more copy of every
    # adapted layer's input for backward (memory) and costs a mask per layer per step (4% of a small Llama's
    # LoRA step in the 2026-11-23 profile, docs/performance.md)
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear", "auto"] = Field(
        "auto", description="Module names to adapt; 'auto' uses peft's choice for the architecture."
    )
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[str] | None = Field(
        None, description="Extra modules trained fully; empty: the new task head for classification."
    )
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA: scale the update by alpha / sqrt(r), "
                             "so that a higher rank keeps learning as fast.")
    init_lora_weights: bool | str = Field(
        True, description=f"Adapter initialisation: {INIT_CHOICES}. true: B = 0 (the adapter starts as a no-op); "
        "pissa/olora move the base's principal part into the adapter (faster convergence).")
    loraplus_lr_ratio: float | None = Field(
        None, ge=1, description="LoRA+: the B matrices learn this many times faster than the A matrices "
        "(16 in the LoRA+ paper); empty: one learning rate.")

    @field_validator("init_lora_weights")
    @classmethod
    def _known_init(cls, value: bool | str) -> bool | str:
        return checked_init(value)


def moves_base_weights(params: LoraParams) -> bool:
    """True for PiSSA and OLoRA, which subtract the adapter's starting product from each adapted base weight."""
    init = params.init_lora_weights
    return isinstance(init, str) and (init.startswith("pissa") or init == "olora")


def target_modules_for(model: PreTrainedModel, choice: list[str] | str) -> list[str] | str:
    """peft's default target modules for the architecture, else every linear layer."""
    if choice != "auto":
        return choice
    model_type = getattr(model.config, "model_type", "")
    return TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type, "all-linear")


def modules_to_save_for(model: PreTrainedModel, task: str, choice: list[str] | None) -> list[str] | None:
    """The recipe's list, else the new head of a classifier (peft alone knows only 'classifier' and 'score')."""
    if choice is not None or not get_task(task).label_map:
        return choice
    return task_head_names(model) or None


def wrap_peft(model: PreTrainedModel, config: object, method: str) -> torch.nn.Module:
    """``get_peft_model`` with peft's refusals (architecture, task) turned into one clear UsageError."""
    try:
        return get_peft_model(model, config)  # type: ignore[arg-type]
    except (ValueError, TypeError, NotImplementedError, KeyError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"method '{method}' cannot wrap {type(model).__name__} "
                         f"({getattr(model.config, 'model_type', '?')}): {first}") from None


def lora_config(model: PreTrainedModel, task: str, params: LoraParams, use_dora: bool,
                own_trainer: bool = False) -> LoraConfig:
    """The peft LoraConfig for a recipe's parameters.

    ``own_trainer``: the caller trains with ayar's Trainer and the LoRA methods' hooks, which apply
    LoRA+'s param groups and convert a PiSSA/OLoRA adapter at save; any other caller is refused those.
    """
    if not own_trainer and (moves_base_weights(params) or params.loraplus_lr_ratio):
        raise UsageError("init_lora_weights: pissa/olora and loraplus_lr_ratio work with the methods lora, dora "
                         "and qlora (and those built on them); this method's trainer applies neither")
    return LoraConfig(
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=target_modules_for(model, params.target_modules),
        bias=params.bias,
        modules_to_save=modules_to_save_for(model, task, params.modules_to_save),
        task_type=peft_task_type(task),
        use_dora=use_dora,
        use_rslora=params.use_rslora,
        init_lora_weights=params.init_lora_weights,
    )


def is_lora_b(name: str) -> bool:
    """The zero-initialised factor of a LoRA pair (linear or embedding), which LoRA+ trains faster."""
    return ".lora_B." in name or ".lora_embedding_B." in name


def loraplus_groups(model: torch.nn.Module, base_lr: float, weight_decay: float, ratio: float) -> list[dict]:
    """Param groups with ``ratio`` times the learning rate on the B matrices (LoRA+), the rest at ``base_lr``."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    b_matrices = [p for name, p in trainable if is_lora_b(name)]
    others = [p for name, p in trainable if not is_lora_b(name)]
    return optimizer_groups(model, [(others, base_lr), (b_matrices, base_lr * ratio)], weight_decay)


def conversion_loss_error(init: str, lost: str) -> UsageError:
    """The refusal of a PiSSA/OLoRA run that trains weights the conversion to a plain LoRA drops."""
    return UsageError(f"method.init_lora_weights: {init} saves the adapter converted to a plain LoRA, which "
                      f"keeps only the lora_A/lora_B matrices and would lose {lost}; "
                      "use init_lora_weights: true or gaussian")


def dropped_by_conversion(params: LoraParams, task: str, use_dora: bool) -> str | None:
    """What the recipe trains beside the A/B matrices (named for the refusal), or None."""
    if use_dora:
        return "DoRA's magnitudes (method.name: dora)"
    if params.bias != "none":
        return f"the biases (method.bias: {params.bias})"
    if params.modules_to_save:
        return "method.modules_to_save"
    if get_task(task).label_map:
        return f"the classifier head that task {task} trains"
    return None


def refuse_unconvertible(model: torch.nn.Module, init: str) -> None:
    """The same refusal for the wrapped model, which also shows what the recipe cannot (embedding adapters)."""
    lost = [name for name, p in model.named_parameters()
            if p.requires_grad and ".lora_A." not in name and ".lora_B." not in name]
    if lost:
        more = ", ..." if len(lost) > 2 else ""
        raise conversion_loss_error(init, f"{len(lost)} trained tensors ({', '.join(lost[:2])}{more})")


def save_initial_adapter(model: torch.nn.Module) -> tempfile.TemporaryDirectory:
    """The adapter as initialised, in a temporary folder that lives as long as the returned handle."""
    holder = tempfile.TemporaryDirectory(prefix="ayar-lora-initial-")
    model.save_pretrained(str(Path(holder.name) / INITIAL_ADAPTER))
    return holder


class LoraOptions:
    """The hooks LoRA+ and PiSSA/OLoRA need from a method that wraps the model with :func:`lora_config`."""

    params: LoraParams
    use_dora: bool = False
    initial_adapter: tempfile.TemporaryDirectory | None = None

    def preflight(self, task: str) -> None:
        super().preflight(task)  # type: ignore[misc]
        lost = dropped_by_conversion(self.params, task, self.use_dora)
        if moves_base_weights(self.params) and lost:
            raise conversion_loss_error(str(self.params.init_lora_weights), lost)

    def remember_initial_adapter(self, model: torch.nn.Module) -> torch.nn.Module:
        """Keep the adapter as PiSSA/OLoRA initialised it: the final save converts against it."""
        if moves_base_weights(self.params):
            refuse_unconvertible(model, str(self.params.init_lora_weights))
            self.initial_adapter = save_initial_adapter(model)
        return model

    def save_model(self, model: torch.nn.Module, folder: Path) -> None:
        """PiSSA/OLoRA: the trained adapter converted to a plain LoRA (twice the rank) for the original base,
        peft's ``path_initial_model_for_weight_conversion``. Only the final model: a checkpoint is resumed
        into a freshly initialised PiSSA/OLoRA model (the base already reduced), so it keeps the adapter
        as trained."""
        if self.initial_adapter is None:
            super().save_model(model, folder)  # type: ignore[misc]
            return
        initial = Path(self.initial_adapter.name) / INITIAL_ADAPTER
        with warnings.catch_warnings():
            # peft loads the initial adapter beside the trained one to convert, and warns to convert
            warnings.filterwarnings("ignore", message=".*changes the base weights of the model")
            model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=str(initial))

    def param_groups(self, model: torch.nn.Module, base_lr: float, weight_decay: float) -> list[dict] | None:
        ratio = self.params.loraplus_lr_ratio
        return loraplus_groups(model, base_lr, weight_decay, ratio) if ratio else None


@register
class Lora(LoraOptions, Method):
    name = "lora"
    summary = "Low-rank adapters on a frozen base: the default; little memory, small files, fast."
    params_model = LoraParams
    is_adapter = True
    frozen_weights_matmul_only = True

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        config = lora_config(model, task, self.params, self.use_dora, own_trainer=True)
        return self.remember_initial_adapter(wrap_peft(model, config, self.name))


@register
class Dora(Lora):
    name = "dora"
    summary = "LoRA with a learned magnitude per weight column (DoRA): closer to full fine-tuning at low rank."
    use_dora = True
    frozen_weights_matmul_only = False
