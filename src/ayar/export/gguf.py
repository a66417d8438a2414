"""Export format ``gguf``: one GGUF file for llama.cpp."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ayar.errors import UsageError
from ayar.export import export_name, load_merged, register_format

GGUF_DTYPES = ("f16", "f32")


@register_format("gguf", "one GGUF file for llama.cpp/Ollama")
def export_gguf(source: Path, out_dir: Path, gguf_dtype: str = "f16", **_other_formats_options: Any) -> Path:
    """Write ``<out_dir>/<name>.gguf`` (llama architecture, GPT-2-style BPE vocabulary) with the gguf package.

    The gguf package has the writer, the HF→GGUF tensor-name map and the vocabulary readers, but not
    llama.cpp's converter script; the few steps that script adds for Llama (metadata keys, the q/k row
    permutation) are here.
    """
    import gguf

    dtype = gguf_dtype
    if dtype not in GGUF_DTYPES:
        raise UsageError(f"GGUF dtype '{dtype}' is not supported; use {' or '.join(GGUF_DTYPES)}")
    model, tokenizer = load_merged(source)
    config = model.config
    if config.model_type != "llama":
        raise UsageError(f"GGUF export supports Llama-architecture models; this one is '{config.model_type}'. "
                         "Export with --format hf and convert it with llama.cpp's convert_hf_to_gguf.py")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # the vocabulary readers want a saved tokenizer folder
        tokenizer.save_pretrained(tmp)
        try:
            vocab = gguf.vocab.BpeVocab(Path(tmp))
        except FileNotFoundError:
            raise UsageError("GGUF export supports byte-level BPE tokenizers (GPT-2 style); this tokenizer is "
                             "not one: convert with llama.cpp's convert_hf_to_gguf.py") from None
        special = gguf.SpecialVocab(Path(tmp), load_merges=True, n_vocab=vocab.vocab_size)
    name = export_name(source)
    path = out_dir / f"{name}.gguf"
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _write_llama_metadata(writer, config, name, dtype)
    tokens, _, types = zip(*vocab.all_tokens(), strict=True)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(list(tokens))
    writer.add_token_types(list(types))
    special.add_to_gguf(writer, quiet=True)
    if tokenizer.chat_template and special.chat_template is None:
        writer.add_chat_template(tokenizer.chat_template)
    _write_llama_tensors(writer, model, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _write_llama_metadata(writer: Any, config: Any, name: str, dtype: str) -> None:
    import gguf

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)


def _permute_qk(weights: Any, n_head: int) -> Any:
    """HF Llama keeps rotary halves apart; GGUF (Meta's layout) interleaves them: llama.cpp's own permute."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _write_llama_tensors(writer: Any, model: Any, dtype: str) -> None:
    import gguf
    import numpy as np

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    state = model.state_dict()
    if "lm_head.weight" not in state:
        state["lm_head.weight"] = model.get_output_embeddings().weight
    for hf_name, tensor in state.items():
        if "rotary_emb" in hf_name:
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UsageError(f"GGUF export: no llama.cpp name for tensor '{hf_name}'")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute_qk(data, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute_qk(data, config.num_key_value_heads or config.num_attention_heads)
        # llama.cpp keeps 1-D tensors (norms) in f32 whatever the file type
        data = data.astype(np.float16 if dtype == "f16" and data.ndim > 1 else np.float32)
        writer.add_tensor(gguf_name, data)
