"""The GPU check's CPU dry-run: every import, recipe and command line of the GPU run resolves here, and a broken
command line fails it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHECK = ROOT / "bench" / "gpu" / "check.sh"


def dry_run(out: Path, *options: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CHECK), "--dry-run", *options, str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, **env}, timeout=300, check=False)


def statuses(out: Path) -> dict[str, str]:
    return {p["part"]: p["status"] for p in json.loads((out / "gpu_check.json").read_text())["parts"]}


def test_dry_run_resolves_every_import_recipe_and_command_line(tmp_path: Path) -> None:
    done = dry_run(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    parts = statuses(tmp_path)
    for name in ("imports-recipes", "gpu-tests-collect", "train-bench-args", "serve-bench-args"):
        assert parts[name] == "ok", (tmp_path / "logs" / f"{name}.log").read_text()
    # ayar imports and trains under the GPU machine's transformers, in a side environment
    assert parts["transformers-5.17"] == "ok", (tmp_path / "logs" / "transformers-5.17.log").read_text()
    # the GPU tests are there to run: the QLoRA pair and the training ones
    collected = (tmp_path / "logs" / "gpu-tests-collect.log").read_text()
    assert "test_gpu_training.py::test_running_out_of_gpu_memory_halves_the_micro_batch" in collected
    assert "test_qlora_method.py::test_kbit_base_with_lora_trains_only_adapters[4]" in collected
    assert "# GPU check" in (tmp_path / "gpu_check.md").read_text()


def test_a_wrong_bench_argument_fails_the_dry_run(tmp_path: Path) -> None:
    done = dry_run(tmp_path, "--only", "train-bench-args", EXTRA_TRAIN_ARGS="--systems trl-bf16-no-such-row")
    assert done.returncode == 1
    assert statuses(tmp_path) == {"train-bench-args": "failed: exit 2"}
    assert "invalid choice: 'trl-bf16-no-such-row'" in (tmp_path / "logs" / "train-bench-args.log").read_text()
