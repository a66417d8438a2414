"""Preference tuning through TRL's trainers: DPO, ORPO, KTO and SimPO, each over a LoRA or full base.

No loss is written here: each method names the TRL trainer and config class that implement it
(TRL 1.16: ``DPOTrainer``, ``KTOTrainer``; ORPO and SimPO live in ``trl.experimental``, SimPO as
``CPOTrainer`` with ``loss_type="simpo"`` and ``cpo_alpha=0``) and maps its recipe parameters onto that
config. Over a ``lora`` base the model is handed to TRL unwrapped together with a peft ``LoraConfig``:
TRL wraps it, and DPO/KTO compute the reference log-probabilities with the adapter disabled, so the
frozen base is the reference model and no second copy is held in memory. Over a ``full`` base TRL keeps a
frozen copy as the reference (DPO, KTO); ORPO and SimPO need no reference at all.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import PreTrainedModel

from ayar.console import say
from ayar.errors import UsageError
from ayar.methods import available_methods, register
from ayar.methods.base import Method, TrainerSpec
from ayar.methods.lora import LoraParams, lora_config

PREFERENCE_FORMATS = ("preference", "kto")  # data.format values a preference method trains on
BASES = ("lora", "dora", "full")


class PreferenceParams(BaseModel):
    """The base that holds the trainable weights, shared by every preference method."""

    model_config = ConfigDict(extra="forbid")

    base: Literal["lora", "dora", "full"] = Field(
        "lora", description="lora/dora: an adapter on the frozen base, which is also the reference model; "
        "full: every weight trains (DPO and KTO then keep a frozen copy as the reference).")
    base_params: dict[str, Any] = Field(default_factory=dict, description="The base method's own parameters "
                                        "(r, alpha, target_modules... for lora).")
    beta: float = Field(0.1, gt=0, description="Strength of the preference term (TRL's beta).")

    @model_validator(mode="after")
    def _base_params_valid(self) -> PreferenceParams:
        if self.base in ("lora", "dora"):
            lora = LoraParams.model_validate(self.base_params)
            init = str(lora.init_lora_weights)
            # TRL's trainer saves the adapter itself and builds its own optimizer: no PiSSA/OLoRA conversion
            # on save, no LoRA+ parameter groups
            if init.startswith("pissa") or init == "olora" or lora.loraplus_lr_ratio:
                raise ValueError("base_params: init_lora_weights pissa/olora and loraplus_lr_ratio need ayar's own "
                                 "trainer (method lora, dora or qlora), not a preference method's")
        elif self.base_params:
            raise ValueError("base_params must be empty for base 'full'")
        return self


class DpoParams(PreferenceParams):
    loss_type: str = Field("sigmoid", description="TRL DPO loss: sigmoid (DPO), ipo, hinge, robust, ...")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Robust/conservative DPO: assumed label noise.")
    sft_weight: float = Field(0.0, ge=0, description="Weight of an SFT (negative log-likelihood) term on the chosen "
                              "answers beside the preference term (RPO; TRL's 'sft' loss type): keeps DPO from "
                              "lowering the chosen answers' likelihood along with the rejected ones'.")


class OrpoParams(PreferenceParams):
    beta: float = Field(0.1, gt=0, description="Weight of the odds-ratio term beside the SFT loss (ORPO's lambda).")


class KtoParams(PreferenceParams):
    desirable_weight: float = Field(1.0, gt=0, description="Loss weight of records labelled good.")
    undesirable_weight: float = Field(1.0, gt=0, description="Loss weight of records labelled bad.")


class SimpoParams(PreferenceParams):
    beta: float = Field(2.0, gt=0, description="Scale of the length-normalised reward (SimPO's beta).")
    gamma: float = Field(0.5, ge=0, description="Target reward margin (SimPO's gamma).")


class PreferenceMethod(Method):
    """A method trained by a TRL trainer on preference (or KTO) records instead of ayar's Trainer."""

    tasks = ("causal_lm",)
    params_model: ClassVar[type[BaseModel]] = PreferenceParams
    uses_reference: ClassVar[bool] = True  # the loss compares with a frozen reference model
    unpaired: ClassVar[bool] = False  # trains on (prompt, completion, label) rather than pairs
    training_run: ClassVar[str] = "preference"  # TRL's trainer on the records (ayar.train.preference)

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.is_adapter = self.params.base != "full"
        self.frozen_weights_matmul_only = self.params.base == "lora"

    # -- what TRL needs (ayar.train.trainer.build_trainer plugs the trainer in through trainer_spec)

    def trl_classes(self) -> tuple[type, type]:
        """(trainer class, config class) from TRL."""
        raise NotImplementedError

    def trl_config_kwargs(self) -> dict[str, Any]:
        """This method's recipe parameters as TRL config fields."""
        return {"beta": self.params.beta}

    def peft_config(self, model: PreTrainedModel, task: str) -> Any:
        """The LoraConfig TRL wraps the model with, or None for a full base."""
        if self.params.base == "full":
            return None
        params = LoraParams.model_validate(self.params.base_params)
        config = lora_config(model, task, params, use_dora=self.params.base == "dora")
        head = _output_layer_name(model)
        if head and isinstance(config.target_modules, list | set) and head in config.target_modules:
            # TRL computes the log-probabilities from the output layer's weight directly, so an adapter on
            # it would never train (TRL refuses one); a recipe or an iterated LoRA run may list it.
            say(f"method {self.name}: no adapter on the output layer '{head}' (TRL reads its weight directly)")
            config.target_modules = {m for m in config.target_modules if m != head}
        return config

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        """A LoRA base is left unwrapped for TRL to wrap (so the reference is the adapter switched off);
        a full base trains every weight against a frozen copy made here (DPO, KTO)."""
        self._peft_config = self.peft_config(model, task)
        self._ref_model = None
        if self._peft_config is None:
            for param in model.parameters():
                param.requires_grad_(True)
            if self.uses_reference:
                # TRL would reload the reference from config._name_or_path, which a model built or converted
                # in memory does not have; a copy made here works for every base.
                self._ref_model = frozen_copy(model)
        return model

    def trainer_spec(self) -> TrainerSpec:
        """The TRL trainer and config with this method's parameters (call after ``prepare_model``)."""
        trainer_cls, config_cls = self.trl_classes()
        args = {**self.trl_config_kwargs(), "remove_unused_columns": False,
                "include_num_input_tokens_seen": "no"}  # TRL's batches carry no input_ids to count
        kwargs: dict[str, Any] = {"peft_config": getattr(self, "_peft_config", None)}
        if self.uses_reference:
            kwargs["ref_model"] = getattr(self, "_ref_model", None)
        return TrainerSpec(trainer_cls, config_cls, args, kwargs)

    def trl_records(self, records: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
        """Records in TRL's conversational shape for this method's trainer."""
        pairs = [to_conversational(r, system_prompt) for r in records]
        return unpair(pairs) if self.unpaired else [p for p in pairs if "chosen" in p]

    @classmethod
    def data_format(cls) -> str:
        """The ``data.format`` this method's records come in: ``kto`` when unpaired, else ``preference``."""
        return "kto" if cls.unpaired else "preference"


def preference_methods(unpaired: bool | None = None) -> dict[str, type[PreferenceMethod]]:
    """Registered preference methods by name, by the feedback they train on.

    ``unpaired=False``: methods trained on (chosen, rejected) pairs; ``True``: methods trained on single
    answers labelled good or bad (pairs split into two such records); None: both. Read from the registry,
    so a new preference method module is listed with no change elsewhere.
    """
    return {name: cls for name, cls in available_methods().items()
            if issubclass(cls, PreferenceMethod) and unpaired in (None, cls.unpaired)}


def _output_layer_name(model: PreTrainedModel) -> str | None:
    """The module name (last part) of the model's output layer, e.g. ``lm_head``."""
    head = model.get_output_embeddings()
    return next((name.rsplit(".", 1)[-1] for name, module in model.named_modules() if module is head), None)


def frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A copy of the model with no trainable weight, in eval mode (the reference of a full-base DPO/KTO run)."""
    ref = copy.deepcopy(model).eval()
    for param in ref.parameters():
        param.requires_grad_(False)
    return ref


def _messages(value: Any, role: str) -> list[dict[str, str]]:
    """A string becomes one message of ``role``; a list of messages is kept as it is."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise UsageError(f"a preference record's field must be a string or a list of messages, got {value!r:.80}")


def to_conversational(record: dict[str, Any], system_prompt: str | None = None) -> dict[str, Any]:
    """A preference or KTO record in TRL's conversational shape.

    ``{prompt, chosen, rejected}`` or ``{prompt, completion, label}``, each text a string or a list of
    messages; the system prompt goes first in the prompt unless the record brings its own.
    """
    if "prompt" not in record:
        raise UsageError(f"a preference record needs a 'prompt' field; got fields {sorted(record)}")
    prompt = _messages(record["prompt"], "user")
    if system_prompt and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system_prompt}, *prompt]
    if "chosen" in record and "rejected" in record:
        return {"prompt": prompt, "chosen": _messages(record["chosen"], "assistant"),
                "rejected": _messages(record["rejected"], "assistant")}
    if "completion" in record and "label" in record:
        return {"prompt": prompt, "completion": _messages(record["completion"], "assistant"),
                "label": _label(record["label"])}
    raise UsageError("a preference record needs 'chosen' and 'rejected', or 'completion' and 'label'; got fields "
                     f"{sorted(record)}")


