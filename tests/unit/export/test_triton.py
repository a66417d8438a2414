"""Triton model repository: the documented layout, and a config.pbtxt that Triton's own schema parses and
that names the ONNX graph's inputs and outputs with their types and dims."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from ayar.export import export_model


@pytest.fixture(scope="module")
def gpt2_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 (the seed example's architecture), saved as a full model folder."""
    from ayar.models.load import load_tokenizer
    from ayar.models.scratch import build_model
    from ayar.recipe import ScratchModelConfig

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = build_model(ScratchModelConfig(architecture="gpt2", hidden_size=32, num_layers=2, num_heads=2,
                                           intermediate_size=64, context_length=64), tokenizer, seed=0)
    out = tmp_path_factory.mktemp("my gpt2 run")  # a space: the Triton model name must be sanitised
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def repository(gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(gpt2_dir, tmp_path_factory.mktemp("triton") / "out", "triton")


def triton_config(text: str) -> Any:
    """Parse config.pbtxt with Triton's ModelConfig message (tritonclient ships the generated module; it is
    loaded by path because tritonclient.grpc's package import wants grpcio, which the parse does not need)."""
    from google.protobuf import text_format

    package = Path(importlib.util.find_spec("tritonclient").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location("triton_model_config", package / "grpc" / "model_config_pb2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return text_format.Parse(text, module.ModelConfig()), module


def test_repository_layout(repository: Path) -> None:
    assert repository.name == "model_repository"
    (model_dir,) = list(repository.iterdir())
    assert model_dir.name.startswith("my_gpt2_run")
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt"]
    assert (model_dir / "1" / "model.onnx").is_file()
    assert (repository.parent / "tokenizer" / "tokenizer.json").is_file()
    assert json.loads((repository.parent / "onnx_export.json").read_text())["verification"]["passed"]


def test_config_matches_the_onnx_graph(repository: Path) -> None:
    import onnx

    (model_dir,) = list(repository.iterdir())
    config, schema = triton_config((model_dir / "config.pbtxt").read_text())
    assert config.name == model_dir.name and config.backend == "onnxruntime" and config.max_batch_size == 0
    graph = onnx.load(str(model_dir / "1" / "model.onnx")).graph
    types = {onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.FLOAT: "TYPE_FP32"}
    for declared, actual in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in declared] == [v.name for v in actual]
        for tensor, value in zip(declared, actual, strict=True):
            assert schema.DataType.Name(tensor.data_type) == types[value.type.tensor_type.elem_type]
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
            assert list(tensor.dims) == dims
    names = [t.name for t in config.input]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert len([n for n in names if n.startswith("past_key_values.")]) == 2 * 2  # key and value per layer
    past = next(t for t in config.input if t.name == "past_key_values.0.key")
    assert list(past.dims) == [-1, 2, -1, 16]  # batch, heads, past length, head size
