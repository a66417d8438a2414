"""A sweep on a tiny model: trials as run folders, failures recorded, validation only, best.yaml re-runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from sweep_helpers import sweep_sets

from ayar.data.prepared import PreparedData
from ayar.pipeline import stage_prepare, stage_train
from ayar.recipe import load_recipe
from ayar.run_folder import RunFolder
from ayar.sweep import SweepOptions, run_sweep
from ayar.sweep import trial as trial_module
from ayar.sweep.objective import validation_losses


def study_of(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{folder / 'study.db'}")


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe(None, sweep_sets(tiny_model_dir, tmp_path, "sweep.sampler=grid",
                                          "sweep.space={train.scheduler: [linear, bogus, cosine]}"))
    result = run_sweep(recipe, SweepOptions(threads=1))
    trials = {t.params["train.scheduler"]: t for t in study_of(result.folder).get_trials()}
    assert trials["bogus"].state == optuna.trial.TrialState.FAIL
    assert "UsageError" in trials["bogus"].user_attrs["failure"] and "train.scheduler" in \
        trials["bogus"].user_attrs["failure"]
    done = [trials[s] for s in ("linear", "cosine")]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    for t in done:  # each trial an ordinary run folder, its objective its last validation loss
        run = RunFolder(result.folder / "trials" / str(t.number))
        assert run.has_model() and run.read_recipe().train.scheduler == t.params["train.scheduler"]
        assert t.values == [pytest.approx(validation_losses(run)[-1][1])]
        assert [step for step, _ in validation_losses(run)] == [2, 4]  # the pruner's intermediate steps
    rows = list(csv.DictReader((result.folder / "trials.csv").open(encoding="utf-8")))
    assert [r["state"] for r in rows].count("fail") == 1 and len(rows) == 3
    assert "bogus" in (result.folder / "trials.md").read_text(encoding="utf-8")
    report = (result.folder / "report.md").read_text(encoding="utf-8")
    assert "Best trial" in report and "![history.png](history.png)" in report
    assert (result.folder / "history.png").stat().st_size > 1000


def test_the_best_recipe_reruns_to_the_same_validation_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe(None, sweep_sets(tiny_model_dir, tmp_path, "sweep.n_trials=2"))
    result = run_sweep(recipe, SweepOptions(threads=1))
    [(number, [best_loss])] = result.best
    best = load_recipe(result.folder / "best.yaml")
    assert best.run.name == "s-best" and best.run.output_dir == tmp_path and best.eval.split == "test"
    assert best.train.learning_rate == study_of(result.folder).trials[number].params["train.learning_rate"]
    stage_prepare(best)
    stage_train(best)
    assert validation_losses(RunFolder(best.run_dir))[-1][1] == pytest.approx(best_loss, rel=1e-5)


def test_the_objective_never_reads_the_test_split(tiny_model_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    read_split = PreparedData.read_split
    monkeypatch.setattr(PreparedData, "read_split", lambda self, split: reads.append(split) or read_split(self, split))
    run_trial = trial_module.run_trial

    def marked(trial: optuna.Trial, plan: trial_module.TrialPlan) -> list[float]:
        reads.append("<trial>")
        try:
            return run_trial(trial, plan)
        finally:
            reads.append("</trial>")

    monkeypatch.setattr(trial_module, "run_trial", marked)
    monkeypatch.setattr("ayar.sweep.run.run_trial", marked)
    recipe = load_recipe(None, sweep_sets(
        tiny_model_dir, tmp_path, "sweep.n_trials=1", "sweep.test_best=true", "sweep.objective=eval.tuned.chrf",
        "sweep.direction=maximize", "eval.compare_base=false", "eval.risks.enabled=false", "eval.max_new_tokens=4",
        "eval.num_samples=2"))
    result = run_sweep(recipe, SweepOptions(threads=1))
    inside = reads[reads.index("<trial>"):reads.index("</trial>")]
    assert "validation" in inside and "test" not in inside
    assert "test" in reads[reads.index("</trial>"):]  # the best trial, on the test split, after the search
    metrics = RunFolder(result.folder / "trials" / "0").read_metrics()
    assert metrics["eval"]["split"]["name"] == "validation"
    assert result.best[0][1] == [pytest.approx(metrics["eval"]["tuned"]["chrf"])]
    test = json.loads((result.folder / "best_test.json").read_text(encoding="utf-8"))
    assert test["trial"] == 0 and test["eval"]["split"]["name"] == "test"
    assert "Test split, trial 0" in (result.folder / "report.md").read_text(encoding="utf-8")


def test_two_objectives_give_a_pareto_front(tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe(None, sweep_sets(
        tiny_model_dir, tmp_path, "sweep.n_trials=2", "sweep.objective=[validation.loss, eval.tuned.chrf]",
        "sweep.direction=[minimize, maximize]", "eval.compare_base=false", "eval.risks.enabled=false",
        "eval.max_new_tokens=4", "eval.num_samples=2"))
    result = run_sweep(recipe, SweepOptions(threads=1))
    study = study_of(result.folder)
    front = {t.number for t in study.best_trials}
    assert {number for number, _ in result.best} == front and all(len(v) == 2 for _, v in result.best)
    assert {p.name for p in (result.folder / "pareto").iterdir()} == {f"trial-{n}.yaml" for n in front}
    assert load_recipe(result.folder / "best.yaml").sweep.space == {}  # a plain recipe
    assert (result.folder / "pareto.png").is_file() and (result.folder / "history.png").is_file()


def test_a_trial_past_the_forgetting_gate_counts_but_is_not_the_best(tiny_model_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from ayar.errors import GateError

    real_eval = trial_module.stage_eval

    def gate_fails_on_trial_0(recipe, force: bool = False):  # the tiny model's forgetting is too noisy to fail on cue
        sections = real_eval(recipe, force=force)
        if recipe.run.name == "0":
            RunFolder(recipe.run_dir).update_metrics("forgetting", {"gate": {"passed": False,
                                                                             "reasons": ["tr perplexity +40%"]}})
            raise GateError("forgetting gate failed: tr perplexity +40%")
        return sections

    monkeypatch.setattr(trial_module, "stage_eval", gate_fails_on_trial_0)
    recipe = load_recipe(None, sweep_sets(
        tiny_model_dir, tmp_path, "sweep.n_trials=2", "sweep.objective=eval.tuned.chrf", "sweep.direction=maximize",
        "eval.compare_base=false", "eval.risks.enabled=false", "eval.max_new_tokens=4", "eval.num_samples=2"))
    result = run_sweep(recipe, SweepOptions(threads=1))
    trials = study_of(result.folder).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].user_attrs["gate"] == "failed: tr perplexity +40%" and "gate" not in trials[1].user_attrs
    assert [number for number, _ in result.best] == [1]
    rows = list(csv.DictReader((result.folder / "trials.csv").open(encoding="utf-8")))
    assert [r["gate"] for r in rows] == ["failed: tr perplexity +40%", ""]


def test_a_signal_stops_the_sweep_and_the_stopped_trial_is_not_spent(tiny_model_dir: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ayar.train.faults import EXIT_STOPPED, TrainingStopped

    def stopped(recipe: object, **kwargs: object) -> None:
        raise TrainingStopped("stopped by SIGTERM at step 1; checkpoint written")

    recipe = load_recipe(None, sweep_sets(tiny_model_dir, tmp_path, "sweep.n_trials=2"))
    monkeypatch.setattr(trial_module, "stage_train", stopped)
    with pytest.raises(TrainingStopped, match="sweep stopped .*trial 0.*SIGTERM.*again") as err:
        run_sweep(recipe, SweepOptions(threads=1))
    assert err.value.exit_code == EXIT_STOPPED
    folder = tmp_path / "s"
    [first] = study_of(folder).get_trials()
    assert first.state == optuna.trial.TrialState.FAIL and "failure" not in first.user_attrs

    monkeypatch.undo()  # the same command again: the whole budget is still there
    run_sweep(load_recipe(None, sweep_sets(tiny_model_dir, tmp_path, "sweep.n_trials=2")), SweepOptions(threads=1))
    states = [t.state for t in study_of(folder).get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2


def test_a_queued_trial_is_not_spent_until_a_worker_runs_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe(None, sweep_sets(tiny_model_dir, tmp_path, "sweep.n_trials=1"))
    run_sweep(recipe, SweepOptions(threads=1))
    study_of(tmp_path / "s").enqueue_trial({"train.learning_rate": 1.0e-3})  # e.g. the recipe's own value
    run_sweep(recipe, SweepOptions(trials=2, threads=1))
    trials = study_of(tmp_path / "s").get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert trials[1].params["train.learning_rate"] == 1.0e-3
