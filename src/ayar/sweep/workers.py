"""How many sweep workers share this machine, so that each takes its share of the cores.

Every ``ayar sweep`` process leaves a file named after its process id in a folder of this machine's temp
directory while it runs, whatever its study or storage: workers of different sweeps compete for the same
cores. A worker counts the files whose process still lives (a killed worker's file stays behind and is
cleared by the next count) before each trial, so a worker started later shrinks the others' next trials.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def registry() -> Path:
    """The folder of the running workers' files: local to this machine, shared by its users' processes."""
    return Path(tempfile.gettempdir()) / "ayar-sweep-workers"


def machine_cores() -> int:
    """The cores this process may run on (its affinity, which containers and taskset narrow), else all."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


@contextlib.contextmanager
def registered_worker() -> Iterator[None]:
    """This process counted as a worker of this machine for as long as the block runs."""
    folder = registry()
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / str(os.getpid())
    mine.touch()
    try:
        yield
    finally:
        mine.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def live_workers() -> int:
    """Workers running on this machine now, this one included (at least 1)."""
    count = 0
    for file in registry().glob("*"):
        if not file.name.isdigit():
            continue
        if _alive(int(file.name)):
            count += 1
        else:
            file.unlink(missing_ok=True)  # a worker killed before it could remove its own file
    return max(1, count)


def share_of_cores(cap: int | None = None) -> int:
    """This worker's torch threads: the machine's cores divided by the live workers, at most ``cap``."""
    share = max(1, machine_cores() // live_workers())
    return min(share, cap) if cap else share
