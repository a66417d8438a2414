"""Multi-process training through torchrun: ``ayar train RECIPE --nproc N`` re-executes itself under it.

The distributed work itself is torch's and accelerate's (the Trainer wraps the model in DDP, or
FSDP/DeepSpeed from an accelerate config); this module only builds the launcher command, tells a
process its rank, and refuses what the machine cannot run with one clear message.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ayar.errors import UsageError

LAUNCHED_ENV = "AYAR_DISTRIBUTED_CHILD"  # set in the children, so they never launch again
CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "accelerate"
GPU_ONLY_CONFIGS = {"fsdp", "fsdp_offload", "deepspeed_zero2", "deepspeed_zero3"}


def world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) of this process; (0, 0, 1) outside a launcher."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


def is_main_process() -> bool:
    """True in the process that writes files (rank 0, or the only process)."""
    return world()[0] == 0


def free_port() -> int:
    """A TCP port free on this host now (for a single-node rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun_command(target: Sequence[str], nproc: int, module: bool = False, nnodes: int = 1, node_rank: int = 0,
                     master_addr: str = "127.0.0.1", master_port: int | None = None) -> list[str]:
    """The ``python -m torch.distributed.run`` command that starts ``nproc`` copies of ``target`` on this node.

    Args:
        target: a script path and its arguments, or (``module=True``) a module name and its arguments.
        nproc: processes on this node (one per GPU; on a CPU, at most the cores).
        nnodes / node_rank / master_addr / master_port: the multi-node rendezvous; every node runs
            the same command with its own ``node_rank`` and node 0's address.
    """
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}")
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise UsageError(f"node rank {node_rank} does not fit {nnodes} node(s)")
    port = master_port or (free_port() if nnodes == 1 else 29500)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--nnodes={nnodes}",
               f"--node_rank={node_rank}", f"--master_addr={master_addr}", f"--master_port={port}"]
    return [*command, *(["-m"] if module else []), *target]


def check_nproc(nproc: int) -> None:
    """Refuse more processes than the machine has devices for (GPUs, else CPU cores)."""
    import torch

    devices = torch.cuda.device_count() if torch.cuda.is_available() else (os.cpu_count() or 1)
    kind = "GPUs" if torch.cuda.is_available() else "CPU cores"
    if nproc > devices:
        raise UsageError(f"--nproc {nproc} is more than this machine's {devices} {kind}")


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """The CLI arguments without ``--nproc N`` / ``--nproc=N`` (the children run single-process code)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch_distributed(argv: Sequence[str], nproc: int, nnodes: int = 1, node_rank: int = 0,
                       master_addr: str = "127.0.0.1", master_port: int | None = None) -> int:
    """Run ``ayar <argv>`` in ``nproc`` processes under torchrun; return the launcher's exit code.

    ``argv`` is the CLI's own argument list (``sys.argv[1:]``); ``--nproc`` is removed from it.
    Each child sees ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``; the Trainer then trains data-parallel.
    """
    if os.environ.get(LAUNCHED_ENV):
        raise UsageError("already running under a distributed launcher: drop --nproc")
    check_nproc(nproc)
    command = torchrun_command(["ayar.cli", *strip_nproc(argv)], nproc, module=True, nnodes=nnodes,
                               node_rank=node_rank, master_addr=master_addr, master_port=master_port)
    env = {**os.environ, LAUNCHED_ENV: "1"}
    if "OMP_NUM_THREADS" not in env:  # torchrun would set 1; share the cores among the processes instead
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    return subprocess.run(command, env=env, check=False).returncode


def accelerate_config(name: str) -> Path:
    """A shipped accelerate config by name (ddp, fsdp, fsdp_offload, deepspeed_zero2, deepspeed_zero3).

    Raises a UsageError naming what is missing where the config cannot run on this machine.
    """
    import torch

    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise UsageError(f"no accelerate config '{name}'; shipped: {', '.join(known)}")
    if name in GPU_ONLY_CONFIGS and not torch.cuda.is_available():
        raise UsageError(f"accelerate config '{name}' needs CUDA GPUs and this machine has none; "
                         "use 'ddp' (runs on CPUs with gloo)")
    if name.startswith("deepspeed") and shutil.which("ds_report") is None:
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise UsageError(f"accelerate config '{name}' needs DeepSpeed: pip install deepspeed") from None
    return path
