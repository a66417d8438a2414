"""What an engine factory is given and gives back: the request `ayar serve` makes of an engine, and the engine
checked as far as it can be without loading the model (see ``ENGINES`` in ``ayar.serve.engine``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ayar.errors import UsageError
from ayar.serve.queued_engine import QueuedEngine


@dataclass(frozen=True)
class EngineRequest:
    """What `ayar serve` asks of an engine: the target to serve, its extra adapters and the server's limits."""

    model_path: Path
    adapters: dict[str, Path] = field(default_factory=dict)
    served_name: str | None = None
    max_queue: int = 64
    max_batch: int = 32
    threads: int | None = None


@dataclass(frozen=True)
class PreparedEngine:
    """An engine checked as far as it can be without loading the model."""

    load: Callable[[], QueuedEngine]  # loads the model (minutes; the server runs it in the background)
    # The target holds the folder training wrote, whose template contract is checked before the port opens
    # (a bare GGUF file does not).
    has_training_folder: bool = True


EngineFactory = Callable[[EngineRequest], PreparedEngine]


def refuse_adapters(engine: str, request: EngineRequest) -> None:
    """A clear error for --adapter with an engine that serves one merged model."""
    if request.adapters:
        raise UsageError(f"--adapter serves LoRA adapters by name with --engine transformers only; for --engine "
                         f"{engine}, export each fine-tune merged and serve it on its own")


def default_served_name(path: Path) -> str:
    """A run folder's name (for ``runs/x`` and ``runs/x/model``) or the model folder's own name."""
    path = path.resolve()
    return path.parent.name if path.name == "model" and (path.parent / "recipe.yaml").is_file() else path.name
