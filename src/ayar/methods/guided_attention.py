"""Guided attention training: pull chosen attention heads toward the prompt spans an answer depends on.

Records carry ``guide_spans: [[start, end], ...]``: character offsets into the user message that
the first answer replies to (its content as ``record_to_messages`` builds it). At tokenization
they become three per-token columns: the prompt tokens (``guide_prompt``), the guide tokens among
them (``guide_tokens``) and the query positions that produce the first answer (``guide_query``: the
last prompt token through the answer's second-to-last token). Each step adds

    lambda * mean over (layer, head, query) of KL(guide || attention row over the prompt keys)

with the guide mask normalised to sum to 1 and each attention row renormalised over the prompt
keys. Rows without spans add nothing. Attention weights exist only in the eager backend, so the
model is loaded (or switched) to ``attn_implementation="eager"``; the weights are read by forward
hooks on the modules transformers records ``output_attentions`` from, within the training forward
pass (no second pass).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from transformers import PreTrainedModel
from transformers.utils.output_capturing import OutputRecorder

from ayar.console import say
from ayar.data.templates import record_to_messages, render_prompt
from ayar.data.tokenize import IGNORE_INDEX
from ayar.errors import AyarError, UsageError
from ayar.methods import register
from ayar.methods.wrapping import WrappedParams, WrappingMethod

COLUMNS = ("guide_prompt", "guide_tokens", "guide_query")
MARKER = "\ue000guide\ue001"  # private-use characters: no real message holds them
EPS = 1e-8  # floor for attention probabilities under a logarithm


class GuidedAttentionParams(WrappedParams):

    lambda_: float = Field(1.0, ge=0, alias="lambda", description="Weight of the guided-attention KL beside the "
                           "task loss (0 trains exactly as the base method, on eager attention).")
    layers: list[int] | Literal["all"] = Field(default_factory=lambda: [-1], description="Decoder layers whose "
                                               "attention is guided: indices (negative from the end) or 'all'.")
    heads: list[int] | Literal["all"] = Field("all", description="Heads guided in each chosen layer: indices or 'all'.")
    field: str = Field("guide_spans", description="Record field holding the [start, end] character spans.")

    @field_validator("layers", "heads")
    @classmethod
    def _non_empty_unique(cls, value: list[int] | str) -> list[int] | str:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("give distinct indices, at least one (or 'all')")
        return value


# ---------------------------------------------------------------- spans -> per-token columns


def checked_spans(spans: Any, length: int, where: str, field: str) -> list[tuple[int, int]]:
    """The spans as (start, end) pairs; a UsageError naming the record unless each is inside the message."""
    if not isinstance(spans, list):
        raise UsageError(f"{where}: '{field}' must be a list of [start, end] pairs, got {type(spans).__name__}")
    pairs = []
    for i, span in enumerate(spans):
        if not (isinstance(span, (list, tuple)) and len(span) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in span)):
            raise UsageError(f"{where}: {field}[{i}] must be a [start, end] pair of integers, got {span!r}")
        start, end = span
        if not 0 <= start < end <= length:
            raise UsageError(f"{where}: {field}[{i}] = [{start}, {end}] must satisfy 0 <= start < end <= {length} "
                             "(character offsets into the user message)")
        pairs.append((start, end))
    return pairs


def content_offset(tokenizer: Any, messages: list[dict[str, str]], user: int, prompt: str) -> int:
    """Where the user message's content starts in the rendered prompt (found by rendering a marker in its place)."""
    marked = [dict(m) for m in messages]
    marked[user]["content"] = MARKER
    start = render_prompt(tokenizer, marked).find(MARKER)
    content = messages[user]["content"]
    if start < 0 or prompt[start:start + len(content)] != content:
        raise UsageError("method 'guided_attention': the chat template changes the user message's text, so "
                         "guide spans cannot be placed in the prompt; use data.template alpaca or chatml")
    return start


