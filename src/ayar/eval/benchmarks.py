"""Standard benchmarks through lm-evaluation-harness, on the base and the tuned model (``eval.benchmarks``).

Tasks are lm-eval's by name (its hub-hosted data needs a network, or a local stand-in named in
``local_data``), the path of a local task YAML, or
``ayar_general``: ayar's own forgetting questions written as an lm-eval multiple-choice task, so the same
probe runs offline inside ayar and in a plain ``lm_eval`` command. An adapter is scored through lm-eval's
own hf model with ``peft=`` (the adapter on its base, as peft loads it), a full model by its folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ayar.errors import UsageError
from ayar.eval.forgetting import GENERAL_QUESTIONS, select_questions
from ayar.recipe.eval_config import BenchmarksConfig

PROBE_TASK = "ayar_general"
# The metric a task is judged by, best first: the first one lm-eval reports for it is used.
MAIN_METRICS = ("acc_norm", "acc_bytes", "acc", "exact_match", "f1", "mcc")

_PROBE_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
  - metric: acc_bytes
"""


def write_probe_task(folder: Path, max_questions: int | None = None) -> Path:
    """ayar's multiple-choice forgetting questions as an lm-eval task (YAML and JSONL) in ``folder``.

    The options follow the prompt with no delimiter and are normalised by their length in bytes
    (``acc_bytes``), as ayar's own choice scoring does (``eval.forgetting`` scoring ``choice``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    asked = [q for q in select_questions(max_questions, GENERAL_QUESTIONS) if q.choices]
    rows = [{"id": q.id, "lang": q.lang, "question": q.prompt, "choices": list(q.choices or ()), "answer": 0}
            for q in asked]
    data = folder / f"{PROBE_TASK}.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (folder / f"{PROBE_TASK}.yaml").write_text(_PROBE_YAML.format(name=PROBE_TASK, data=data.resolve()),
                                               encoding="utf-8")
    return folder


def task_names(cfg: BenchmarksConfig, work_dir: Path) -> tuple[list[str], list[str]]:
    """(lm-eval task names, include folders): a local YAML's folder is included and its task named by
    the file's ``task`` key; the built-in probe is written into ``work_dir`` first."""
    names, include = [], []
    for entry in cfg.tasks:
        if entry == PROBE_TASK:
            include.append(str(write_probe_task(work_dir / "tasks", cfg.max_questions)))
            names.append(PROBE_TASK)
        elif entry.endswith((".yaml", ".yml")):
            path = Path(entry)
            if not path.is_file():
                raise UsageError(f"eval.benchmarks.tasks: task file {entry} not found")
            include.append(str(path.resolve().parent))
            names.append(_yaml_task_name(path))
        else:
            names.append(entry)
    return names, include


def _yaml_task_name(path: Path) -> str:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not data.get("task"):
        raise UsageError(f"eval.benchmarks.tasks: {path} has no 'task' name (an lm-eval task YAML)")
    return str(data["task"])


def task_specs(names: list[str], manager: Any, cfg: BenchmarksConfig, folder: Path) -> list[str]:
    """What lm-eval is asked to run: each task's name, or for a task in ``local_data`` the path of a task YAML
    that reads its data from the local stand-in."""
    strays = sorted(set(cfg.local_data) - set(names))
    if strays:
        raise UsageError(f"eval.benchmarks.local_data: {', '.join(strays)} not among eval.benchmarks.tasks")
    return [str(local_task_file(manager.task_index[name], Path(cfg.local_data[name]), folder))
            if name in cfg.local_data else name for name in names]


def local_task_file(entry: Any, data: Path, folder: Path) -> Path:
    """A task YAML in ``folder`` that includes the hub task's own (its prompts and metrics unchanged) and reads
    its dataset from ``data``: a copy of the hub repository keeps the task's config name (its README.md names
    the configs); a plain folder of split files has no configs, so the name and the hub's loading
    arguments go."""
    if entry.kind.name != "TASK" or entry.yaml_path is None:
        raise UsageError(f"eval.benchmarks.local_data: {entry.name} is not a task defined by a YAML file "
                         "(a group or a Python task cannot be pointed at local data)")
    if not data.is_dir():
        raise UsageError(f"eval.benchmarks.local_data: {entry.name}: folder {data} not found")
    lines = [f"include: {json.dumps(str(Path(entry.yaml_path).resolve()))}",
             f"dataset_path: {json.dumps(str(data.resolve()))}"]
    if not (data / "README.md").is_file():
        lines += ["dataset_name: null", "dataset_kwargs: null"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{entry.name}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def model_args(model_dir: Path, base: str | None, adapter: bool) -> dict[str, Any]:
    """lm-eval's hf model arguments: the adapter through ``peft=`` on its base, else the folder itself."""
    if adapter:
        if base is None:
            raise UsageError("eval.benchmarks: an adapter needs its base model to be scored")
        return {"pretrained": base, "peft": str(model_dir), "dtype": "float32", "device": "cpu"}
    return {"pretrained": str(model_dir), "dtype": "float32", "device": "cpu"}


def run_benchmarks(args: dict[str, Any], cfg: BenchmarksConfig, work_dir: Path) -> dict[str, dict[str, Any]]:
    """Each task's main metric with its standard error, for one model: {task: {metric, value, stderr, n}}."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    names, include = task_names(cfg, work_dir)
    manager = TaskManager(include_path=include or None)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise UsageError(f"eval.benchmarks.tasks: unknown lm-eval task(s) {', '.join(unknown)} (a task name "
                         f"lm-eval lists, the path of a task YAML, or {PROBE_TASK})")
    specs = task_specs(names, manager, cfg, work_dir / "local_data")
    results = simple_evaluate(model="hf", model_args=args, tasks=specs, task_manager=manager, limit=cfg.limit,
                              num_fewshot=cfg.num_fewshot, batch_size=cfg.batch_size,
                              apply_chat_template=cfg.apply_chat_template, random_seed=0, numpy_random_seed=0,
                              torch_random_seed=0, fewshot_random_seed=0)
    return {name: main_metric(results["results"][name], results.get("n-samples", {}).get(name, {}))
            for name in names}


def main_metric(figures: dict[str, Any], samples: dict[str, Any]) -> dict[str, Any]:
    """The task's headline figure from lm-eval's result row (keys like ``acc,none`` and ``acc_stderr,none``)."""
    for metric in MAIN_METRICS:
        key = f"{metric},none"
        if key in figures:
            stderr = figures.get(f"{metric}_stderr,none")
            return {"metric": metric, "value": float(figures[key]),
                    "stderr": float(stderr) if isinstance(stderr, int | float) else None,
                    "n": samples.get("effective")}
    raise UsageError(f"eval.benchmarks: no known metric among {sorted(figures)}")


def compare(base: dict[str, dict[str, Any]] | None, tuned: dict[str, dict[str, Any]],
            cfg: BenchmarksConfig) -> dict[str, Any]:
    """Base against tuned per task: the drop of the main metric, and whether it stays within ``max_drop``."""
    out: dict[str, Any] = {"tasks": {}, "reasons": []}
    for name, figures in tuned.items():
        row = {"tuned": figures, "base": (base or {}).get(name)}
        if row["base"] is not None:
            row["drop"] = row["base"]["value"] - figures["value"]
            if cfg.max_drop is not None and row["drop"] > cfg.max_drop:
                out["reasons"].append(f"benchmark {name} {figures['metric']} fell {row['drop']:.3f} "
                                      f"(bound {cfg.max_drop})")
        out["tasks"][name] = row
    out["passed"] = not out["reasons"]
    return out
