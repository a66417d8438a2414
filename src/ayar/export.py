"""Export a run's model: LoRA/DoRA/IA3 merged into the base as a plain Hugging Face folder, or the adapter."""

from __future__ import annotations

import shutil
from pathlib import Path

from ayar.errors import UsageError
from ayar.models.load import is_adapter_dir, load_for_inference


def find_model_dir(path: Path) -> Path:
    """The model folder of a run folder (``<run>/model``) or the folder itself."""
    for candidate in (path / "model", path):
        if (candidate / "config.json").is_file() or is_adapter_dir(candidate):
            return candidate
    raise UsageError(f"no model or adapter found in {path}")


def export_model(run_or_model: Path, out_dir: Path, fmt: str = "hf", merge: bool = True) -> Path:
    """Write a servable model folder (safetensors, tokenizer with chat template, config) to out_dir."""
    source = find_model_dir(Path(run_or_model))
    if fmt not in ("hf", "adapter"):
        raise UsageError(f"export format '{fmt}' is not supported here; use 'hf' or 'adapter'")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"export folder is not empty: {out_dir}")
    if fmt == "adapter" or not merge:
        if not is_adapter_dir(source):
            raise UsageError(f"{source} holds a full model, not an adapter: export it with --format hf")
        shutil.copytree(source, out_dir, dirs_exist_ok=True)
        return out_dir
    model, tokenizer = load_for_inference(source)
    if is_adapter_dir(source):
        model = model.merge_and_unload()
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
