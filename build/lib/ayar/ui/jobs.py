"""Runs started from the UI: `ayar run` as a subprocess, its log and exit code kept under <runs>/.ui/."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ayar.errors import UsageError

LOG_TAIL_BYTES = 6000


@dataclass
class Job:
    """One `ayar run` the UI started."""

    name: str
    recipe: Path
    log: Path
    process: subprocess.Popen

    @property
    def state(self) -> str:
        code = self.process.poll()
        return "running" if code is None else ("done" if code == 0 else "failed")

    def as_dict(self) -> dict[str, Any]:
        size = self.log.stat().st_size if self.log.is_file() else 0
        with self.log.open("rb") as f:
            f.seek(max(0, size - LOG_TAIL_BYTES))
            tail = f.read().decode("utf-8", errors="replace")
        return {"name": self.name, "state": self.state, "pid": self.process.pid, "returncode": self.process.poll(),
                "recipe": str(self.recipe), "log_tail": tail}


class Jobs:
    """The runs this UI process started (their state outlives neither the process nor the log files)."""

    def __init__(self, runs_root: Path) -> None:
        self.folder = runs_root / ".ui"
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Job | None:
        return self._jobs.get(name)

    def state(self, name: str) -> str | None:
        job = self._jobs.get(name)
        return job.state if job else None

    def start(self, name: str, recipe_text: str) -> Job:
        """Write the recipe to <runs>/.ui/<name>.yaml and start `ayar run` on it, logging to <name>.log."""
        with self._lock:
            running = self._jobs.get(name)
            if running and running.state == "running":
                raise UsageError(f"run '{name}' is already running; give the new run another run.name")
            self.folder.mkdir(parents=True, exist_ok=True)
            recipe = self.folder / f"{name}.yaml"
            recipe.write_text(recipe_text, encoding="utf-8")
            log = self.folder / f"{name}.log"
            env = {**os.environ, "AYAR_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
            with log.open("wb") as out:  # the child keeps its own handle
                process = subprocess.Popen([sys.executable, "-m", "ayar.cli", "run", str(recipe)],
                                           stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env=env, start_new_session=True)
            job = Job(name, recipe, log, process)
            self._jobs[name] = job
            return job

    def stop_all(self) -> None:
        """Terminate the runs still going (the UI is shutting down)."""
        for job in self._jobs.values():
            if job.process.poll() is None:
                job.process.terminate()
