"""A native crash in a checked consumer (llama.cpp, onnxruntime) becomes one clear error, never a dead
`ayar export`, `ayar serve` or test run: the consumers run in a child process (ayar.export.isolated)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ayar.errors import AyarError
from ayar.export.isolated import ConsumerCrash, run_isolated

CRASHING = "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"  # what the AMX kernels did
FAILING = "import sys\nsys.exit('worker: cannot open the file')\n"


@pytest.fixture
def workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on the children's PYTHONPATH with a worker that segfaults and one that exits 1."""
    folder = tmp_path / "workers"
    folder.mkdir()
    (folder / "crashing_worker.py").write_text(CRASHING)
    (folder / "failing_worker.py").write_text(FAILING)
    src = str(Path(__file__).resolve().parents[3] / "src")
    monkeypatch.setenv("PYTHONPATH", f"{folder}:{src}")
    return folder


def test_a_segfault_in_the_child_is_a_clear_error_naming_consumer_and_file(workers: Path) -> None:
    with pytest.raises(ConsumerCrash, match=r"^llama.cpp crashed \(SIGSEGV\) while checking m.gguf \(q8_0\)"):
        run_isolated("crashing_worker", {}, "llama.cpp", "m.gguf (q8_0)")
    assert issubclass(ConsumerCrash, AyarError) and ConsumerCrash.exit_code == 1


def test_a_failing_child_says_its_last_line(workers: Path) -> None:
    with pytest.raises(ConsumerCrash, match="exit 1.*worker: cannot open the file"):
        run_isolated("failing_worker", {}, "onnxruntime", "model.onnx")


def test_a_reply_and_its_arrays_come_back(tmp_path: Path, workers: Path) -> None:
    (workers / "echo_worker.py").write_text(
        "import numpy as np\nfrom ayar.export.isolated import worker_main\n"
        "worker_main(lambda r: {'twice': 2 * r['x'], 'arrays': {'a': np.arange(r['x'])}})\n")
    reply = run_isolated("echo_worker", {"x": 3}, "test", "nothing")
    assert reply["twice"] == 6 and reply["a"].tolist() == [0, 1, 2]


def test_export_with_a_crashing_llama_cpp_exits_1_with_one_line(chatml_model_dir: Path, tmp_path: Path,
                                                                 workers: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from ayar.cli import main
    from ayar.export import llamacpp

    monkeypatch.setattr(llamacpp, "WORKER", "crashing_worker")
    out = tmp_path / "gguf"
    monkeypatch.setattr(sys, "argv", ["ayar", "export", str(chatml_model_dir), "--format", "gguf",
                                      "--gguf-dtype", "q8_0", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "llama.cpp crashed (SIGSEGV)" in err and ".gguf (q8_0)" in err and "Traceback" not in err


def test_serving_a_gguf_that_crashes_llama_cpp_reports_it_and_does_not_hang(chatml_model_dir: Path, tmp_path: Path,
                                                                             workers: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from ayar.export import export_model, llamacpp
    from ayar.serve.app import ServeSettings, create_app
    from ayar.serve.llamacpp_engine import load_llamacpp_engine

    gguf = export_model(chatml_model_dir, tmp_path / "gguf", fmt="gguf", gguf_dtype="f32", verify=False)
    monkeypatch.setattr(llamacpp, "WORKER", "crashing_worker")
    app = create_app(ServeSettings(), loader=lambda: load_llamacpp_engine(gguf, "tiny", 8, threads=1))
    with TestClient(app) as http:
        for _ in range(100):  # the load runs in the background: it fails within seconds
            if app.state.load_error:
                break
            time.sleep(0.1)
        ready = http.get("/readyz")
        chat = http.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
    assert ready.status_code == 503 and "llama.cpp crashed (SIGSEGV)" in ready.text
    assert chat.status_code == 503 and "llama.cpp crashed" in chat.text
