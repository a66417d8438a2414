"""`ayar ui` in headless Chromium, served by the real `ayar ui` command over real run folders.

Two run folders are built from the tiny config-built model (a full fine-tune layout, with metrics made by
the real comparison functions); a third is a real `ayar run` of a tiny recipe that the test starts from
the new-run form and watches train. Every page is checked for console errors and for requests leaving
127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from ayar.data.card import DataCard
from ayar.eval.compare import compare_per_example
from ayar.recipe import dump_recipe, validate_recipe

if TYPE_CHECKING:
    from conftest import DevTools

from conftest import chromium_session

ROOT = Path(__file__).resolve().parents[2]
# the tiny recipe the form starts: recipes/from-scratch.yaml scaled down to seconds (see tests/e2e/test_cli_run.py)
TINY_FORM = {
    "run.name": "live", "pretrain.max_steps": "4", "pretrain.batch_size": "4", "pretrain.model.hidden_size": "32",
    "pretrain.model.num_layers": "1", "pretrain.model.intermediate_size": "64",
    "pretrain.tokenizer.vocab_size": "512", "data.synthetic.num_records": "120", "train.max_steps": "200",
    "train.logging_steps": "1", "train.eval_steps": "100", "train.batch_size": "4", "eval.max_examples": "8",
    "eval.max_new_tokens": "4", "run.carbon": "false", "eval.risks.enabled": "false",
    "eval.forgetting.enabled": "false",
}
PROMPTS = ["Ayın adını yaz: 2001-02-03", "Write the month of 1999-03-05", "Tek mi çift mi: 7"]


def _fixture_run(root: Path, name: str, model_dir: Path, outputs: list[str], shift: float) -> Path:
    """A finished full fine-tune run folder: the tiny model as base and as 'tuned' model, real-shaped files."""
    run_dir = root / name
    (run_dir / "data").mkdir(parents=True)
    recipe = validate_recipe({"task": "causal_lm", "run": {"name": name, "output_dir": str(root)},
                              "model": {"name_or_path": str(model_dir)}, "method": {"name": "full"},
                              "train": {"max_steps": 6}})
    dump_recipe(recipe, run_dir / "recipe.yaml")
    shutil.copytree(model_dir, run_dir / "model")
    history = [{"step": s, "loss": 3.0 - shift - 0.3 * s} for s in range(1, 7)] + [{"step": 6, "eval_loss": 1.5}]
    (run_dir / "train_history.json").write_text(json.dumps(history), encoding="utf-8")
    base = {"perplexity": 30.0, "nll": 3.4, "exact_match": 0.0, "chrf": 10.0, "examples": 3}
    tuned = {"perplexity": 12.5 - shift, "nll": 2.5, "exact_match": 0.5 + shift / 10, "chrf": 40.0, "examples": 3}
    comparison = compare_per_example({"chrf": [0.0, 10.0, 20.0], "exact_match": [0.0, 0.0, 0.0]},
                                     {"chrf": [30.0, 40.0, 50.0], "exact_match": [1.0, 0.0, 1.0]}, seed=0)
    metrics = {"train": {"final_loss": 1.2 - shift, "steps": 6, "wall_time_s": 3.0},
               "eval": {"base": base, "tuned": tuned, "split": {"name": "test", "examples": 3},
                        "comparison": comparison},
               "forgetting": {"general_text_nll": {"base": 3.1, "tuned": 3.3, "delta": 0.2}}}
    rows = [{"id": f"t{i}", "prompt": p, "reference": "Şubat", "base_output": "?", "tuned_output": out}
            for i, (p, out) in enumerate(zip(PROMPTS, outputs, strict=True))]
    for file in ("samples.jsonl", "predictions.jsonl"):
        (run_dir / file).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    card = DataCard(records_in=12)
    for i in range(2):
        card.remove("near_duplicate", lambda i=i: {"id": f"d{i}", "text": "aynı kayıt"})
    card.reject({"line": 4, "error": "missing field 'output'"})
    for _ in range(9):
        card.keep(20, 5)
    (run_dir / "data" / "data_card.json").write_text(json.dumps(card.to_dict(), ensure_ascii=False), "utf-8")
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")  # written last: done
    return run_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[dict[str, Any]]:
    """`ayar ui` running over a runs folder with two finished fixture runs."""
    work = tmp_path_factory.mktemp("ui")
    root = work / "runs"
    root.mkdir()
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AYAR_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    log = (work / "ui.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "ayar.cli", "ui", "--runs", str(root), "--port", str(port)],
                               cwd=Path(__file__).resolve().parents[2], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    # the run folders appear while the UI starts: it reads the folder on every request
    _fixture_run(root, "fixture-a", tiny_model_dir, ["Şubat", "March", "tek"], 0.0)
    _fixture_run(root, "fixture-b", tiny_model_dir, ["Mart", "March", "çift"], 0.2)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/runs", timeout=5):
                break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                pytest.fail(f"ayar ui did not start: {(work / 'ui.log').read_text()[-2000:]}")
            time.sleep(0.3)
    with chromium_session(work / "profile") as page:
        yield {"url": base, "root": root, "page": page, "process": process, "model": tiny_model_dir}
    try:  # the run the form started: stopped if a failed test left it going
        with urllib.request.urlopen(f"{base}/api/jobs/live", timeout=5) as reply:
            job = json.loads(reply.read())
        if job["state"] == "running":
            os.kill(job["pid"], signal.SIGTERM)
    except OSError:
        pass
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("ayar ui did not stop within 30 s of SIGTERM")
    finally:
        log.close()


def _clean(page: DevTools, base: str) -> None:
    """No console errors or failed loads, and no request to anything but this server (or inline data)."""
    errors = page.errors()
    assert errors == [], json.dumps(errors, indent=1)[:4000]
    outside = [u for u in page.requested() if not u.startswith((base + "/", "data:", "about:"))]
    assert outside == []
    page.events.clear()  # each test judges its own pages


def _screenshot(page: DevTools, name: str) -> None:
    """With AYAR_UI_SCREENSHOTS=folder, keep what the page looks like (docs/img/ui-*.jpg come from here)."""
    folder = os.environ.get("AYAR_UI_SCREENSHOTS")
    if not folder:
        return
    page.call("Emulation.setDeviceMetricsOverride", width=1280, height=860, deviceScaleFactor=1, mobile=False)
    shot = page.call("Page.captureScreenshot", format="jpeg", quality=70)
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"ui-{name}.jpg").write_bytes(base64.b64decode(shot["data"]))


def _cells(page: DevTools, table: str) -> list[list[str]]:
    return page.evaluate(f"Array.from(document.querySelectorAll('{table} tr'))"
                         ".map(r => Array.from(r.cells).map(c => c.innerText.trim()))")


def test_runs_list_shows_the_runs_and_sorts(ui: dict[str, Any]) -> None:
    page, base = ui["page"], ui["url"]
    page.navigate(base + "/?lang=en")
    rows = _cells(page, "#runs-table tbody")
    names = [r[1] for r in rows]
    assert sorted(names) == ["fixture-a", "fixture-b"]
    row = rows[names.index("fixture-a")]
    assert row[2:6] == ["causal_lm", "full", str(ui["model"]), "done"]
    headers = _cells(page, "#runs-table thead")[0]
    column = headers.index("exact_match (tuned)")
    assert row[column] == "0.5" and rows[names.index("fixture-b")][column] == "0.52"
    for clicks, first in ((1, "fixture-a"), (2, "fixture-b")):  # ascending, then descending
        page.evaluate(f"document.querySelectorAll('#runs-table th')[{column}].click()")
        assert _cells(page, "#runs-table tbody")[0][1] == first, clicks
    _screenshot(page, "runs")
    _clean(page, base)


def test_run_page_shows_metrics_with_intervals_data_card_and_recipe(ui: dict[str, Any]) -> None:
    page, base = ui["page"], ui["url"]
    page.navigate(base + "/runs/fixture-a")
    table = _cells(page, "#metric-table")
    assert table[0] == ["metric", "base", "tuned", "delta", "CI"]
    chrf = next(r for r in table if r[0] == "chrf")
    assert chrf[1:4] == ["10", "40", "30"] and chrf[4].startswith("[")
    assert page.wait_until("document.querySelector('#loss-chart').dataset.points") == "7"  # 6 losses + 1 eval
    assert _cells(page, "#data-card-table")[1] == ["12", "9", "2", "1"]
    assert _cells(page, "#removed-table")[1][:2] == ["near_duplicate", "2"]
    assert "general_text_nll" in page.evaluate("document.body.innerText")  # the forgetting section
    assert "name: fixture-a" in page.evaluate("document.querySelector('#recipe').innerText")
    commands = page.evaluate("document.querySelector('#artifacts-table').innerText")
    assert f"ayar serve {ui['root']}/fixture-a" in commands
    _screenshot(page, "run")
    _clean(page, base)


def test_a_run_stopped_by_the_forgetting_gate_shows_it_in_red(ui: dict[str, Any]) -> None:
    page, base, root = ui["page"], ui["url"], ui["root"]
    run_dir = root / "fixture-gated"
    shutil.copytree(root / "fixture-a", run_dir, ignore=shutil.ignore_patterns("model"))
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    reason = "greedy answers: 9 of the base's 40 correct answers lost (22.5%, McNemar p = 0.033)"
    metrics["forgetting"] = {"gate": {"passed": False, "reasons": [reason], "levers": ["train.self_distill"]}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    try:
        page.navigate(base + "/runs/fixture-gated?lang=en")
        page.wait_until("document.querySelector('#loss-chart').dataset.points")  # the status poll came back
        badge = "document.querySelector('h1 .status')"
        assert page.evaluate(f"{badge}.innerText") == "stopped by the forgetting gate"
        assert page.evaluate(f"getComputedStyle({badge}).backgroundColor") == "rgb(176, 65, 62)"
        assert reason in page.evaluate("document.querySelector('#gate-verdict').innerText")
        page.navigate(base + "/?lang=en")
        rows = _cells(page, "#runs-table tbody")
        assert next(r for r in rows if r[1] == "fixture-gated")[5] == "stopped by the forgetting gate"
        assert next(r for r in rows if r[1] == "fixture-a")[5] == "done"  # no gate in its figures: as before
    finally:
        shutil.rmtree(run_dir)
    _clean(page, base)


def test_interface_follows_the_browser_language_and_switches(ui: dict[str, Any]) -> None:
    page, base = ui["page"], ui["url"]
    page.call("Network.clearBrowserCookies")  # an earlier ?lang=en choice would win over the browser's language
    page.call("Network.setExtraHTTPHeaders", headers={"Accept-Language": "tr-TR,tr;q=0.9,en;q=0.5"})
    try:
        page.navigate(base + "/runs/fixture-a")
        assert page.evaluate("document.documentElement.lang") == "tr"
        assert "Ölçümler" in page.evaluate("document.body.innerText")
        mark = len(page.events)
        page.evaluate("document.querySelector('#lang-switch').click()")
        page.wait_for("Page.loadEventFired", since=mark)
        assert page.evaluate("document.documentElement.lang") == "en"
        assert page.evaluate("location.pathname") == "/runs/fixture-a"
        page.navigate(base + "/")  # the choice is kept (cookie) over Accept-Language
        assert page.evaluate("document.documentElement.lang") == "en"
    finally:
        page.call("Network.setExtraHTTPHeaders", headers={})
    _clean(page, base)


def test_compare_shows_two_runs_and_their_shared_examples(ui: dict[str, Any]) -> None:
    page, base = ui["page"], ui["url"]
    page.navigate(base + "/compare?runs=fixture-a&runs=fixture-b&lang=en")
    table = _cells(page, "#compare-table")
    assert table[0] == ["metric", "fixture-a", "fixture-b"]
    assert next(r for r in table if r[0] == "perplexity (tuned)")[1:] == ["12.5", "12.3"]
    series = page.wait_until("document.querySelector('#compare-chart').dataset.series")
    assert set(series.split("|")) == {"fixture-a loss", "fixture-a eval_loss", "fixture-b loss", "fixture-b eval_loss"}
    shared = _cells(page, "#shared-table")
    assert len(shared) == 4 and shared[1][2:] == ["Şubat", "Mart"]
    _screenshot(page, "compare")
    _clean(page, base)


def _fill(page: DevTools, values: dict[str, str]) -> None:
    for key, value in values.items():
        found = page.evaluate(f"""(() => {{
            const input = Array.from(document.querySelectorAll('#recipe-form [data-key]'))
              .find(i => i.dataset.key === {json.dumps(key)} && !i.closest('.field').hidden);
            if (!input) return false;
            input.value = {json.dumps(value)};
            input.dispatchEvent(new Event('change'));
            return true; }})()""")
        assert found, key


def _on_screen(page: DevTools) -> list[str]:
    """The keys of the form fields a person sees now (not hidden, not in a closed fold)."""
    return page.evaluate("Array.from(document.querySelectorAll('#recipe-form [data-key]'))"
                         ".filter(i => i.checkVisibility()).map(i => i.dataset.key)")


def _choose(page: DevTools, key: str, value: str) -> None:
    page.evaluate(f"""(() => {{ const input = document.querySelector('#recipe-form .field:not([data-method]) '
        + '[data-key="{key}"]'); input.value = {json.dumps(value)};
        input.dispatchEvent(new Event('change', {{bubbles: true}})); }})()""")


def test_form_shows_the_main_fields_and_folds_the_rest(ui: dict[str, Any]) -> None:
    page, base = ui["page"], ui["url"]
    page.navigate(base + "/new?example=from-scratch&lang=en")
    assert page.evaluate("document.querySelectorAll('#recipe-form .field').length") > 250  # every schema leaf
    seen = _on_screen(page)
    assert {"model.name_or_path", "method.name", "method.r", "train.max_steps", "train.learning_rate"} <= set(seen)
    assert len(seen) < 20 and seen.count("method.r") == 1  # the chosen method's r, not DoRA's and QLoRA's
    assert page.evaluate("document.querySelectorAll('details.section[open]').length") == 0
    page.evaluate("document.querySelector('#more-pretrain summary').click()")
    assert "pretrain.model.hidden_size" in _on_screen(page)  # from-scratch pretrains: its section is there
    _choose(page, "pretrain.enabled", "false")
    assert page.evaluate("document.querySelector('#more-pretrain').hidden")
    assert not any(k.startswith("pretrain.") and k != "pretrain.enabled" for k in _on_screen(page))
    _choose(page, "pretrain.enabled", "true")
    assert "pretrain.model.hidden_size" in _on_screen(page)
    _choose(page, "method.name", "dpo")
    page.evaluate("document.querySelector('#more-method summary').click()")
    assert "method.beta" in _on_screen(page) and "method.r" not in _on_screen(page)
    _choose(page, "method.name", "lora")
    assert "method.beta" not in _on_screen(page) and "method.r" in _on_screen(page)
    _fill(page, {"eval.max_new_tokens": "-1"})  # a mistake in a closed fold opens it
    page.evaluate("document.querySelector('#check-button').click()")
    page.wait_until("document.querySelector('#form-message').innerText")
    assert page.evaluate("document.querySelector('#more-eval').open")
    assert page.evaluate("document.querySelector('#f-eval-max_new_tokens').closest('.field')"
                         ".classList.contains('invalid')")
    _clean(page, base)


def test_form_rejects_a_bad_value_then_starts_a_run_whose_curve_grows(ui: dict[str, Any]) -> None:
    page, base, root = ui["page"], ui["url"], ui["root"]
    page.navigate(base + "/new?example=from-scratch&lang=en")
    field = page.evaluate("document.querySelector('#f-train-learning_rate').closest('.field').innerText")
    assert "default: 0.0002" in field  # the schema's default, shown beside the example's value
    example = yaml.safe_load((ROOT / "recipes" / "from-scratch.yaml").read_text(encoding="utf-8"))
    shown = page.evaluate("document.querySelector('#f-train-learning_rate').value")
    assert float(shown) == example["train"]["learning_rate"]  # the example's value fills the field
    _fill(page, {"train.learning_rate": "-1"})
    page.evaluate("document.querySelector('#check-button').click()")
    message = page.wait_until("document.querySelector('#form-message').innerText")
    assert message == "recipe key 'train.learning_rate': Input should be greater than 0"  # the CLI's words
    assert page.evaluate("document.querySelector('#f-train-learning_rate').closest('.field')"
                         ".classList.contains('invalid')")
    _screenshot(page, "new-run")
    _fill(page, {"train.learning_rate": shown, **TINY_FORM})
    page.evaluate("document.querySelector('#start-button').click()")
    page.wait_until("document.querySelector('#job-state').dataset.state")
    assert "train:\n  epochs" not in page.evaluate("document.querySelector('#recipe-yaml').innerText")
    assert page.evaluate("document.querySelector('#recipe-cli').innerText").startswith("ayar run ")
    deadline = time.time() + 120
    while not (root / "live" / "recipe.yaml").is_file():
        assert time.time() < deadline, (root / ".ui" / "live.log").read_text()[-3000:]
        time.sleep(0.3)
    page.navigate(base + "/runs/live")
    assert page.evaluate("document.querySelector('h1 .status').dataset.status") == "running"
    seen: list[int] = []
    while time.time() < deadline + 120:
        status = page.evaluate("(document.querySelector('h1 .status') || {dataset: {}}).dataset.status")
        if status != "running":
            break
        points = int(page.evaluate("(document.querySelector('#loss-chart') || {dataset: {}}).dataset.points")
                     or 0)
        if not seen or points != seen[-1]:
            seen.append(points)
        time.sleep(0.4)
    log = (root / ".ui" / "live.log").read_text()
    assert page.wait_until("document.readyState === 'complete' && "
                           "document.querySelector('h1 .status').dataset.status", timeout=60) == "done", log[-3000:]
    grew = [p for p in seen if p > 0]
    assert len(grew) >= 3 and grew == sorted(grew), seen  # the curve grew while the run trained
    assert int(page.wait_until("document.querySelector('#loss-chart').dataset.points")) >= 40
    assert any(r[0] == "perplexity" for r in _cells(page, "#metric-table"))
    _clean(page, base)


def test_playground_streams_base_and_tuned_answers(ui: dict[str, Any]) -> None:
    page, base = ui["page"], ui["url"]
    if not (ui["root"] / "live" / "model" / "adapter_config.json").is_file():
        pytest.fail("the run started from the form did not finish (see the previous test)")
    page.navigate(base + "/runs/live/play")
    # the first playground loads torch, transformers and peft into the UI process: slow on a busy machine
    page.wait_until("document.querySelector('#play-status').dataset.ready || "
                    "document.querySelector('#play-status').className === 'error'", timeout=300)
    assert page.evaluate("document.querySelector('#play-status').dataset.ready") == "1", \
        page.evaluate("document.querySelector('#play-status').innerText")
    page.evaluate("document.querySelector('#play-input').value = 'Ayın adını yaz: 2001-02-03';"
                  "document.querySelector('#play-max').value = '12';"
                  "document.querySelector('#play-send').click()")
    states = page.wait_until("""(() => { const s = Array.from(document.querySelectorAll('.msg.assistant'))
        .map(m => m.dataset.state); return s.length === 2 && s.every(x => x !== 'streaming') && s; })()""",
                             timeout=240)
    answers = page.evaluate("Array.from(document.querySelectorAll('.msg.assistant'))"
                            ".map(m => [m.dataset.state, +(m.dataset.chunks || 0), m.textContent])")
    assert states == ["done", "done"], answers
    assert all(chunks >= 2 for _, chunks, _ in answers), answers  # streamed piece by piece, on both sides
    _screenshot(page, "playground")
    urls = page.requested()
    assert f"{base}/play/live/base/v1/chat/completions" in urls and f"{base}/play/live/tuned/v1/chat/completions" in urls
    _clean(page, base)
