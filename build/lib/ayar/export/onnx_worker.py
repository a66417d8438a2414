"""The child process of ayar.export.onnx's check: onnxruntime runs the graph here, so a native crash kills
this process only (see ayar.export.isolated). Request keys: ``path``, ``input_ids`` and ``attention_mask``
(a left-padded batch: its logits come back), ``greedy`` ({prompts: [ids], max_new_tokens, eos})."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ayar.export.isolated import worker_main
from ayar.export.onnx import OnnxDecoder


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Answer the request (module docstring)."""
    decoder = OnnxDecoder(Path(request["path"]))
    logits, _ = decoder.forward(np.array(request["input_ids"]), np.array(request["attention_mask"]))
    greedy = request["greedy"]
    return {"greedy": [decoder.greedy(ids, greedy["max_new_tokens"], set(greedy["eos"])) for ids in greedy["prompts"]],
            "arrays": {"logits": logits}}


if __name__ == "__main__":
    worker_main(handle)
