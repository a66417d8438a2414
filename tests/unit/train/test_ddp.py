"""Two-process data-parallel training on the CPU (gloo) matches one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ayar.errors import UsageError
from ayar.train.launch import accelerate_config, strip_nproc, torchrun_command

WORKER = Path(__file__).with_name("ddp_worker.py")
STEPS = 6
# Same examples per step and token-averaged loss across ranks; the gap is float summation order only.
LOSS_TOLERANCE = 1e-4


def run_worker(command: list[str], tmp: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_worker([sys.executable, str(WORKER), str(single), str(tmp_path / "audit_single"), "4", str(STEPS)], tmp_path)
    run_worker(torchrun_command([str(WORKER), str(ddp), str(tmp_path / "audit_ddp"), "2", str(STEPS)], 2), tmp_path)

    one = json.loads((single / "losses.json").read_text())
    two = json.loads((ddp / "losses.json").read_text())
    assert len(one) == len(two) == STEPS
    assert one[-1] < one[0]  # it learned something, so matching curves mean something
    assert two == pytest.approx(one, abs=LOSS_TOLERANCE, rel=LOSS_TOLERANCE)

    rank0 = json.loads((tmp_path / "audit_ddp" / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "audit_ddp" / "rank1.json").read_text())
    assert any("checkpoint-" in event for event in rank0)  # the audit sees the main process's writes
    assert rank1 == []  # and rank 1 wrote nothing under the run folder
    assert sorted(p.name for p in (ddp / "checkpoints").glob("checkpoint-*")) == [f"checkpoint-{STEPS // 2}", f"checkpoint-{STEPS}"]
    assert (ddp / "model" / "model.safetensors").is_file()


def test_torchrun_command_and_argv() -> None:
    command = torchrun_command(["ayar.cli", "train", "r.yaml"], 2, module=True, nnodes=2, node_rank=1,
                               master_addr="10.0.0.1", master_port=29500)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in command and "--node_rank=1" in command and "--master_addr=10.0.0.1" in command
    assert command[-4:] == ["-m", "ayar.cli", "train", "r.yaml"]
    assert strip_nproc(["train", "r.yaml", "--nproc", "2", "--set", "a=1", "--nproc=3"]) == ["train", "r.yaml",
                                                                                            "--set", "a=1"]
    with pytest.raises(UsageError, match="node rank"):
        torchrun_command(["x.py"], 2, nnodes=2, node_rank=2)
    with pytest.raises(UsageError, match="at least 1"):
        torchrun_command(["x.py"], 0)


def test_accelerate_configs_ship_and_refuse_what_cannot_run() -> None:
    import torch
    from accelerate.commands.config.config_args import ClusterConfig

    folder = Path(__file__).resolve().parents[3] / "configs" / "accelerate"
    loaded = {p.stem: ClusterConfig.from_yaml_file(str(p)) for p in folder.glob("*.yaml")}  # accelerate's parser
    assert set(loaded) == {"ddp", "fsdp", "fsdp_offload", "deepspeed_zero2", "deepspeed_zero3"}
    assert loaded["fsdp_offload"].fsdp_config["fsdp_offload_params"] is True
    assert loaded["fsdp"].fsdp_config["fsdp_offload_params"] is False
    assert [loaded[f"deepspeed_zero{z}"].deepspeed_config["zero_stage"] for z in (2, 3)] == [2, 3]
    assert accelerate_config("ddp").name == "ddp.yaml"
    with pytest.raises(UsageError, match="no accelerate config"):
        accelerate_config("zero9")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="needs CUDA"):
            accelerate_config("fsdp")
