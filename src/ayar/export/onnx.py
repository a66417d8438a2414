"""Export format ``onnx``: the merged causal LM as one ONNX graph with past key/values, checked with onnxruntime.

The graph is exported with ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript). optimum's ONNX
exporter (optimum-onnx 0.1) pins transformers < 4.58, so it cannot run beside transformers 5; what optimum
adds on top of torch.onnx for decoders, feeding the KV cache in and out as named tensors, is the small
wrapper below, with optimum's input/output names (``past_key_values.<i>.key``, ``present.<i>.key``) so
tools written for optimum's decoder exports recognise the graph.

One graph serves both generation phases: the prompt step takes a past of length 0, each next step the
``present.*`` outputs of the step before. After writing, the export is verified with onnxruntime:
logits within :data:`LOGITS_ATOL` of PyTorch's on held-out prompts (the run's test split when there is
one) and a greedy generation token for token the same as ``model.generate``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ayar.console import say
from ayar.errors import AyarError, UsageError
from ayar.export import load_merged, register_format
from ayar.run_folder import RunFolder

LOGITS_ATOL = 1e-3
GENERATION_TOKENS = 16
EXTERNAL_DATA_PARAMS = 400_000_000  # beyond ~1.6 GB of fp32 weights, keep them in model.onnx.data (protobuf's 2 GB cap)
FALLBACK_PROMPTS = ("Türkiye'nin başkenti neresidir?", "Write one sentence about the sea.", "2 + 3 =")
INFO_FILE = "onnx_export.json"


class KVCacheDecoder(torch.nn.Module):
    """A causal LM whose cache goes in and out as flat tensors (ONNX graphs take no Cache objects)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.num_layers = model.config.get_text_config().num_hidden_layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                past: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer in range(self.num_layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    """The graph's input and output names (optimum's naming)."""
    kv = [f"{i}.{part}" for i in range(num_layers) for part in ("key", "value")]
    return (["input_ids", "attention_mask", "position_ids", *(f"past_key_values.{n}" for n in kv)],
            ["logits", *(f"present.{n}" for n in kv)])


def cache_shape(model: Any) -> tuple[int, int]:
    """(key/value heads, head size) of the model's cache, read from a one-token forward pass."""
    with torch.no_grad():
        out = model(input_ids=torch.zeros((1, 1), dtype=torch.long), use_cache=True)
    keys = out.past_key_values.layers[0].keys
    return int(keys.shape[1]), int(keys.shape[3])


def write_onnx(model: Any, path: Path) -> Path:
    """Export ``model`` (a causal LM, fp32, eval mode) to ``path`` with dynamic batch and lengths."""
    model = model.float().eval()
    wrapper = KVCacheDecoder(model)
    heads, head_dim = cache_shape(model)
    inputs, outputs = io_names(wrapper.num_layers)
    # sample lengths of 3 and 4: torch.export specialises dimensions of size 0 and 1
    batch, seq, past_len = 2, 3, 4
    past = tuple(torch.zeros(batch, heads, past_len, head_dim) for _ in range(2 * wrapper.num_layers))
    sample = (torch.ones((batch, seq), dtype=torch.long), torch.ones((batch, past_len + seq), dtype=torch.long),
              torch.arange(past_len, past_len + seq).expand(batch, seq), past)
    token_dims = {0: "batch", 1: "sequence_length"}
    dynamic = (token_dims, {0: "batch", 1: "total_sequence_length"}, token_dims,
               tuple({0: "batch", 2: "past_sequence_length"} for _ in past))
    large = sum(p.numel() for p in model.parameters()) > EXTERNAL_DATA_PARAMS
    with torch.no_grad():
        torch.onnx.export(wrapper, sample, str(path), input_names=inputs, output_names=outputs, dynamo=True,
                          dynamic_shapes=dynamic, optimize=True, external_data=large, verbose=False)
    return path


# ---------------------------------------------------------------- running and verifying the graph


class OnnxDecoder:
    """Runs an exported graph with onnxruntime: a forward pass over a batch, and greedy generation."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.past_inputs = [i for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                past: list[np.ndarray] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """(logits, present) for a step; positions follow the mask, so left padding is handled."""
        batch = input_ids.shape[0]
        if past is None:
            past = [np.zeros((batch, i.shape[1], 0, i.shape[3]), dtype=np.float32) for i in self.past_inputs]
        positions = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0)[:, -input_ids.shape[1]:]
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64),
                "position_ids": positions.astype(np.int64)}
        feed.update({i.name: p for i, p in zip(self.past_inputs, past, strict=True)})
        logits, *present = self.session.run(None, feed)
        return logits, present

    def greedy(self, input_ids: list[int], max_new_tokens: int, eos: set[int]) -> list[int]:
        """Greedy tokens after ``input_ids`` (one sequence), reusing the KV cache; stops at an EOS token."""
        ids = np.array([input_ids], dtype=np.int64)
        mask = np.ones_like(ids)
        logits, past = self.forward(ids, mask)
        tokens: list[int] = []
        for _ in range(max_new_tokens):
            token = int(logits[0, -1].argmax())
            tokens.append(token)
            if token in eos:
                break
            mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
            logits, past = self.forward(np.array([[token]], dtype=np.int64), mask, past)
        return tokens


def heldout_prompts(source: Path, tokenizer: Any, limit: int = 4) -> list[str]:
    """Prompts of the run's test split (``<run>/data/test.jsonl``) in its chat template, else built-in ones."""
    from ayar.data.templates import record_to_messages, render_prompt

    run = RunFolder.of_model(source)
    test = run.prepared.split_path("test") if run is not None else None
    conversations = []
    if test is not None and test.is_file():
        with test.open(encoding="utf-8") as f:
            for line in f:
                try:
                    messages = record_to_messages(json.loads(line))
                except (KeyError, TypeError, ValueError):
                    continue  # a classification or seq2seq record: no chat prompt to take
                if messages[-1]["role"] == "assistant":
                    messages = messages[:-1]
                conversations.append(messages)
                if len(conversations) == limit:
                    break
    if not conversations:
        conversations = [[{"role": "user", "content": text}] for text in FALLBACK_PROMPTS]
    if getattr(tokenizer, "chat_template", None):
        return [render_prompt(tokenizer, messages) for messages in conversations]
    return [messages[-1]["content"] for messages in conversations]


def verify_onnx(model: Any, tokenizer: Any, path: Path, prompts: list[str],
                max_new_tokens: int = GENERATION_TOKENS) -> dict[str, Any]:
    """Compare onnxruntime with PyTorch: logits over a left-padded batch of prompts, and greedy generation.
    onnxruntime runs in a child process (ayar.export.onnx_worker): its native crash raises ConsumerCrash."""
    from ayar.export.isolated import run_isolated

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    mask = batch["attention_mask"]
    eos = model.generation_config.eos_token_id
    eos_ids = sorted(set(eos if isinstance(eos, list) else [eos] if eos is not None else []))
    prompt_ids = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    reply = run_isolated("ayar.export.onnx_worker", {
        "path": str(path), "input_ids": batch["input_ids"].tolist(), "attention_mask": mask.tolist(),
        "greedy": {"prompts": prompt_ids, "max_new_tokens": max_new_tokens, "eos": eos_ids}},
        "onnxruntime", f"{path} (ONNX)")
    with torch.no_grad():
        reference = model(input_ids=batch["input_ids"], attention_mask=mask,
                          position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits.numpy()
    real = mask.numpy().astype(bool)  # padded positions' logits are meaningless on both sides
    diff = float(np.abs(reply["logits"] - reference)[real].max())
    generations = []
    for prompt, ids, onnx_tokens in zip(prompts, prompt_ids, reply["greedy"], strict=True):
        with torch.no_grad():
            torch_tokens = model.generate(torch.tensor([ids]), attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
                                          do_sample=False, max_new_tokens=max_new_tokens,
                                          pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        generations.append({"prompt": prompt, "torch": torch_tokens, "onnx": onnx_tokens,
                            "match": torch_tokens == onnx_tokens})
    return {"prompts": len(prompts), "max_abs_logits_diff": diff, "logits_atol": LOGITS_ATOL,
            "greedy_tokens": max_new_tokens, "greedy_match": all(g["match"] for g in generations),
            "passed": diff <= LOGITS_ATOL and all(g["match"] for g in generations), "generations": generations}


def graph_io(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The graph's inputs and outputs: name, ONNX element type and dims (a name for a dynamic dim)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values: Any) -> list[dict[str, Any]]:
        return [{"name": v.name, "elem_type": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
                 "dims": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for v in values]

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def _require_onnx() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"ONNX export needs {', '.join(missing)}: pip install 'ayar[onnx]'")


def export_onnx_folder(source: Path, out_dir: Path, verify: bool = True) -> Path:
    """Write ``model.onnx`` with the tokenizer and config beside it; returns the .onnx path."""
    _require_onnx()
    model, tokenizer = load_merged(source)
    if not hasattr(model, "generate") or getattr(model.config, "is_encoder_decoder", False):
        raise UsageError("ONNX export supports decoder-only causal LMs; this model is not one")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_onnx(model, out_dir / "model.onnx")
    tokenizer.save_pretrained(str(out_dir))
    model.config.save_pretrained(str(out_dir))
    model.generation_config.save_pretrained(str(out_dir))
    info: dict[str, Any] = {"exporter": f"torch.onnx (dynamo) {torch.__version__}", **graph_io(path)}
    if verify:
        info["verification"] = verify_onnx(model, tokenizer, path, heldout_prompts(source, tokenizer))
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
    check = info.get("verification")
    if check:
        say(f"onnx check: max |logits difference| {check['max_abs_logits_diff']:.1e} (limit {LOGITS_ATOL}) on "
              f"{check['prompts']} held-out prompts; greedy generation "
              f"{'matches' if check['greedy_match'] else 'DIFFERS'} ({check['greedy_tokens']} tokens each)")
    if check and not check["passed"]:
        raise AyarError(f"ONNX export written to {path} but it does not match PyTorch: max logits difference "
                        f"{check['max_abs_logits_diff']:.2e} (limit {LOGITS_ATOL}), greedy generation "
                        f"{'matches' if check['greedy_match'] else 'differs'}; details in {out_dir / INFO_FILE}")
    return path


@register_format("onnx", "merged causal LM as model.onnx with past key/values (onnxruntime-verified)")
def export_onnx(source: Path, out_dir: Path, verify: bool = True, **_other_formats_options: Any) -> Path:
    """Write ``<out_dir>/model.onnx`` (+ tokenizer, config, onnx_export.json); returns the .onnx path."""
    return export_onnx_folder(source, out_dir, verify)