def _label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "up", "good", "yes"):
        return True
    if text in ("0", "false", "down", "bad", "no"):
        return False
    raise UsageError(f"a KTO label must be true/false (or up/down), got {value!r}")


def unpair(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """KTO's shape: each pair gives a good (chosen) and a bad (rejected) record; unpaired records pass."""
    out = []
    for r in records:
        if "chosen" in r:
            out.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
            out.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
        else:
            out.append(r)
    return out


@register
class Dpo(PreferenceMethod):
    name = "dpo"
    summary = "Direct preference optimisation on (prompt, chosen, rejected) pairs against a frozen reference."
    params_model = DpoParams

    def trl_classes(self) -> tuple[type, type]:
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer, DPOConfig

    def trl_config_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"beta": self.params.beta, "loss_type": [self.params.loss_type],
                                  "label_smoothing": self.params.label_smoothing}
        if self.params.sft_weight:
            kwargs |= {"loss_type": [self.params.loss_type, "sft"], "loss_weights": [1.0, self.params.sft_weight]}
        return kwargs


@register
class Orpo(PreferenceMethod):
    name = "orpo"
    summary = "Odds-ratio preference optimisation: SFT on chosen plus a preference term; no reference model."
    params_model = OrpoParams
    uses_reference = False

    def trl_classes(self) -> tuple[type, type]:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer, ORPOConfig


