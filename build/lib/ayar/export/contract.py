"""The train-to-serve contract at export (see ayar.models.template_contract and docs/serving.md).

Before anything is written, the source folder must still render its reference conversations as training
did; after, the exported HF/adapter folder (which carries the contract) must too, and a GGUF file must
tokenize them to the same ids in llama.cpp (when llama-cpp-python is installed).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from ayar.console import say
from ayar.models.load import load_tokenizer
from ayar.models.template_contract import check_contract, check_token_ids, contract_path


def check_source(source: Path, force: bool = False) -> None:
    """The model folder about to be exported still matches its contract."""
    check_contract(source, load_tokenizer(str(source)), force)


def check_exported(source: Path, written: Path, fmt: str, force: bool = False) -> None:
    """The written export renders/tokenizes the source's reference conversations as training did."""
    if not contract_path(source).is_file():
        return  # check_source already said so
    if fmt in ("hf", "adapter"):
        if not contract_path(written).is_file():
            shutil.copy2(contract_path(source), contract_path(written))  # later `ayar serve` of it checks too
        check_contract(written, load_tokenizer(str(written)), force, where="the exported folder")
    elif fmt == "gguf":
        if importlib.util.find_spec("llama_cpp") is None:
            say("note: llama-cpp-python is not installed: the GGUF's token ids were not checked against the contract")
            return
        from ayar.export.llamacpp import gguf_token_ids

        check_token_ids(source, lambda texts: gguf_token_ids(written, texts), f"llama.cpp reading {written.name}",
                        force)
