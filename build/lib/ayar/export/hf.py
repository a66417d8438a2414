"""Export formats ``hf`` (adapters merged into a plain Hugging Face folder) and ``adapter`` (the adapter alone)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ayar.errors import UsageError
from ayar.export import load_merged, register_format
from ayar.models.load import is_adapter_dir


@register_format("hf", "adapters merged into the base: a plain Hugging Face folder (vLLM/TGI serve it as is)")
def export_hf(source: Path, out_dir: Path, **_other_formats_options: Any) -> Path:
    """Save the merged model and its tokenizer (with the chat template) to out_dir."""
    model, tokenizer = load_merged(source)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


@register_format("adapter", "the adapter folder alone (plain peft loads it onto its base)")
def export_adapter(source: Path, out_dir: Path, **_other_formats_options: Any) -> Path:
    """Copy the adapter folder to out_dir."""
    if not is_adapter_dir(source):
        raise UsageError(f"{source} holds a full model, not an adapter: export it with --format hf")
    shutil.copytree(source, out_dir, dirs_exist_ok=True)
    return out_dir
