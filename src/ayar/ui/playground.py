"""The playground's models: each run's base and tuned model behind `ayar serve`'s own API app.

A run's two sides are served by ``ayar.serve.app.create_app`` over ``ayar.serve.engine`` engines, so a
playground answer takes exactly the path an `ayar serve` answer takes (chat template, batching, stop
strings, SSE chunks). For a LoRA run one engine holds both: the adapter as ``tuned`` and the same weights
with the adapter switched off as ``base``. For a full fine-tune, the base model gets its own engine and
the run's chat template. The UI mounts the apps at /play/<run>/<side>/v1/...
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ayar.run_folder import RunFolder

# /play/<run>/<side>/<rest>, where a run is a runs/ folder or a sweep's trial (<sweep>/trials/<n>)
PLAY_PATH = re.compile(r"^/play/(?P<run>[^/]+(?:/trials/\d+)?)/(?P<side>[^/]+)/(?P<rest>.*)$")

SIDES = ("base", "tuned")
MAX_LOADED = 2  # runs kept in memory at once; the least recently used one is unloaded


@dataclass
class RunModels:
    """The two API apps of one run and the loading state they share."""

    apps: dict[str, Any] = field(default_factory=dict)
    engines: list[Any] = field(default_factory=list)
    error: str | None = None
    ready: bool = False


def _base_path(run_dir: Path) -> Path:
    from ayar.ui.runs import read_recipe

    named = (read_recipe(run_dir).get("model") or {}).get("name_or_path")
    return Path(named) if named else RunFolder(run_dir).pretrain_model


def _load(run_dir: Path, models: RunModels) -> None:
    from ayar.models.load import is_adapter_dir
    from ayar.serve.engine import load_engine

    try:
        if is_adapter_dir(RunFolder(run_dir).model):
            engine = load_engine(run_dir, served_name="tuned")
            engine.names["base"] = None  # the same weights with the adapter switched off
            engines = {"base": engine, "tuned": engine}
        else:
            tuned = load_engine(run_dir, served_name="tuned")
            base = load_engine(_base_path(run_dir), served_name="base")
            if tuned.has_chat_template():  # answer with the template the run trained with
                base.tokenizer.chat_template = tuned.tokenizer.chat_template
            engines = {"base": base, "tuned": tuned}
        started = {id(e): e.start() for e in engines.values()}
        models.engines = list(started.values())
        for side, engine in engines.items():
            models.apps[side].state.engine = engine
        models.ready = True
    except Exception as exc:
        models.error = f"{type(exc).__name__}: {exc}"


class Playground:
    """Loads runs' models on first use and dispatches /play/<run>/<side>/... to their API apps."""

    def __init__(self, runs_root: Path, request_timeout: float = 300.0) -> None:
        self.runs_root, self.request_timeout = runs_root, request_timeout
        self._runs: OrderedDict[str, RunModels] = OrderedDict()
        self._lock = threading.Lock()

    def models(self, name: str) -> RunModels:
        """The run's models, loading them in the background on first use."""
        from ayar.serve.app import ServeSettings, create_app

        with self._lock:
            if name in self._runs:
                self._runs.move_to_end(name)
                return self._runs[name]
            while len(self._runs) >= MAX_LOADED:
                _, old = self._runs.popitem(last=False)
                for engine in old.engines:
                    engine.stop(timeout=2)
            settings = ServeSettings(request_timeout=self.request_timeout)  # the UI's own gate checked the key
            models = RunModels(apps={side: create_app(settings) for side in SIDES})
            self._runs[name] = models
        threading.Thread(target=_load, args=(self.runs_root / name, models), name=f"ayar-ui-load-{name}",
                         daemon=True).start()
        return models

    def status(self, name: str) -> dict[str, Any]:
        models = self.models(name)
        return {"ready": models.ready, "error": models.error}

    def stop(self) -> None:
        for models in self._runs.values():
            for engine in models.engines:
                engine.stop(timeout=2)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp) -> None:
        """Send /play/<run>/<side>/<rest> to that side's API app as /<rest> (a sweep's trial is a run too)."""
        found = PLAY_PATH.match(scope["path"])
        if found is None or found["side"] not in SIDES or found["run"].startswith(".") \
                or not RunFolder(self.runs_root / found["run"]).recipe_file.is_file():
            await fallback(scope, receive, send)
            return
        app = self.models(found["run"]).apps[found["side"]]
        rest = "/" + found["rest"]
        await app({**scope, "path": rest, "raw_path": rest.encode(), "root_path": ""}, receive, send)
