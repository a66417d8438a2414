"""No ayar load path unpickles: planted pickle payloads are refused, and the source never calls an unsafe loader."""

from __future__ import annotations

import ast
import json
import pathlib
import shutil
from pathlib import Path

import pytest
import torch

import ayar
from ayar.errors import UsageError
from ayar.models.load import load_for_inference, load_model
from ayar.safety import UnsafeFileError, is_pickle_file, needs_remote_code

SRC = Path(ayar.__file__).parent


class Payload:
    """Unpickling this creates the marker file: the proof that a load ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def plant(path: Path, marker: Path) -> None:
    torch.save({"state": Payload(marker)}, path)


def test_payload_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    """The control: the planted file does run code under an unsafe load, so the refusals below mean something."""
    marker = tmp_path / "control-marker"
    plant(tmp_path / "x.pt", marker)
    torch.load(tmp_path / "x.pt", weights_only=False)  # the unsafe load the rest of ayar must never do
    assert marker.exists()
    assert is_pickle_file(tmp_path / "x.pt")


def test_model_folder_with_pickle_weights_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, folder / name)
    marker = tmp_path / "marker"
    plant(folder / "pytorch_model.bin", marker)
    with pytest.raises(UnsafeFileError, match="pytorch_model.bin.*pickle|pickle.*pytorch_model.bin"):
        load_model(str(folder))
    with pytest.raises(UnsafeFileError):
        load_for_inference(folder)
    assert not marker.exists()


def test_adapter_folder_with_pickle_weights_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "adapter"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, folder / name)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "base_model_name_or_path": str(tiny_model_dir), "r": 2, "lora_alpha": 4,
        "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}), encoding="utf-8")
    marker = tmp_path / "marker"
    plant(folder / "adapter_model.bin", marker)
    with pytest.raises(UnsafeFileError, match="adapter_model.bin"):
        load_for_inference(folder)
    assert not marker.exists()


def test_pickle_beside_safetensors_weights_is_never_read(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "marker"
    plant(folder / "pytorch_model.bin", marker)
    plant(folder / "training_args.bin", marker)
    model = load_model(str(folder))
    assert model.config.hidden_size == 32
    assert not marker.exists()


def test_remote_code_refused_unless_the_recipe_allows_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    marker = tmp_path / "marker"
    (folder / "modeling_evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n",
                                             encoding="utf-8")
    assert needs_remote_code(folder)
    with pytest.raises(UsageError, match="trust_remote_code: true") as err:
        load_model(str(folder))
    assert "own Python code" in str(err.value)
    assert not marker.exists()


# ---------------------------------------------------------------- lint: no unsafe loader in the source

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}


def unsafe_calls(source: str) -> list[str]:
    """Calls in ``source`` that can unpickle: pickle-family loads, torch.load without weights_only=True."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in UNSAFE_MODULES:
            found += [f"from {node.module} import {a.name} (line {node.lineno})" for a in node.names
                      if a.name in {"load", "loads", "Unpickler"}]
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        name = node.func.attr
        if owner in UNSAFE_MODULES and name in {"load", "loads", "Unpickler", "open"}:
            found.append(f"{owner}.{name} (line {node.lineno})")
        elif owner == "torch" and name == "load":
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if not safe:
                found.append(f"torch.load without weights_only=True (line {node.lineno})")
        elif owner in {"np", "numpy"} and name == "load" and any(
                k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                for k in node.keywords):
            found.append(f"numpy.load with allow_pickle (line {node.lineno})")
    return found


def test_lint_flags_unsafe_loaders() -> None:
    """The lint itself can fail: it finds each unsafe form and passes the safe one."""
    bad = ("import pickle, torch\npickle.load(f)\npickle.loads(b)\ntorch.load(p)\n"
           "torch.load(p, weights_only=False)\nnp.load(p, allow_pickle=True)\nfrom pickle import loads\n")
    assert len(unsafe_calls(bad)) == 6
    assert unsafe_calls("torch.load(p, map_location='cpu', weights_only=True)\n") == []


def test_source_has_no_unsafe_loader() -> None:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        problems += [f"{path.relative_to(SRC.parent)}: {p}" for p in unsafe_calls(path.read_text(encoding="utf-8"))]
    assert problems == []
