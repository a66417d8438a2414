"""The task registry: every task is one module holding its whole definition, every part it names resolves
in the layer that runs it, and a new task registered from outside (here, a toy task in a fixture) runs
through every stage without an edit elsewhere."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import typing
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

import pytest
import transformers
from peft import TaskType

import ayar.tasks
from ayar.errors import UsageError
from ayar.eval import tasks as eval_tasks
from ayar.methods import available_methods
from ayar.methods.lora import peft_task_type
from ayar.recipe import DataFormat, Recipe, load_recipe
from ayar.tasks import PARTS, TaskSpec, get_task, register_task, task_names, unregister_task
from ayar.train import tasks as train_tasks

TASKS = task_names()  # listed from the registry, never by hand
SRC = Path(__file__).resolve().parents[3] / "src" / "ayar"


def test_the_recipe_accepts_exactly_the_registered_tasks() -> None:
    assert {"causal_lm", "classification", "seq2seq"} <= set(TASKS)
    assert Recipe.model_json_schema()["properties"]["task"]["enum"] == list(TASKS)  # the web form's choices
    for name in TASKS:
        assert load_recipe(None, ["pretrain.enabled=true", f"task={name}"]).task == name
    with pytest.raises(UsageError, match=r"recipe key 'task': unknown task 'seq2sq' \(did you mean 'seq2seq'"):
        load_recipe(None, ["pretrain.enabled=true", "task=seq2sq"])


@pytest.mark.parametrize("name", TASKS)
def test_every_task_is_complete_in_every_layer(name: str) -> None:
    spec = get_task(name)
    assert issubclass(getattr(transformers, spec.auto_class), transformers.models.auto.auto_factory._BaseAutoModelClass)
    assert peft_task_type(name) is TaskType[spec.peft_task_type]
    assert set(spec.formats) <= set(typing.get_args(DataFormat))
    for part, layer in PARTS.items():
        named = getattr(spec, part)
        assert isinstance(named, str), f"{name}.{part}: a built-in task names its code, it does not import it"
        module, _, function = named.partition(":")
        assert module.startswith(f"ayar.{layer}."), f"{name}.{part} = {named}: not code of the {layer} layer"
        assert spec.part(part) is getattr(importlib.import_module(module), function)


def test_a_task_without_every_part_cannot_be_declared() -> None:
    complete = {part: "ayar.train.tasks:encode_classification" for part in PARTS}
    for missing in PARTS:
        parts = {k: v for k, v in complete.items() if k != missing}
        with pytest.raises(TypeError, match=f"'{missing}'"):
            TaskSpec("partial", "A task missing a part.", "AutoModelForSequenceClassification", "SEQ_CLS",
                     ("classification",), generative=False, **parts)


def test_a_part_naming_missing_code_fails_with_the_task_and_part() -> None:
    spec = replace(get_task("seq2seq"), name="typo", prompt="ayar.eval.tasks:sorce_prompt")
    with pytest.raises(ValueError, match="task 'typo' part 'prompt' names 'ayar.eval.tasks:sorce_prompt'"):
        spec.part("prompt")
    with pytest.raises(ValueError, match="name it as 'module:function'"):
        replace(spec, prompt="ayar.eval.tasks.source_prompt").part("prompt")
    with pytest.raises(ValueError, match="'tokenizer' is not a task part; parts: encode, collator"):
        spec.part("tokenizer")


def test_each_module_of_the_package_is_the_task_of_its_name() -> None:
    """One file per task: adding the file is what registers it (the package imports every module)."""
    modules = {m.name for m in pkgutil.iter_modules(ayar.tasks.__path__)} - {"registry"}
    assert modules == set(TASKS)
    for name in modules:
        assert get_task(name) in vars(importlib.import_module(f"ayar.tasks.{name}")).values()


def test_the_task_package_imports_no_ml_library_and_no_upper_layer() -> None:
    """The recipe imports the registry at the bottom of every command; the parts it names load on use."""
    code = ("import sys, ayar.tasks; ayar.tasks.get_task('causal_lm'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft', 'datasets') "
            "or m.startswith(('ayar.train', 'ayar.eval', 'ayar.data', 'ayar.models'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_the_facts_are_consistent() -> None:
    for name in TASKS:
        spec = get_task(name)
        assert not (spec.label_map and spec.generative), name  # a label, or generated text
        assert not (spec.next_token and not spec.generative), name


def test_methods_support_every_task_unless_they_narrow_it() -> None:
    full = available_methods()["full"]
    assert set(full.supported_tasks()) == set(TASKS)


def test_an_unknown_task_names_the_closest() -> None:
    with pytest.raises(UsageError, match="did you mean 'seq2seq'"):
        get_task("seq2sq")


def test_no_module_outside_the_registrations_names_a_task() -> None:
    """Stages read a task's facts; only the registrations (and the methods' own task lists) name tasks."""
    registrations = {"train/tasks.py", "eval/tasks.py"}
    offenders = []
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC)
        if str(relative) in registrations or relative.parts[0] == "tasks":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(f"task {op} " in line for op in ("==", "!=")) or "task in (" in line or "task not in (" in line:
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.fixture()
def toy_task() -> Iterator[dict[str, int]]:
    """A task declared from outside ayar in one definition: its facts and its own functions; nothing else."""
    calls = {"encode": 0, "evaluate": 0}

    def encode(record: dict, tokenizer: object, recipe: Recipe, labels: object) -> dict:
        calls["encode"] += 1
        return train_tasks.encode_classification(record, tokenizer, recipe, labels)

    def evaluate(*args: object) -> dict:
        calls["evaluate"] += 1
        return eval_tasks.evaluate_classification(*args)

    toy = TaskSpec("toy_topic", "A toy label-per-text task registered by a test.", "AutoModelForSequenceClassification",
                   "SEQ_CLS", ("classification",), generative=False, label_map=True,
                   encode=encode, collator=train_tasks.classification_collator, evaluate=evaluate,
                   prompt=lambda record, recipe: "toy: " + str(record["text"]))
    register_task(toy)
    try:
        yield calls
    finally:
        unregister_task(toy.name)


def test_a_new_task_runs_every_stage_without_an_edit_elsewhere(toy_task: dict[str, int], tiny_model_dir: Path,
                                                               tmp_path: Path) -> None:
    from ayar.pipeline import run_all

    recipe = load_recipe(None, [
        "task=toy_topic", f"model.name_or_path={tiny_model_dir}", f"run.output_dir={tmp_path}", "run.name=toy",
        "data.format=classification", "data.max_length=32",
        "data.synthetic={num_records: 60, languages: [en], tasks: [topic]}", "method.name=full",
        "train.max_steps=2", "train.batch_size=4", "train.precision=fp32", "train.logging_steps=1",
        "eval.compare_base=true"])
    metrics = run_all(recipe)
    run = tmp_path / "toy"
    assert toy_task["encode"] > 0 and toy_task["evaluate"] == 1  # the toy's own behaviour, found by name
    model_config = json.loads((run / "model" / "config.json").read_text())
    assert model_config["architectures"] == ["LlamaForSequenceClassification"]  # the toy's Auto class
    train_labels = {json.loads(line)["label"] for line in (run / "data" / "train.jsonl").read_text().splitlines()}
    assert set(model_config["id2label"].values()) == train_labels  # a label map from the training split
    figures = metrics["eval"]
    assert "base" not in figures and 0.0 <= figures["tuned"]["accuracy"] <= 1.0  # no untrained-head base figures
    assert "skipped" in figures["risks"]["tuned"]  # not generative: no probe reads its answers
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(r["prompt"].startswith("toy: ") for r in rows)  # the toy's own prompt
    assert {f.name for f in fields(TaskSpec)} >= {"generative", "label_map", "chat", "next_token"}
