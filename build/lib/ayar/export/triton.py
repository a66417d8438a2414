"""Export format ``triton``: an NVIDIA Triton Inference Server model repository around the ONNX export.

Triton's documented layout (docs: user_guide/model_repository.md, model_configuration.md)::

    <out>/model_repository/<name>/config.pbtxt
    <out>/model_repository/<name>/1/model.onnx      (version 1; model.onnx.data beside it for large models)
    <out>/tokenizer/                                  (client-side: Triton serves tensors, not text)

The configuration names the ``onnxruntime`` backend and lists every input and output of the graph with
its Triton data type and dims (-1 for each dynamic dim). ``max_batch_size: 0`` because the graph's
batch dim is explicit and the KV-cache inputs vary in length per request, which Triton's dynamic
batcher cannot stack.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from ayar.export import export_name, register_format
from ayar.export.onnx import INFO_FILE, export_onnx_folder, graph_io

# ONNX element type -> Triton data type (Triton's model_configuration.md, "Datatypes")
TRITON_DTYPES = {
    "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32", "INT64": "TYPE_INT64", "FLOAT16": "TYPE_FP16", "BFLOAT16": "TYPE_BF16",
    "FLOAT": "TYPE_FP32", "DOUBLE": "TYPE_FP64", "STRING": "TYPE_STRING",
}


def triton_model_name(name: str) -> str:
    """A model name Triton and URLs accept: letters, digits, ``_``, ``-`` and ``.``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "model"


def config_pbtxt(name: str, io: dict[str, list[dict[str, Any]]]) -> str:
    """Triton's config.pbtxt (protobuf text format) for an ONNX graph with these inputs and outputs."""

    def tensors(kind: str, values: list[dict[str, Any]]) -> str:
        entries = []
        for value in values:
            dims = ", ".join(str(d) if isinstance(d, int) and d > 0 else "-1" for d in value["dims"])
            entries.append(f'  {{\n    name: "{value["name"]}"\n    data_type: {TRITON_DTYPES[value["elem_type"]]}\n'
                           f"    dims: [ {dims} ]\n  }}")
        return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"

    return (f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 0\n'
            + tensors("input", io["inputs"]) + tensors("output", io["outputs"]))


@register_format("triton", "Triton Inference Server model repository around model.onnx (onnxruntime backend)")
def export_triton(source: Path, out_dir: Path, verify: bool = True, **_other_formats_options: Any) -> Path:
    """Export ONNX into ``<out_dir>/model_repository/<name>/1/`` with its config.pbtxt; returns the repository."""
    name = triton_model_name(export_name(source))
    staging = out_dir / "tokenizer"  # the ONNX export's folder: tokenizer and configs stay here
    model = export_onnx_folder(source, staging, verify)
    version = out_dir / "model_repository" / name / "1"
    version.mkdir(parents=True)
    for part in [model, *staging.glob("model.onnx.data")]:
        shutil.move(str(part), version / part.name)
    (version.parent / "config.pbtxt").write_text(config_pbtxt(name, graph_io(version / "model.onnx")),
                                                encoding="utf-8")
    shutil.move(str(staging / INFO_FILE), out_dir / INFO_FILE)
    return out_dir / "model_repository"
