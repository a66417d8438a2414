"""`ayar ui` over HTTP without a browser: run status, key checks, language choice, the form's checks, safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ayar.errors import UsageError
from ayar.recipe import dump_recipe, validate_recipe
from ayar.ui.app import create_ui_app, serve_ui
from ayar.ui.i18n import pick_language
from ayar.ui.runs import active_run_dirs, loss_series, run_status


def _run(root: Path, name: str, evaluated: bool) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    dump_recipe(validate_recipe({"run": {"name": name}, "model": {"name_or_path": "x"}}), run_dir / "recipe.yaml")
    if evaluated:
        metrics = {"eval": {"base": {"perplexity": 9.0, "exact_match": 0.1},
                            "tuned": {"perplexity": 3.0, "exact_match": 0.4}}}
        (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return run_dir


def test_status_done_running_and_failed(tmp_path: Path) -> None:
    done = _run(tmp_path, "done", evaluated=True)
    assert run_status(done) == "done"
    fresh = _run(tmp_path, "fresh", evaluated=False)
    assert run_status(fresh) == "running"  # written to just now, not evaluated yet
    stale = _run(tmp_path, "stale", evaluated=False)
    old = time.time() - 3600
    os.utime(stale / "recipe.yaml", (old, old))
    assert run_status(stale) == "failed"  # stopped before its evaluation
    rerun = _run(tmp_path, "rerun", evaluated=True)  # evaluated once, now running again
    os.utime(rerun / "metrics.json", (old, old))
    assert run_status(rerun) == "running"
    assert run_status(stale, job_state="running") == "running"  # what the UI knows of its own runs wins


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads live processes from Linux's /proc")
def test_a_live_ayar_stage_process_marks_its_run_running(tmp_path: Path) -> None:
    stale = _run(tmp_path / "runs", "quiet", evaluated=False)
    old = time.time() - 3600
    os.utime(stale / "recipe.yaml", (old, old))  # e.g. a long evaluation that writes nothing for a while
    (tmp_path / "r.yaml").write_text("run: {name: other}\n", encoding="utf-8")
    assert run_status(stale, active=active_run_dirs()) == "failed"
    # a process whose command line is `... -m ayar.cli eval r.yaml --set run.name=quiet`, in tmp_path
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "ayar.cli", "eval",
                                "r.yaml", "--set", "run.name=quiet"], cwd=tmp_path)
    try:
        deadline = time.time() + 10
        while stale.resolve() not in active_run_dirs() and time.time() < deadline:
            time.sleep(0.1)
        assert run_status(stale, active=active_run_dirs()) == "running"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run_status(stale, active=active_run_dirs()) == "failed"


def test_loss_series_from_history(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "r", evaluated=True)
    (run_dir / "train_history.json").write_text(json.dumps(
        [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "eval_loss": 1.7}]), encoding="utf-8")
    assert loss_series(run_dir) == {"loss": [(1, 2.0), (2, 1.5)], "eval_loss": [(2, 1.7)]}
    state = run_dir / "checkpoints" / "checkpoint-3" / "trainer_state.json"  # a later run without TensorBoard
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"log_history": [{"step": 3, "loss": 1.0}]}), encoding="utf-8")
    later = time.time() + 5
    os.utime(state, (later, later))
    assert loss_series(run_dir) == {"loss": [(3, 1.0)]}


def test_language_choice() -> None:
    assert pick_language(None, None, "tr-TR,tr;q=0.9,en-US;q=0.8") == "tr"
    assert pick_language(None, None, "de-DE,en;q=0.5,tr;q=0.4") == "en"
    assert pick_language(None, None, "de, fr") == "en"
    assert pick_language(None, "tr", "en") == "tr"  # the switch (cookie) wins over the browser
    assert pick_language("en", "tr", "tr") == "en"


def test_pages_escape_run_content_and_refuse_paths_outside_the_runs(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "x", evaluated=True)
    (run_dir / "samples.jsonl").write_text(json.dumps({"prompt": "<script>alert(1)</script>", "reference": "r",
                                                       "tuned_output": "o"}) + "\n", encoding="utf-8")
    client = TestClient(create_ui_app(tmp_path))
    page = client.get("/runs/x")
    assert page.status_code == 200 and "<script>alert(1)" not in page.text and "&lt;script&gt;" in page.text
    assert client.get("/runs/.ui").status_code == 404 and client.get("/runs/nope").status_code == 404
    assert client.get("/runs/x/files/recipe.yaml").status_code == 404  # only the report files are served
    assert client.get("/play/../etc/v1/models").status_code == 404
    runs = client.get("/api/runs").json()
    assert runs[0]["metrics"]["perplexity"] == {"base": 9.0, "tuned": 3.0, "delta": -6.0}


def test_a_run_stopped_by_the_forgetting_gate_says_so_and_older_runs_still_read(tmp_path: Path) -> None:
    gated = _run(tmp_path, "gated", evaluated=True)
    metrics = json.loads((gated / "metrics.json").read_text(encoding="utf-8"))
    reasons = ["en general-text perplexity rose +50.0% (bound +25%)"]
    metrics["forgetting"] = {"gate": {"passed": False, "reasons": reasons, "levers": ["eval.forgetting"]}}
    (gated / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    _run(tmp_path, "older", evaluated=True)  # no forgetting section at all
    client = TestClient(create_ui_app(tmp_path))
    runs = {r["name"]: r for r in client.get("/api/runs").json()}
    assert runs["gated"]["status"] == "gate_failed" and runs["gated"]["gate"]["reasons"] == reasons
    assert runs["older"]["status"] == "done" and runs["older"]["gate"] is None
    assert client.get("/api/runs/gated/curve").json()["status"] == "gate_failed"  # what the page's script polls
    page = client.get("/runs/gated").text
    assert 'data-status="gate_failed"' in page and reasons[0] in page
    listing = client.get("/").text
    assert listing.count('class="status gate_failed"') == 1 and 'data-status="done"' in listing
    assert client.get("/runs/older").status_code == 200


def test_form_check_gives_the_cli_message_and_the_yaml(tmp_path: Path) -> None:
    client = TestClient(create_ui_app(tmp_path))
    bad = client.post("/api/recipe/check", json={"example": "quickstart", "changes": {"train.learnig_rate": "1"}})
    assert bad.json() == {"ok": False, "key": "train.learnig_rate",
                          "error": "unknown recipe key 'train.learnig_rate' (did you mean 'train.learning_rate'?)"}
    good = client.post("/api/recipe/check", json={"example": "quickstart",
                                                  "changes": {"train.max_steps": "5", "run.name": "my run"}})
    body = good.json()
    assert body["ok"] and "max_steps: 5" in body["yaml"] and f"output_dir: {tmp_path.resolve()}" in body["yaml"]
    assert body["cli"] == "ayar run recipes/quickstart.yaml --set train.max_steps=5 --set 'run.name=my run'"
    refused = client.post("/api/runs", json={"example": "quickstart", "changes": {"run.name": "../escape"}})
    assert refused.status_code == 422 and "run.name" in refused.json()["error"]
    assert not (tmp_path / ".ui").exists()  # nothing was started


def test_api_key_when_set(tmp_path: Path) -> None:
    _run(tmp_path, "x", evaluated=True)
    client = TestClient(create_ui_app(tmp_path, api_keys=["s3cret"]), follow_redirects=False)
    assert client.get("/").status_code == 303  # to /login
    assert client.get("/api/runs").status_code == 401
    assert client.post("/play/x/tuned/v1/chat/completions", json={}).status_code == 401
    assert client.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.post("/login", content="key=wrong",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 401
    login = client.post("/login", content="key=s3cret", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert login.status_code == 303 and client.get("/api/runs").status_code == 200  # the cookie now


def test_other_sites_and_host_names_are_refused(tmp_path: Path) -> None:
    _run(tmp_path, "x", evaluated=True)
    app = create_ui_app(tmp_path, allowed_hosts=frozenset({"127.0.0.1", "localhost"}))
    client = TestClient(app, base_url="http://127.0.0.1:7860")
    assert client.get("/api/runs").status_code == 200
    rebound = TestClient(app, base_url="http://evil.example:7860")  # DNS rebinding: another name, same address
    assert rebound.get("/api/runs").status_code == 403
    change = {"example": "quickstart", "changes": {"run.name": "y"}}
    cross = client.post("/api/runs", json=change, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403 and "evil.example" in cross.json()["error"]
    plain = client.post("/api/runs", content=json.dumps(change), headers={"Content-Type": "text/plain"})
    assert plain.status_code == 403  # a cross-site POST that needs no CORS preflight
    same = client.post("/api/recipe/check", json=change, headers={"Origin": "http://127.0.0.1:7860"})
    assert same.status_code == 200 and same.json()["ok"]
    assert not (tmp_path / ".ui").exists()


def test_binding_beyond_this_machine_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--api-key"):
        serve_ui(tmp_path, host="0.0.0.0")
