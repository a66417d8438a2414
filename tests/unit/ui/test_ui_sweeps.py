"""`ayar ui` lists sweeps: a real sweep's trials linked to their run pages, the best marked, and a
two-objective study's Pareto front drawn by the page's chart script (in headless Chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp

from ayar.recipe import dump_recipe, load_recipe, validate_recipe
from ayar.sweep import SweepOptions, run_sweep
from ayar.ui.app import create_ui_app
from live_server import live_server


def tiny_sweep_sets(model_dir: Path, out: Path) -> list[str]:
    """Three trials of 4 steps on the config-built model, one of them on a scheduler the recipe refuses."""
    return [f"model.name_or_path={model_dir}", f"run.output_dir={out}", "run.name=s", "run.carbon=false",
            "data.synthetic.num_records=48", "data.synthetic.tasks=[upper]", "data.template=chatml",
            "data.split={train: 0.6, validation: 0.2, test: 0.2}", "method.name=lora", "train.max_steps=4",
            "train.batch_size=4", "train.precision=fp32", "train.eval_steps=2", "train.logging_steps=1",
            "train.report_to=[]", "sweep.test_best=false", "sweep.sampler=grid",
            "sweep.space={train.scheduler: [linear, bogus, cosine]}"]


@pytest.fixture(scope="module")
def swept(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder holding one real sweep folder ``s``."""
    root = tmp_path_factory.mktemp("runs")
    run_sweep(load_recipe(None, tiny_sweep_sets(tiny_model_dir, root)), SweepOptions(threads=1))
    return root


def trial_links(html: str) -> set[str]:
    return set(re.findall(r'href="(/runs/s/trials/\d+)"', html))


def test_the_sweeps_page_lists_a_sweep_and_its_trials_link_to_their_run_pages(swept: Path) -> None:
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{swept / 's' / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(done, key=lambda t: t.value)
    with TestClient(create_app_over(swept)) as http:
        listed = http.get("/sweeps").text
        assert 'href="/sweeps/s"' in listed and "3 trials (2 complete, 1 fail)" in listed
        page = http.get("/sweeps/s").text
        assert trial_links(page) == {f"/runs/s/trials/{t.number}" for t in done}  # the failed one has no folder
        assert "read live from the study" in page
        rows = {int(n): row for n, row in re.findall(r'<tr><td>.*?>(\d+)</a></td>(.*?)</tr>', page)}
        assert [n for n, row in rows.items() if "★ best" in row] == [best.number]
        assert 'src="/sweeps/s/files/history.png"' in page
        assert http.get("/sweeps/s/files/history.png").content[:4] == b"\x89PNG"
        trial_page = http.get(f"/runs/s/trials/{best.number}")
        assert trial_page.status_code == 200 and f"<h1>s/trials/{best.number} " in trial_page.text
        assert f"scheduler: {best.params['train.scheduler']}" in trial_page.text  # the trial's own recipe
        curve = http.get(f"/api/runs/s/trials/{best.number}/curve").json()
        assert [p[0] for p in curve["series"]["eval_loss"]] == [2, 4]
        assert http.get("/runs/s/trials/99").status_code == 404
        assert http.get("/sweeps/s/files/study.db").status_code == 404  # only the report's files
        assert "Taramalar" in http.get("/sweeps?lang=tr").text


def test_without_a_readable_study_the_page_reads_the_last_trials_table(swept: Path, tmp_path: Path) -> None:
    shutil.copytree(swept / "s", tmp_path / "s", ignore=shutil.ignore_patterns("study.db", "study.json"))
    with TestClient(create_app_over(tmp_path)) as http:
        page = http.get("/sweeps/s").text
    assert "from the trials table of the last report" in page
    assert len(trial_links(page)) == 2 and page.count("★ best") == 1


def two_objective_sweep(root: Path) -> Path:
    """A sweep folder with a two-objective study of five trials (no training: the values are given)."""
    folder = root / "m"
    folder.mkdir()
    dump_recipe(validate_recipe({"run": {"name": "m"}, "model": {"name_or_path": "x"}, "sweep": {
        "space": {"train.learning_rate": {"low": 1.0e-4, "high": 1.0e-2}},
        "objective": ["eval.tuned.exact_match", "forgetting.answers.greedy.lost_share"],
        "direction": ["maximize", "minimize"]}}), folder / "sweep.yaml")
    study = optuna.create_study(study_name="m", storage=f"sqlite:///{folder / 'study.db'}",
                                directions=["maximize", "minimize"])
    for rate, values in [(1e-4, (0.2, 0.0)), (1e-3, (0.5, 0.1)), (2e-3, (0.4, 0.3)), (3e-3, (0.7, 0.4)),
                         (5e-3, (0.6, 0.5))]:
        study.add_trial(optuna.trial.create_trial(params={"train.learning_rate": rate}, values=list(values),
                                                  distributions={"train.learning_rate":
                                                                 optuna.distributions.FloatDistribution(1e-4, 1e-2)}))
    return folder


def test_a_two_objective_sweep_draws_its_pareto_front(tmp_path: Path) -> None:
    two_objective_sweep(tmp_path)
    with TestClient(create_app_over(tmp_path)) as http:
        page = http.get("/sweeps/m").text
        points = http.get("/api/sweeps/m/pareto").json()
    assert 'id="pareto-chart"' in page and page.count("★ Pareto front") == 3
    assert points["axes"] == ["eval.tuned.exact_match", "forgetting.answers.greedy.lost_share"]
    assert points["series"] == {"trials": [[0.4, 0.3], [0.6, 0.5]],
                                "Pareto front": [[0.2, 0.0], [0.5, 0.1], [0.7, 0.4]]}
    with live_server(create_app_over(tmp_path), start_timeout=30) as url:
        dom = chromium_dom(f"{url}/sweeps/m", tmp_path / "profile")
    chart = dom[dom.index('id="pareto-chart"'):]
    assert chart.count('data-name="Pareto front"') == 4  # its three points and the line joining them
    assert chart.count('data-name="trials"') == 2 and "forgetting.answers.greedy.lost_share" in chart


def create_app_over(root: Path) -> ASGIApp:
    return create_ui_app(root, shown_root="runs")


def chromium_dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, from headless Chromium (required, as for the browser tests)."""
    browser = next((found for name in ("chromium", "chromium-browser", "google-chrome", "chrome")
                    if (found := shutil.which(name))), None)
    if browser is None:
        pytest.fail("Chromium is not installed: `make test` installs it (Debian: apt-get install -y chromium)")
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout
