"""Export a run's model: merged into a plain Hugging Face folder (vLLM/TGI serve it as is), the adapter
alone, or one GGUF file for llama.cpp.

Each format is one module of this package that registers a writer with :func:`register_format`;
adding a format means adding a module and importing it at the bottom of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ayar.errors import UsageError
from ayar.models.load import is_adapter_dir, load_for_inference, merge_adapter
from ayar.run_folder import RunFolder

ExportWriter = Callable[..., Path]
"""``writer(source, out_dir, **options) -> path``: source is a model or adapter folder, out_dir is empty."""


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its name, its writer and a one-line description for help texts."""

    name: str
    writer: ExportWriter
    description: str


_FORMATS: dict[str, ExportFormat] = {}


def register_format(name: str, description: str) -> Callable[[ExportWriter], ExportWriter]:
    """Decorator registering ``writer(source, out_dir, **options)`` as export format ``name``."""

    def decorate(writer: ExportWriter) -> ExportWriter:
        _FORMATS[name] = ExportFormat(name, writer, description)
        return writer

    return decorate


def formats() -> tuple[str, ...]:
    """The registered export format names, in registration order."""
    return tuple(_FORMATS)


def find_model_dir(path: Path) -> Path:
    """The model folder of a run folder (``<run>/model``) or the folder itself."""
    if RunFolder(path).is_run():
        RunFolder(path).check_format()
    for candidate in (RunFolder(path).model, path):
        if (candidate / "config.json").is_file() or is_adapter_dir(candidate):
            return candidate
    raise UsageError(f"no model or adapter found in {path}")


def load_merged(source: Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a model folder, or of an adapter folder with the adapter merged in."""
    model, tokenizer = load_for_inference(source)
    return (merge_adapter(model) if is_adapter_dir(source) else model), tokenizer


def export_name(source: Path) -> str:
    """The name an exported file takes: the run's folder name for ``<run>/model``, else the folder's."""
    run = RunFolder.of_model(source.resolve())
    return run.root.name if run is not None else source.resolve().name


def export_model(run_or_model: Path, out_dir: Path, fmt: str = "hf", merge: bool = True, force: bool = False,
                 **options: Any) -> Path:
    """Write a servable model to out_dir; returns the folder (hf, adapter) or the written file (gguf, ...).

    Options are the format's own (``gguf_dtype`` for gguf); ``merge=False`` with ``hf`` means the adapter alone.
    The train-to-serve contract is checked before and after (ayar.export.contract); ``force`` only warns.
    """
    from ayar.export.contract import check_exported, check_source

    source = find_model_dir(Path(run_or_model))
    out_dir = Path(out_dir)
    if fmt not in _FORMATS:
        raise UsageError(f"export format '{fmt}' is not supported; use one of {', '.join(_FORMATS)}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"export folder is not empty: {out_dir}")
    if fmt == "hf" and not merge:
        fmt = "adapter"
    check_source(source, force)
    written = _FORMATS[fmt].writer(source, out_dir, **options)
    check_exported(source, Path(written), fmt, force)
    return written


# the built-in formats register themselves on import (kept last: they import the helpers above)
from ayar.export import gguf, hf, onnx, triton  # noqa: E402,F401