@register
class Kto(PreferenceMethod):
    name = "kto"
    summary = "Kahneman-Tversky optimisation: learns from single answers labelled good or bad (no pairs needed)."
    params_model = KtoParams
    unpaired = True

    def trl_classes(self) -> tuple[type, type]:
        from trl import KTOConfig, KTOTrainer

        return KTOTrainer, KTOConfig

    def trl_config_kwargs(self) -> dict[str, Any]:
        # TRL's KTO loss estimates its KL term against neighbouring records of a fixed-order batch
        # (the trainer is built with resumable_order=False for the same reason).
        return {"beta": self.params.beta, "desirable_weight": self.params.desirable_weight,
                "undesirable_weight": self.params.undesirable_weight, "train_sampling_strategy": "sequential"}


@register
class Simpo(PreferenceMethod):
    name = "simpo"
    summary = "SimPO: length-normalised preference loss with a target margin; no reference model."
    params_model = SimpoParams
    uses_reference = False

    def trl_classes(self) -> tuple[type, type]:
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOTrainer, CPOConfig

    def trl_config_kwargs(self) -> dict[str, Any]:
        # SimPO is CPO's trainer with the simpo loss and no behaviour-cloning term (cpo_alpha 0), as TRL documents.
        return {"beta": self.params.beta, "loss_type": "simpo", "simpo_gamma": self.params.gamma, "cpo_alpha": 0.0}
