"""Files that cannot run code: ayar loads safetensors and JSON, never a pickle.

A pickle (``pytorch_model.bin``, ``adapter_model.bin``, ``optimizer.pt``, ``rng_state.pth``, ...)
can run arbitrary code the moment it is unpickled, and ``torch.load``'s allow-list is one library
bug away from that. So ayar refuses such files by name and by content before any library sees them.
"""

from __future__ import annotations

from pathlib import Path

from ayar.errors import UsageError

# Suffixes of files written with pickle (torch.save, joblib, pickle.dump).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
# The first bytes of a pickle stream (protocol 2+) and of a torch.save zip archive.
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
ZIP_MAGIC = b"PK\x03\x04"


class UnsafeFileError(UsageError):
    """A file ayar would have to unpickle to load; refused (exit code 2)."""


def is_pickle_file(path: Path) -> bool:
    """True for a file that is (or claims by its name to be) a pickle or a torch.save archive."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(PICKLE_MAGIC) or (head == ZIP_MAGIC and path.suffix.lower() != ".zip")


def pickle_files(folder: Path) -> list[Path]:
    """Pickle files directly inside ``folder`` (sorted); JSON, safetensors and text files are never counted."""
    if not folder.is_dir():
        return []
    skip = (".json", ".safetensors", ".txt", ".md", ".model", ".jinja", ".yaml", ".yml", ".py")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.lower().endswith(skip) and is_pickle_file(p))


def refuse_pickles(folder: str | Path, what: str = "model folder") -> None:
    """Raise :class:`UnsafeFileError` when ``folder`` holds a pickle file, before anything loads from it."""
    folder = Path(folder)
    found = pickle_files(folder)
    if found:
        names = ", ".join(p.name for p in found)
        raise UnsafeFileError(
            f"{what} {folder} holds pickle files ({names}); a pickle can run code when loaded, so ayar "
            "loads only safetensors and JSON. Re-save it with safetensors (save_pretrained with "
            "safe_serialization) or remove those files if safetensors copies exist beside them"
        )


def require_safetensors(folder: str | Path, stem: str = "model", what: str = "model folder") -> None:
    """Refuse a local folder whose ``stem`` weights exist only as pickles (``pytorch_model.bin``, ...).

    A pickle beside safetensors weights is left alone: ayar's loaders read the safetensors only.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    if any(folder.glob(f"{stem}*.safetensors")) or any(folder.glob(f"{stem}*.safetensors.index.json")):
        return
    refuse_pickles(folder, what)


def remote_code_message(name: str) -> str:
    """Why a model that ships its own Python code does not load, and how to allow it."""
    return (f"model '{name}' needs its own Python code (auto_map in its config) to load; that code would run "
            "on this machine, so ayar refuses it unless the recipe sets model.trust_remote_code: true "
            "(set it only for a model whose code you have read or trust)")


def needs_remote_code(folder: str | Path) -> bool:
    """True when a local model folder's config.json maps its classes to code shipped with the model."""
    import json

    config = Path(folder) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data.get("auto_map"))
