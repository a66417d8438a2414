"""lm-evaluation-harness's local-chat-completions model runs a generation task through the server and gets the
answers its own hf model generates on the same weights."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from live_server import live_server

_GENERATION_TASK = """task: serve_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["Q:"]
  max_gen_toks: 12
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def server_url(chat_model_dir: Path, adapter_dirs: dict[str, Path]) -> Iterator[str]:
    """``ayar serve``'s app under uvicorn on a free local port (lm-eval talks HTTP through requests), with an
    adapter: the random base model alone writes only newlines, the adapter writes varied text."""
    from ayar.serve.app import ServeSettings, create_app
    from ayar.serve.engine import load_engine

    engine = load_engine(chat_model_dir, {"tr": adapter_dirs["tr"]}, "tiny", 8).start()
    with live_server(create_app(ServeSettings(), engine=engine), start_timeout=60, stop_timeout=30) as url:
        yield url


def test_lm_eval_local_chat_completions_generates_what_its_hf_model_does(
        server_url: str, chat_model_dir: Path, adapter_dirs: dict[str, Path], tmp_path: Path) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    rows = [{"question": q, "answer": "Ankara"} for q in ("What is the capital of Turkey?", "Türkiye'nin başkenti?",
                                                           "Name a city.", "Say something.")]
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (tmp_path / "serve_gen.yaml").write_text(_GENERATION_TASK.format(data=tmp_path / "gen.jsonl"))
    tasks = TaskManager(include_path=str(tmp_path))
    models = {"local-chat-completions": {"model": "tr", "base_url": f"{server_url}/v1/chat/completions",
                                         "num_concurrent": 1, "max_retries": 1},
              "hf": {"pretrained": str(chat_model_dir), "peft": str(adapter_dirs["tr"]), "dtype": "float32", "device": "cpu"}}
    runs = {name: simple_evaluate(model=name, model_args=args, tasks=["serve_gen"], task_manager=tasks,
                                  apply_chat_template=True, log_samples=True, batch_size=1)
            for name, args in models.items()}
    served, direct = ([s["resps"][0][0] for s in sorted(runs[name]["samples"]["serve_gen"],
                                                        key=lambda s: s["doc_id"])] for name in models)
    assert len(served) == len(rows) and any(served)  # the server answered every prompt, not all empty
    assert served == direct
    scores = {name: run["results"]["serve_gen"]["exact_match,none"] for name, run in runs.items()}
    assert scores["local-chat-completions"] == scores["hf"]
