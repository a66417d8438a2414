"""What machine a benchmark ran on, and where its results go: shared by the bench scripts (run as
`python bench/<name>.py`)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(threads: int) -> dict[str, Any]:
    """The machine a bench ran on: its CPU, cores, torch threads and version, the load average at the end."""
    import torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "load_avg": os.getloadavg()}


def machine_line(m: dict[str, Any]) -> str:
    """:func:`machine_info`'s record as a report's opening sentence."""
    return (f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']}, load average "
            f"{m['load_avg'][0]:.1f} at the end.")


def write_results(name: str, result: dict[str, Any], markdown: str, folder: Path = RESULTS) -> None:
    """``<folder>/<name>.json`` and ``.md`` (``bench/results`` by default), and the markdown on stdout."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=1))
    (folder / f"{name}.md").write_text(markdown)
    print(markdown)
