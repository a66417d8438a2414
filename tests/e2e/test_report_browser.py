"""report.html in headless Chromium: it loads offline, with no console errors, and shows the metric table.

Chromium is driven over the DevTools protocol (websocket-client), so console errors, uncaught
exceptions, failed loads and every network request are seen exactly, not scraped from logs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ayar.eval.compare import compare_per_example
from ayar.eval.errors import analyze_errors
from ayar.eval.report import write_report
from ayar.eval.risks.hallucination import hallucination_probe

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class DevTools:
    """A minimal DevTools-protocol session on one page."""

    def __init__(self, url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=30)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(e.get("method") == method for e in self.events):
                return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(f"no {method} within {timeout}s")


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[DevTools]:
    path = _browser()
    if path is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium)")
    pytest.importorskip("websocket", reason="websocket-client is not installed (pip install websocket-client)")
    profile = tmp_path / "profile"
    process = subprocess.Popen(
        [path, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.time() > deadline or process.poll() is not None:
                pytest.fail("Chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            pages = [p for p in json.loads(reply.read()) if p["type"] == "page"]
        session = DevTools(pages[0]["webSocketDebuggerUrl"])
        yield session
        session.ws.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def _metrics() -> dict[str, Any]:
    """A run's metrics.json made by the real functions on small hand-made rows."""
    rows = [{"id": f"r{i}", "prompt": f"Tarihi yaz {i}", "reference": "3 Şubat 2001", "output": out, "lang": lang,
             "label": "date", "nll": 1.0 + i / 10, "chrf": 10.0 * i, "input_tokens": 5 + i}
            for i, (out, lang) in enumerate([("3 Şubat 2001", "tr"), ("5 Mart 1999", "tr"), ("x", "en")])]
    base = {"perplexity": 12.5, "nll": 2.53, "exact_match": 0.1, "chrf": 20.0, "bleu": 5.0, "examples": 3}
    tuned = {"perplexity": 4.2, "nll": 1.43, "exact_match": 0.6, "chrf": 55.0, "bleu": 30.0, "examples": 3}
    return {
        "train": {"final_loss": 1.2, "steps": 2, "loss_history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.2}]},
        "eval": {"base": base, "tuned": tuned, "split": {"name": "test", "examples": 3},
                 "comparison": compare_per_example({"chrf": [0.0, 10.0, 20.0]}, {"chrf": [30.0, 40.0, 20.0]}, seed=0),
                 "error_analysis": {"tuned": analyze_errors(rows, "chrf", k=2)},
                 "histograms": {"nll": {"edges": [1.0, 1.1, 1.2, 1.3], "counts": {"base": [1, 1, 1],
                                                                                    "tuned": [2, 1, 0]}}},
                 "risks": {"tuned": {"hallucination": hallucination_probe(rows)}}},
        "carbon": {"train": {"energy_kwh": 0.002, "co2_kg": 0.0009, "duration_s": 12.0, "country_iso_code": "TUR",
                             "power_source": "estimated"}},
    }


def test_report_opens_offline_without_console_errors(browser_page: DevTools, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_report(run_dir, _metrics(), "browser")
    page = browser_page
    for domain in ("Page", "Runtime", "Log", "Network"):
        page.call(f"{domain}.enable")
    page.call("Page.navigate", url=(run_dir / "report.html").as_uri())
    page.wait_for("Page.loadEventFired")
    page.call("Runtime.evaluate", expression="1")  # drains events queued before the load finished
    errors = [e for e in page.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
              or e.get("method") == "Network.loadingFailed"]
    assert errors == []
    requested = [e["params"]["request"]["url"] for e in page.events if e.get("method") == "Network.requestWillBeSent"]
    assert requested and all(url.startswith(("file:", "data:")) for url in requested), requested

    def evaluate(expression: str) -> Any:
        return page.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"]

    table = evaluate("Array.from(document.querySelectorAll('#metric-table tr'))"
                     ".map(r => Array.from(r.cells).map(c => c.innerText.trim()))")
    assert table[0][:3] == ["metric", "base", "tuned"]
    perplexity = next(row for row in table if row[0] == "perplexity")
    assert perplexity[1:4] == ["12.5", "4.2", "-8.3"]
    assert evaluate("document.querySelector('#metric-table').getBoundingClientRect().height") > 0
    images = evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert len(images) >= 3 and all(done and width > 0 for done, width in images)
