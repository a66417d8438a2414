"""`ayar --help` answers at once (no torch import); `ayar train --help` still lists every method."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PROBE = ("import sys; sys.argv = ['ayar', *sys.argv[1:]]\n"
         "from ayar.cli import app\n"
         "try:\n    app()\nexcept SystemExit:\n    pass\n"
         "print('HEAVY:' + ','.join(m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules))")


def run_cli(*args: str) -> tuple[str, float, float]:
    """(stdout, wall seconds, CPU seconds) of the CLI in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "200"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                          check=True, timeout=300)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.stdout, wall, cpu


def test_top_level_help_imports_no_ml_library_and_is_fast() -> None:
    out, wall, cpu = run_cli("--help")
    assert "train" in out and "serve" in out
    assert out.strip().endswith("HEAVY:"), out.splitlines()[-1]  # neither torch nor transformers was imported
    # CPU time does not grow with other work on the machine; idle, the wall time is about the same.
    assert cpu < 1.0, f"ayar --help used {cpu:.2f} s of CPU"
    assert wall < 10.0, f"ayar --help took {wall:.2f} s"  # generous: only a hang or a heavy import fails it


def test_train_help_still_lists_every_method() -> None:
    from ayar.methods import available_methods

    out, _, _ = run_cli("train", "--help")
    assert "Methods (method.name)" in out
    for name in available_methods():
        assert f"{name}:" in out, name
