"""Turn a GGUF file into a plain Hugging Face model folder, once, in a cache.

transformers reads GGUF (``from_pretrained(folder, gguf_file=name)``, dequantizing to float), but
the model it returns is flagged as GGUF-quantized and refuses ``save_pretrained``, and loading a
GGUF file costs ~25 s each time. So ayar converts a GGUF base once into a normal folder
(safetensors weights, tokenizer with its chat template, generation config) and points everything
downstream at that folder: an adapter trained on it names the folder as its base and loads with
plain peft + transformers, without ayar.

The cache is ``$AYAR_CACHE/models`` (default ``~/.cache/ayar/models``), one folder per GGUF file
content. A folder counts only when its manifest (written last) lists every file at its size, and
a new folder is built under a temporary name and renamed into place, so processes converting at
once never see, or leave, half a folder.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ayar.console import say
from ayar.errors import AyarError, UsageError

MANIFEST = "ayar-gguf-source.json"


def cache_root() -> Path:
    """Where converted models live: ``$AYAR_CACHE/models``, else ``~/.cache/ayar/models``."""
    base = os.environ.get("AYAR_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "ayar") / "models"


def find_gguf_in_folder(folder: Path) -> Path | None:
    """The one ``.gguf`` file of a folder that is not already an HF model folder; None when it has none."""
    if (folder / "config.json").is_file():
        return None
    files = sorted(folder.glob("*.gguf"))
    if len(files) > 1:
        raise UsageError(f"model folder {folder} holds several GGUF files ({', '.join(f.name for f in files)}); "
                         "name one of them as model.name_or_path")
    return files[0] if files else None


@functools.lru_cache(maxsize=16)
def _content_hash(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the file (cached per path, size and mtime: hashing 100 MB takes a moment)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hash(path: Path) -> str:
    """The content hash of a file, computed once per process per file version."""
    stat = path.stat()
    return _content_hash(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def cache_dir_for(gguf_path: Path) -> Path:
    """The cache folder a GGUF file converts into: ``<file stem>-<12 hex digits of its content hash>``."""
    return cache_root() / f"{gguf_path.stem}-{file_hash(gguf_path)[:12]}"


def is_complete(folder: Path) -> bool:
    """True when the folder's manifest exists and every file it lists is there at its recorded size."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return all((folder / name).stat().st_size == size for name, size in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def converted_folder(gguf_path: str | Path) -> Path:
    """The plain HF folder for a GGUF file: from the cache, or converted now (once) and cached."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise UsageError(f"GGUF file {gguf_path} does not exist")
    target = cache_dir_for(gguf_path)
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache folder is an ordinary one
    try:
        say(f"model: converting {gguf_path.name} to a Hugging Face folder in {target} (once)")
        _convert(gguf_path, staging)
        _write_manifest(staging, gguf_path)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not is_complete(target):
        raise AyarError(f"converting {gguf_path} left an incomplete folder at {target}")
    return target


def _convert(gguf_path: Path, out: Path) -> None:
    """Dequantize through transformers and save a rebuilt, unflagged copy of the model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise UsageError("loading a GGUF model needs the gguf package: pip install 'gguf>=0.10'") from None
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        flagged = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UsageError(f"could not read GGUF file {gguf_path}: {str(exc).splitlines()[0]}") from None
    config = flagged.config
    # The quantization flag is what makes save_pretrained refuse; the weights are already floats.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(flagged.state_dict())
    model.tie_weights()  # tied embeddings stay one shared matrix, as in the GGUF file
    model.generation_config = flagged.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _write_manifest(folder: Path, gguf_path: Path) -> None:
    """Record the source and every file's size; written last, it marks the folder complete."""
    files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest = {"source": str(gguf_path.resolve()), "sha256": file_hash(gguf_path), "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the finished folder to its cache name; a broken folder there is moved aside first.

    When another process finished first, its complete folder wins and ours is discarded.
    """
    if target.exists() and not is_complete(target):
        aside = target.with_name(f".{target.name}.stale-{os.getpid()}")
        with contextlib.suppress(OSError):  # another process may have moved it already
            target.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:
        if not is_complete(target):  # not a finished folder from another process: a real failure
            raise
