"""Pruning stops a bad trial early; two `ayar sweep` processes share one SQLite study; each worker takes its
share of the machine's cores."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from sweep_helpers import sweep_sets

from ayar.recipe import load_recipe
from ayar.run_folder import RunFolder
from ayar.sweep import SweepOptions, run_sweep
from ayar.sweep.objective import validation_losses

SRC = Path(__file__).resolve().parents[3] / "src"


def test_the_median_pruner_stops_a_bad_trial_early(tiny_model_dir: Path, tmp_path: Path) -> None:
    def sweep(trials: int, low: float, high: float) -> optuna.Study:
        space = f"sweep.space={{train.learning_rate: {{low: {low}, high: {high}, log: true}}}}"
        recipe = load_recipe(None, sweep_sets(tiny_model_dir, tmp_path, space, "sweep.pruner=median",
                                              f"sweep.n_trials={trials}", "train.learning_rate=1.0e-2"))
        result = run_sweep(recipe, SweepOptions(threads=1))
        return optuna.load_study(study_name="s", storage=result.storage)

    sweep(2, 5.0e-3, 1.0e-2)  # two learning trials: the median to beat at each validation pass
    trials = sweep(3, 1.0e-8, 2.0e-8).trials  # the same study, continued, with a rate too small to learn
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    bad = trials[2]
    assert bad.user_attrs["steps"] == 2 and bad.last_step == 2  # of 4: stopped at the first validation pass
    assert [step for step, _ in validation_losses(RunFolder(Path(bad.user_attrs["run_dir"])))] == [2]
    assert bad.intermediate_values[2] > max(t.intermediate_values[2] for t in trials[:2])


def test_two_workers_share_one_sqlite_study(tiny_model_dir: Path, tmp_path: Path) -> None:
    sets = [arg for s in sweep_sets(tiny_model_dir, tmp_path, "sweep.n_trials=4") for arg in ("--set", s)]
    (tmp_path / "recipe.yaml").write_text("{}\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "ayar.cli", "sweep", str(tmp_path / "recipe.yaml"), "--threads", "1", *sets]
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}").trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # distinct numbers, none lost, none extra
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes ran trials
    assert all(RunFolder(tmp_path / "s" / "trials" / str(n)).has_model() for n in range(4))
    assert all("best trial" in out for out in outputs)


def test_a_journal_file_holds_the_study_and_a_rerun_continues_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = tmp_path / "shared" / "study.log"
    for trials in (1, 1, 2):  # the second run finds the study full and runs nothing
        recipe = load_recipe(None, sweep_sets(tiny_model_dir, tmp_path, f"sweep.n_trials={trials}"))
        result = run_sweep(recipe, SweepOptions(storage=f"journal:{journal}", threads=1))
        assert result.storage == f"journal:{journal}"
    study = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    assert not (tmp_path / "s" / "study.db").exists()


def test_each_worker_takes_its_share_of_the_cores(tiny_model_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from ayar.sweep import workers

    monkeypatch.setattr(workers, "registry", lambda: tmp_path / "workers")
    monkeypatch.setattr(workers, "machine_cores", lambda: 4)
    (tmp_path / "workers").mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # a second live worker
    try:
        (tmp_path / "workers" / str(other.pid)).touch()
        (tmp_path / "workers" / "999999999").touch()  # a killed worker's file: no such process
        assert workers.live_workers() == 1 and workers.share_of_cores() == 4  # this test is not a worker yet
        assert not (tmp_path / "workers" / "999999999").exists()
        with workers.registered_worker():
            assert workers.live_workers() == 2
            assert workers.share_of_cores() == 2 and workers.share_of_cores(cap=1) == 1
        recipe = load_recipe(None, sweep_sets(tiny_model_dir, tmp_path, "sweep.n_trials=1"))
        result = run_sweep(recipe)  # no --threads: the cores divided by the workers on this machine
    finally:
        other.kill()
        other.wait()
    [trial] = optuna.load_study(study_name="s", storage=result.storage).trials
    assert trial.user_attrs["threads"] == 2
    assert RunFolder(Path(trial.user_attrs["run_dir"])).read_recipe().train.num_threads == 2
    assert [row["threads"] for row in csv.DictReader((result.folder / "trials.csv").open(encoding="utf-8"))] == ["2"]
    assert sorted(p.name for p in (tmp_path / "workers").iterdir()) == [str(other.pid)]  # its own file removed