def guide_columns(record: dict[str, Any], encoded: dict[str, Any], tokenizer: Any,
                  field: str = "guide_spans") -> dict[str, list[int]]:
    """The per-token ``guide_prompt``, ``guide_tokens`` and ``guide_query`` columns of one tokenized chat record.

    ``record`` holds the messages as trained (``tasks.record_as_trained``); ``encoded`` is its
    ``tokenize_chat`` output. A record without spans gets all-zero columns.
    """
    n = len(encoded["input_ids"])
    columns = {name: [0] * n for name in COLUMNS}
    spans = record.get(field)
    if not spans:
        return columns
    where = f"record {record.get('id', '(no id)')}"
    messages = record_to_messages(record)
    answer = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
    user = next((i for i in reversed(range(answer or 0)) if messages[i]["role"] == "user"), None)
    if user is None:
        raise UsageError(f"{where}: '{field}' needs a user message before the first answer")
    content = messages[user]["content"]
    pairs = checked_spans(spans, len(content), where, field)
    if not getattr(tokenizer, "is_fast", False):
        raise UsageError("method 'guided_attention' needs a fast tokenizer (it maps characters to tokens by "
                         "offsets)")
    prompt = render_prompt(tokenizer, messages[:answer])
    base = content_offset(tokenizer, messages[:answer], user, prompt)
    tokens = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    bos = int(tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False))
    ids = tokens["input_ids"]
    if list(encoded["input_ids"][bos:bos + len(ids)]) != ids[:max(n - bos, 0)]:
        raise AyarError(f"{where}: method 'guided_attention' tokenizes the prompt differently from training")
    prompt_end = min(bos + len(ids), n)
    columns["guide_prompt"][:prompt_end] = [1] * prompt_end
    for t, (a, b) in enumerate(tokens["offset_mapping"][:max(n - bos, 0)]):
        if b > a and any(a < base + end and base + start < b for start, end in pairs):
            columns["guide_tokens"][bos + t] = 1
    labels = encoded["labels"]
    answer_end = next((i for i in range(prompt_end, n) if labels[i] == IGNORE_INDEX), n)
    for i in range(prompt_end - 1, answer_end - 1):  # each of these positions predicts an answer token
        columns["guide_query"][i] = 1
    return columns


# ---------------------------------------------------------------- attention capture and the loss


def attention_modules(model: torch.nn.Module) -> tuple[list[torch.nn.Module], int]:
    """The decoder's self-attention modules in layer order, and where their output tuple holds the weights.

    They are the modules the model's own ``_can_record_outputs["attentions"]`` names (what
    transformers hooks for ``output_attentions``), so every architecture that supports it works.
    """
    for module in model.modules():
        if not isinstance(module, PreTrainedModel):
            continue
        spec = (getattr(module, "_can_record_outputs", None) or {}).get("attentions")
        if spec is None:
            continue
        spec = spec[0] if isinstance(spec, list) else spec
        if not isinstance(spec, OutputRecorder):
            spec = OutputRecorder(target_class=spec, index=1)
        layer_name = f".{spec.layer_name.strip('.')}." if spec.layer_name else None
        found = [m for name, m in module.named_modules()
                 if isinstance(m, spec.target_class) and (layer_name is None or layer_name in f".{name}.")]
        if found:
            return found, spec.index
    raise UsageError(f"method 'guided_attention' cannot find the attention layers of {type(model).__name__} "
                     "(its transformers class does not record attention weights)")


def pick(indices: list[int] | str, count: int, what: str) -> list[int]:
    """Resolved, checked indices ('all', or ints that may count from the end)."""
    if indices == "all":
        return list(range(count))
    bad = [i for i in indices if not -count <= i < count]
    if bad:
        raise UsageError(f"method 'guided_attention': {what} {bad} out of range; the model has {count} {what}")
    return sorted({i % count for i in indices})


class AttentionRecorder:
    """Keeps the attention weights of the chosen layers from the last forward pass that tracks gradients."""

    def __init__(self, modules: list[torch.nn.Module], index: int, layers: list[int]) -> None:
        self.index, self.layers = index, layers
        self.weights: dict[int, torch.Tensor] = {}
        self.handles = [modules[layer].register_forward_hook(self._hook(layer)) for layer in layers]

    def _hook(self, layer: int) -> Any:
        def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
            if module.training and torch.is_grad_enabled() and isinstance(output, tuple):
                self.weights[layer] = output[self.index]
        return keep

    def take(self) -> list[torch.Tensor]:
        """The recorded weights, one (batch, heads, queries, keys) tensor per chosen layer; then forgets them."""
        weights, self.weights = self.weights, {}
        missing = [layer for layer in self.layers if weights.get(layer) is None]
        if missing:
            raise AyarError(f"method 'guided_attention': no attention weights recorded for layer(s) {missing}: "
                            "the model must run eager attention with gradients (reentrant checkpointing runs the "
                            "forward without them)")
        return [weights[layer] for layer in self.layers]


def selected_rows(attentions: list[torch.Tensor], query: torch.Tensor, guide: torch.Tensor, heads: list[int] | None
                  ) -> tuple[list[torch.Tensor], torch.Tensor] | None:
    """Per layer, the (query, head, key) attention rows of the rows that have guide tokens; and the row of each."""
    width = query.shape[1]
    for weights in attentions:
        if weights.shape[-1] != width or weights.shape[-2] != width:
            raise UsageError(f"method 'guided_attention': attention spans {weights.shape[-1]} keys for {width} "
                             "tokens; base methods that add virtual tokens (prompt/prefix tuning) cannot be guided")
    chosen = query.bool() & (guide.sum(1) > 0)[:, None]
    if not chosen.any():
        return None
    rows, positions = chosen.nonzero(as_tuple=True)
    picked = []
    for weights in attentions:
        weights = weights if heads is None else weights[:, heads]
        picked.append(weights[rows, :, positions, :].float())  # (queries, heads, keys)
    return picked, rows


