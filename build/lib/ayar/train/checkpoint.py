"""Atomic, pickle-free checkpoints.

A checkpoint is written into a temporary folder, every file is flushed to disk, a manifest
(names, sizes, sha256) is written last, and only then is the folder renamed into place. A resume
takes the newest complete one (``find_resumable``). A crash at any moment leaves either the previous checkpoints untouched
or a complete new one; leftover temporary folders are removed on the next resume.

State that the Trainer keeps as pickles (optimizer, scheduler, scaler, RNG) is stored as
safetensors for tensors and JSON for the structure around them. Written by hand because neither
transformers nor accelerate offers a pickle-free, atomic checkpoint format.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ayar.console import warn
from ayar.errors import AyarError
from ayar.safety import pickle_files, refuse_pickles

FORMAT = "ayar-checkpoint/1"
MANIFEST = "manifest.json"
PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
CHECKPOINT_RE = re.compile(rf"^{PREFIX}(\d+)$")


class CheckpointError(AyarError):
    """A checkpoint that cannot be read back."""


# ---------------------------------------------------------------- state trees as JSON + safetensors


def encode_state(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON-able structure, tensors by key) for a nested state of dicts, lists, tuples, tensors and scalars."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = value.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(value, np.ndarray):
            return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
        if isinstance(value, np.generic):
            return enc(value.item())
        if isinstance(value, float) and not math.isfinite(value):
            return {"__float__": repr(value)}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, bytes):
            return {"__bytes__": value.hex()}
        if isinstance(value, tuple):
            return {"__tuple__": [enc(v) for v in value]}
        if isinstance(value, list):
            return [enc(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: enc(v) for k, v in value.items()}
            return {"__dict__": [[enc(k), enc(v)] for k, v in value.items()]}
        raise CheckpointError(f"cannot store a {type(value).__name__} in a checkpoint without pickle")

    return enc(tree), tensors


def decode_state(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode_state`."""
    if isinstance(data, list):
        return [decode_state(v, tensors) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tensor__" in data:
        return tensors[data["__tensor__"]]
    if "__ndarray__" in data:
        return np.array(data["__ndarray__"], dtype=data["dtype"])
    if "__float__" in data:
        return float(data["__float__"])
    if "__bytes__" in data:
        return bytes.fromhex(data["__bytes__"])
    if "__tuple__" in data:
        return tuple(decode_state(v, tensors) for v in data["__tuple__"])
    if "__dict__" in data:
        return {decode_state(k, tensors): decode_state(v, tensors) for k, v in data["__dict__"]}
    return {k: decode_state(v, tensors) for k, v in data.items()}


def save_state(folder: Path, name: str, tree: Any) -> None:
    """``name.json`` (structure) and ``name.safetensors`` (tensors, when there are any) in ``folder``."""
    data, tensors = encode_state(tree)
    (folder / f"{name}.json").write_text(json.dumps(data), encoding="utf-8")
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))


def load_state(folder: Path, name: str) -> Any:
    """A state written by :func:`save_state`; None when the checkpoint has none of that name."""
    path = folder / f"{name}.json"
    if not path.is_file():
        return None
    tensors_path = folder / f"{name}.safetensors"
    tensors = load_file(str(tensors_path)) if tensors_path.is_file() else {}
    return decode_state(json.loads(path.read_text(encoding="utf-8")), tensors)


# ---------------------------------------------------------------- random states


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states of this process."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.random.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the states of :func:`capture_rng`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.random.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- atomic folders


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if sys.platform == "win32":  # directories cannot be opened for fsync there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, extra: dict[str, Any] | None = None) -> None:
    """Flush every file of ``folder`` to disk, then write the manifest (itself flushed) last."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        _fsync_file(path)
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = {"format": FORMAT, **(extra or {}), "files": files}
    path = folder / MANIFEST
    with path.open("w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def verify(folder: Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint (None when it is): manifest, sizes and sha256 all match."""
    path = folder / MANIFEST
    if not path.is_file():
        return "no manifest (an unfinished write, or not written by ayar)"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return "unreadable manifest"
    if manifest.get("format") != FORMAT:
        return f"unknown format {manifest.get('format')!r}"
    for name, meta in files.items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != meta["size"]:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {meta['size']}"
        if _sha256(file) != meta["sha256"]:
            return f"{name} does not match its sha256"
    return None


def _discard(path: Path) -> None:
    """Remove a folder so that a crash midway never leaves a half-deleted folder under its real name."""
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def write_atomically(parent: Path, name: str, write: Callable[[Path], None],
                     extra: dict[str, Any] | None = None) -> Path:
    """Run ``write(tmp)`` into a temporary folder, add the manifest, then rename it to ``parent/name``."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f"{TMP_PREFIX}{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write(tmp)
    write_manifest(tmp, extra)
    final = parent / name
    if final.exists():
        _discard(final)
    os.replace(tmp, final)
    _fsync_dir(parent)
    return final


def write_checkpoint(parent: Path, step: int, write: Callable[[Path], None], is_main: bool = True,
                     barrier: Callable[[], None] | None = None) -> Path:
    """Write ``checkpoint-<step>`` atomically from the main process; the others wait."""
    name = f"{PREFIX}{step}"
    if is_main:
        write_atomically(parent, name, write, {"step": step})
    if barrier is not None:
        barrier()
    return parent / name


# ---------------------------------------------------------------- finding, cleaning, rotating


def step_of(path: Path) -> int | None:
    match = CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match else None


def checkpoints(parent: Path) -> list[Path]:
    """Checkpoint folders under ``parent``, newest step first (complete or not)."""
    if not parent.is_dir():
        return []
    found = [p for p in parent.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0, reverse=True)


def clean_temporary(parent: Path) -> list[Path]:
    """Remove temporary and half-deleted folders a crash left behind; returns what was removed."""
    if not parent.is_dir():
        return []
    removed = []
    for path in parent.iterdir():
        if path.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def find_resumable(parent: Path, warn: Callable[[str], None] = warn) -> Path | None:
    """The newest complete checkpoint; incomplete ones are skipped with a warning, temporaries removed.

    Raises :class:`~ayar.safety.UnsafeFileError` when the newest complete checkpoint holds a pickle.
    """
    for path in clean_temporary(parent):
        warn(f"removed the unfinished checkpoint write {path.name}")
    for path in checkpoints(parent):
        reason = verify(path)
        if reason is None:
            refuse_pickles(path, "checkpoint")
            return path
        pickles = pickle_files(path)
        note = f" (it holds pickle files {', '.join(p.name for p in pickles)}, never loaded)" if pickles else ""
        warn(f"skipping checkpoint {path.name}: {reason}{note}")
    return None


def rotate(parent: Path, keep: int, protect: str | None = None) -> list[Path]:
    """Delete all but the ``keep`` newest complete checkpoints (never ``protect``, the best one)."""
    complete = [p for p in checkpoints(parent) if (p / MANIFEST).is_file()]  # full sha256 checks at resume
    doomed = [p for p in complete[keep:] if protect is None or p.resolve() != Path(protect).resolve()]
    for path in doomed:
        _discard(path)
    return doomed
