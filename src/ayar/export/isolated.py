"""Run a checked consumer (llama.cpp, onnxruntime) in a child process.

The consumers are native code: a bad kernel for one CPU kind (llama.cpp's AMX path on q8_0 files did this)
dies with SIGSEGV and would take `ayar export`, `ayar serve` or the test run down with it, with no word of
what failed. In a child process the crash becomes one clear error naming the consumer and the file.

The protocol is a JSON request file in, a JSON reply file out (the consumers print to stdout and stderr
from C, so neither is a channel); arrays travel as .npy files, read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ayar.errors import AyarError

REPLY_KEY = "reply"
"""The request's key for the path the worker writes its JSON reply to."""


class ConsumerCrash(AyarError):
    """The consumer process died on a signal (a native crash) or failed without a reply (exit code 1)."""


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def run_isolated(module: str, request: dict[str, Any], consumer: str, what: str,
                 timeout: float | None = 1800) -> dict[str, Any]:
    """Run ``python -m module REQUEST_FILE`` and return its reply; ``what`` names the file and its type in
    the error. Raises ConsumerCrash when the child dies on a signal, exits non-zero or writes no reply."""
    with tempfile.TemporaryDirectory(prefix="ayar-consumer-") as tmp:
        request_file, reply_file = Path(tmp) / "request.json", Path(tmp) / "reply.json"
        request_file.write_text(json.dumps({**request, REPLY_KEY: str(reply_file), "tmp": tmp}), encoding="utf-8")
        try:
            proc = subprocess.run([sys.executable, "-m", module, str(request_file)], capture_output=True,
                                  text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ConsumerCrash(f"{consumer} did not finish checking {what} within {timeout:.0f} s") from None
        if proc.returncode < 0:
            raise ConsumerCrash(f"{consumer} crashed ({_signal_name(proc.returncode)}) while checking {what}: "
                                "a native fault in its kernels for this CPU or file type, not in the file's "
                                "contents as far as ayar can tell")
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if proc.returncode != 0 or not reply_file.is_file():
            raise ConsumerCrash(f"{consumer} failed while checking {what} (exit {proc.returncode}): {last}")
        reply = json.loads(reply_file.read_text(encoding="utf-8"))
        for key, name in list(reply.get("arrays", {}).items()):
            reply[key] = np.load(Path(tmp) / name, allow_pickle=False)
        return reply


def worker_main(handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The child's side: read the request named on the command line, write ``handle(request)`` as the reply.
    A handler returns numpy arrays under ``arrays`` ({key: array}); they are saved beside the reply."""
    request = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    reply = handle(request)
    arrays = reply.pop("arrays", {})
    if arrays:
        names = {}
        for key, array in arrays.items():
            names[key] = f"{key}.npy"
            np.save(Path(request["tmp"]) / names[key], array, allow_pickle=False)
        reply["arrays"] = names
    Path(request[REPLY_KEY]).write_text(json.dumps(reply), encoding="utf-8")