def guide_kl(attentions: list[torch.Tensor], prompt: torch.Tensor, guide: torch.Tensor, query: torch.Tensor,
             heads: list[int] | None = None) -> torch.Tensor | None:
    """Mean over (layer, head, query) of KL(guide mask normalised || attention renormalised over the prompt).

    The attention is renormalised before the floor under the logarithm: flooring the weights and
    the prompt mass apart would let a model lower the "KL" below 0 by moving all attention off the
    prompt. None when no row of the batch has both guide tokens and answer positions.
    """
    selected = selected_rows(attentions, query, guide, heads)
    if selected is None:
        return None
    picked, rows = selected
    g = guide[rows].float()
    g = g / g.sum(-1, keepdim=True)
    p = prompt[rows].float()[:, None, :]
    neg_entropy = (g * g.clamp_min(EPS).log()).sum(-1)[:, None]
    total = torch.zeros((), device=picked[0].device)
    for a in picked:
        mass = (a * p).sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        over_prompt = a * p / mass
        cross = (over_prompt.clamp_min(EPS).log() * g[:, None, :]).sum(-1)
        total = total + (neg_entropy - cross).mean()
    return total / len(picked)


def guide_mass(attentions: list[torch.Tensor], guide: torch.Tensor, query: torch.Tensor,
               heads: list[int] | None = None) -> float:
    """Mean attention weight on the guide tokens over (layer, head, answer query): what the method trains."""
    selected = selected_rows(attentions, query, guide, heads)
    if selected is None:
        return float("nan")
    picked, rows = selected
    g = guide[rows].float()[:, None, :]
    return float(torch.stack([(a * g).sum(-1).mean() for a in picked]).mean())


# ---------------------------------------------------------------- the method


@register
class GuidedAttention(WrappingMethod):
    name = "guided_attention"
    former_names = ("gate",)  # recipes written before the rename keep working
    summary = "Guided attention: pull chosen heads' attention toward prompt spans the records mark (guide_spans)."
    params_model = GuidedAttentionParams
    tasks = ("causal_lm",)

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.recorder: AttentionRecorder | None = None
        self.heads: list[int] | None = None
        self.meta: dict[str, Any] | None = None

    def model_load_kwargs(self, task: str) -> dict[str, Any]:
        return {**super().model_load_kwargs(task), "attn_implementation": "eager"}

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        if getattr(model.config, "_attn_implementation", None) != "eager":
            model.set_attn_implementation("eager")
        say("method guided_attention: eager attention (attention weights are needed; slower than sdpa/flash "
            "kernels)")
        num_heads = model.config.get_text_config().num_attention_heads
        model = super().prepare_model(model, task)
        modules, index = attention_modules(model)
        layers = pick(self.params.layers, len(modules), "layers")
        self.heads = None if self.params.heads == "all" else pick(self.params.heads, num_heads, "heads")
        self.recorder = AttentionRecorder(modules, index, layers)
        return model

    def encode_extra(self, record: dict[str, Any], encoded: dict[str, Any], tokenizer: Any, task: str) -> dict:
        return {**super().encode_extra(record, encoded, tokenizer, task),
                **guide_columns(record, encoded, tokenizer, self.params.field)}

    def model_inputs_extra(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*super().model_inputs_extra(), *COLUMNS)))

    def setup(self, model: torch.nn.Module, tokenizer: Any, train_dataset: Any, run_dir: Any) -> None:
        super().setup(model, tokenizer, train_dataset, run_dir)
        if train_dataset is None or "guide_tokens" not in train_dataset.column_names:
            raise AyarError("method 'guided_attention': the training rows have no guide columns "
                            "(tokenize with the method)")
        guided = sum(1 for g, q in zip(train_dataset["guide_tokens"], train_dataset["guide_query"], strict=True)
                     if any(g) and any(q))
        if guided == 0:
            raise UsageError(f"method 'guided_attention': no training record carries guide spans: give records a "
                             f"'{self.params.field}' field of [start, end] character offsets into the user "
                             "message (or data.synthetic.guide_spans: true)")
        say(f"method guided_attention: {guided} of {len(train_dataset)} training rows carry guide spans")

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], meta: dict[str, Any],
                     num_items_in_batch: Any) -> None:
        self.meta = meta  # kept for extra_loss, which the trainer calls after its own loss; the loss stays
        return None

    def extra_loss(self, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        if self.recorder is None:
            raise AyarError("method 'guided_attention': prepare_model did not run")
        attentions = self.recorder.take()
        meta, self.meta = self.meta, None
        if self.params.lambda_ == 0:
            return None
        if meta is None or any(name not in meta for name in COLUMNS):
            raise UsageError("method 'guided_attention': the batch lost its guide columns (train.packing drops "
                             "them); set train.packing false")
        kl = guide_kl(attentions, meta["guide_prompt"], meta["guide_tokens"], meta["guide_query"], self.heads)
        return None if kl is None else self.params.lambda_ * kl
