"""Run the API under uvicorn, draining on SIGTERM/SIGINT: in-flight requests finish, new ones get 503."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from ayar.errors import UsageError
from ayar.recipe import ServeConfig, load_recipe
from ayar.serve.app import ServeSettings, create_app
from ayar.serve.engine import EngineRequest, PreparedEngine, prepare_engine
from ayar.serve.options import option_name

API_KEY_ENV = "AYAR_API_KEY"
_DEFAULTS = ServeConfig()


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain phase before its own graceful shutdown.

    uvicorn on SIGTERM closes the listening socket at once, so a load balancer's next request is refused
    rather than told to go elsewhere; here the app first answers 503 (and /readyz fails) until the
    requests in flight are done or ``drain_timeout`` passes, and only then lets uvicorn stop.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout: float) -> None:
        super().__init__(config)
        self.app, self.drain_timeout = app, drain_timeout
        self._drain_thread: threading.Thread | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn re-raises a captured signal after shutdown (exit by signal); not appending keeps exit 0.
        if self._drain_thread is not None:  # a second signal: stop now
            self.should_exit = self.force_exit = True
            return
        self.app.state.draining = True
        self._drain_thread = threading.Thread(target=self._drain, name="ayar-drain", daemon=True)
        self._drain_thread.start()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while self.app.state.inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.should_exit = True


def set_cpu_threads(threads: int | None) -> int:
    """torch's CPU threads: by default one core fewer than the machine has, left to the HTTP event loop.

    torch's OpenMP threads spin while they wait; when they take every core the event loop and the
    generation thread fight them for CPU (the throughput it cost is in docs/serving.md, "Threads").
    """
    import torch

    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    count = threads or max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(count)
    return count


def api_keys_from(cli_keys: list[str] | None) -> list[str]:
    """Keys from --api-key options, else from the AYAR_API_KEY variable (comma-separated)."""
    keys = [k for k in (cli_keys or []) if k]
    if not keys and os.environ.get(API_KEY_ENV):
        keys = [k.strip() for k in os.environ[API_KEY_ENV].split(",") if k.strip()]
    return keys


def parse_adapters(specs: list[str] | None) -> dict[str, Path]:
    """``name=path`` strings into a mapping."""
    adapters: dict[str, Path] = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UsageError(f"--adapter '{spec}' must look like name=path/to/adapter")
        adapters[name.strip()] = Path(path.strip())
    return adapters


def check_serve_contract(model_path: Path, adapters: dict[str, Path] | None, force: bool) -> None:
    """The served folder's tokenizer renders its own and each extra adapter's reference conversations as
    they were trained (the tokenizer alone is loaded: seconds, before the model's minutes)."""
    from ayar.export import find_model_dir
    from ayar.models.load import load_tokenizer
    from ayar.models.template_contract import check_contract

    source = find_model_dir(Path(model_path))
    tokenizer = load_tokenizer(str(source))
    for folder in (source, *(find_model_dir(Path(p)) for p in (adapters or {}).values())):
        check_contract(folder, tokenizer, force)


def engine_loader(engine: str, model_path: Path, adapters: dict[str, Path] | None, served_name: str | None,
                  max_queue: int, max_batch: int, threads: int | None) -> PreparedEngine:
    """The chosen engine (``ayar.serve.engine.ENGINES``) ready to load in the background; what can be checked
    without loading the model (the engine installed, a GGUF to serve, no adapters where they cannot be)
    fails here, at once."""
    request = EngineRequest(Path(model_path), dict(adapters or {}), served_name, max_queue, max_batch, threads)
    return prepare_engine(engine, request)


def serve(
    model_path: Path,
    host: str = _DEFAULTS.host,
    port: int = _DEFAULTS.port,
    adapters: dict[str, Path] | None = None,
    served_name: str | None = None,
    settings: ServeSettings | None = None,
    max_queue: int = _DEFAULTS.max_queue,
    drain_timeout: float = _DEFAULTS.drain_timeout,
    max_batch: int = _DEFAULTS.max_batch,
    threads: int | None = None,
    force: bool = False,
    engine: str = _DEFAULTS.engine,
) -> None:
    """Serve a run, model or adapter folder (or, with the llamacpp engine, a GGUF file) until SIGTERM/SIGINT
    (loads the model in the background).

    First, before the port opens: the folder (and each adapter) must render its training conversations as
    training did (ayar.models.template_contract), unless force.
    """
    set_cpu_threads(threads)
    model_path = Path(model_path)
    if not model_path.exists():
        raise UsageError(f"model folder not found: {model_path}")
    for name, path in (adapters or {}).items():
        if not Path(path).exists():
            raise UsageError(f"adapter '{name}' folder not found: {path}")
    settings = settings or ServeSettings()
    if settings.log_requests and settings.log_db is None:
        raise UsageError("request logging needs a database path (--log-db requests.sqlite)")
    prepared = engine_loader(engine, model_path, adapters, served_name, max_queue, max_batch, threads)
    if prepared.has_training_folder:
        check_serve_contract(model_path, adapters, force)
    app = create_app(settings, loader=prepared.load)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5,
                            access_log=False)
    DrainingServer(config, app, drain_timeout).run()



# ---------------------------------------------------------------- `ayar serve RECIPE|RUN|MODEL`: one schema

@dataclass
class ServeTarget:
    """What `ayar serve` serves, and with which settings (defaults < the recipe's serve section < flags)."""

    model: Path
    config: ServeConfig
    run_dir: Path | None = None  # the run folder, when known: the request log goes there by default


def resolve_target(target: Path, overrides: dict[str, Any] | None = None) -> ServeTarget:
    """A recipe file, a run folder (its recipe.yaml) or a model folder, with flags applied to its serve section."""
    target = Path(target)
    run_dir, base = None, ServeConfig()
    if target.suffix in (".yaml", ".yml"):
        recipe = load_recipe(target)
        run_dir, base = recipe.run_dir, recipe.serve
    elif (target / "recipe.yaml").is_file():
        run_dir, base = target, load_recipe(target / "recipe.yaml").serve
    chosen = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        config = ServeConfig.model_validate({**base.model_dump(), **chosen})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"{option_name(str(err['loc'][0]))}: {err['msg']}") from None
    return ServeTarget(run_dir if run_dir is not None else target, config, run_dir)


def serve_target(target: Path, overrides: dict[str, Any] | None = None, adapters: list[str] | None = None,
                 served_name: str | None = None, api_keys: list[str] | None = None,
                 threads: int | None = None, force: bool = False) -> None:
    """`ayar serve`: resolve the target and its settings, then :func:`serve` it."""
    resolved = resolve_target(target, overrides)
    cfg = resolved.config
    log_db = resolved.run_dir / "requests.sqlite" if resolved.run_dir is not None else None
    settings = ServeSettings.from_config(cfg, api_keys_from(api_keys), default_log_db=log_db)
    serve(resolved.model, cfg.host, cfg.port, parse_adapters(adapters), served_name, settings, cfg.max_queue,
          cfg.drain_timeout, cfg.max_batch, threads, force, cfg.engine)
