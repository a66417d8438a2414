"""Reading run folders for the UI: summary, status, loss curves (live from TensorBoard events), artifacts.

Everything here reads files a run already writes (recipe.yaml, metrics.json, train_history.json, tb/,
data/data_card.json, samples.jsonl, predictions.jsonl); the UI adds no logger of its own.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ayar.run_folder import RunFolder

ACTIVE_SECONDS = 90.0  # a run folder written to this recently, and not evaluated yet, counts as running
SUMMARY_METRICS = ("exact_match", "perplexity", "chrf", "accuracy")


@dataclass
class RunSummary:
    """One row of the runs list."""

    name: str
    path: Path
    task: str = "?"
    method: str = "?"
    base_model: str = "?"
    status: str = "failed"  # running | done | gate_failed | failed
    started: float = 0.0
    updated: float = 0.0
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # metric -> {base, tuned, delta}
    gate: dict[str, Any] | None = None  # the forgetting gate's verdict (see gate_verdict); None without one

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "method": self.method, "base_model": self.base_model,
                "status": self.status, "started": self.started, "updated": self.updated, "metrics": self.metrics,
                "gate": self.gate}


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON file's content, or ``default`` when it is missing or half-written (a run writing it now)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def read_recipe(run_dir: Path) -> dict[str, Any]:
    """The run's resolved recipe as a dict (empty when unreadable)."""
    try:
        data = yaml.safe_load(RunFolder(run_dir).recipe_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and RunFolder(path).recipe_file.is_file()


def list_run_dirs(root: Path) -> list[Path]:
    """Run folders directly under ``root`` (a folder holding recipe.yaml), newest first."""
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if not p.name.startswith(".") and is_run_dir(p)]
    return sorted(runs, key=lambda p: RunFolder(p).recipe_file.stat().st_mtime, reverse=True)


def _latest_mtime(run_dir: Path) -> float:
    """Newest modification time among the files a running stage touches."""
    run = RunFolder(run_dir)
    paths = [run.recipe_file, run.metrics_file, run.data / "data_card.json", run.train_history,
             *run.tb.glob("events.*"), *run.pretrain.glob("*"), *run.checkpoints.glob("*")]
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def _started(run_dir: Path) -> float:
    """When the run began: the earliest of its stage outputs (recipe.yaml is rewritten by every stage)."""
    run = RunFolder(run_dir)
    paths = [run.recipe_file, run.pretrain, run.data / "data_card.json", run.tb]
    return min(p.stat().st_mtime for p in paths if p.exists())


STAGE_COMMANDS = {"run", "pretrain", "prepare", "train", "eval"}


def _stage_run_dir(args: list[str], cwd: Path) -> Path | None:
    """The run folder an ``ayar <stage> RECIPE [--set ...]`` command line works in, else None."""
    from ayar.recipe import apply_overrides

    starts = [i + 1 for i, a in enumerate(args) if Path(a).name == "ayar" or (a == "ayar.cli" and i
                                                                             and args[i - 1] == "-m")]
    rest = args[starts[0]:] if starts else []
    if not rest or rest[0] not in STAGE_COMMANDS:
        return None
    recipe, overrides, options = None, [], iter(rest[1:])
    for arg in options:
        if arg in ("--set", "-s"):
            overrides.append(next(options, ""))
        elif arg.startswith("--set="):
            overrides.append(arg.removeprefix("--set="))
        elif not arg.startswith("-") and recipe is None:
            recipe = arg
    if recipe is None:
        return None
    try:
        data = yaml.safe_load((cwd / recipe).read_text(encoding="utf-8")) or {}
        run = apply_overrides(data, overrides).get("run") or {}
    except Exception:
        return None
    return (cwd / str(run.get("output_dir", "runs")) / str(run.get("name", "run"))).resolve()


def active_run_dirs() -> set[Path]:
    """Run folders that an `ayar` stage command on this machine works in right now (read from /proc on
    Linux; elsewhere empty, and the status falls back on how recently the folder was written)."""
    found: set[Path] = set()
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            if b"ayar" not in raw:
                continue
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        folder = _stage_run_dir([a.decode("utf-8", "replace") for a in raw.split(b"\0") if a], cwd)
        if folder is not None:
            found.add(folder)
    return found


def gate_verdict(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The forgetting gate's verdict in metrics.json: ``{passed, reasons, levers}``; None for a run without
    one (the gate off, or an older run whose forgetting section has no gate)."""
    from ayar.eval.report import section

    forgetting = section(metrics, "forgetting") if isinstance(metrics, dict) else None
    gate = forgetting.get("gate") if isinstance(forgetting, dict) else None
    if not isinstance(gate, dict) or not isinstance(gate.get("passed"), bool):
        return None
    return {"passed": gate["passed"], "reasons": [str(r) for r in gate.get("reasons") or []],
            "levers": [str(lever) for lever in gate.get("levers") or []]}


def _evaluated(run_dir: Path, metrics: dict[str, Any]) -> bool:
    """metrics.json holds an evaluation written after the recipe was (every stage rewrites recipe.yaml)."""
    path = RunFolder(run_dir).metrics_file
    return "eval" in metrics and path.stat().st_mtime >= RunFolder(run_dir).recipe_file.stat().st_mtime - 1


def run_status(run_dir: Path, job_state: str | None = None, active: set[Path] | None = None) -> str:
    """running, done, gate_failed or failed.

    ``job_state`` is what the UI knows of a run it started itself (running / done / failed) and wins;
    then a live `ayar` stage process working in the folder (``active``, see active_run_dirs) means running.
    A run evaluated after the recipe was last written whose forgetting gate failed is gate_failed (the CLI
    exits 4 on it, so its job reads failed). Otherwise: evaluated means done; written to lately means
    running; anything else stopped before its evaluation (an error, Ctrl-C or a crash): failed.
    """
    if job_state == "running" or (job_state is None and active is not None and run_dir.resolve() in active):
        return "running"
    metrics = read_json(RunFolder(run_dir).metrics_file, {})
    metrics = metrics if isinstance(metrics, dict) else {}
    evaluated = _evaluated(run_dir, metrics)
    if evaluated and (gate_verdict(metrics) or {}).get("passed") is False:
        return "gate_failed"
    if job_state is not None:
        return job_state
    if evaluated:
        return "done"
    return "running" if time.time() - _latest_mtime(run_dir) < ACTIVE_SECONDS else "failed"


def model_blocks(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-model figure blocks of metrics.json's eval section (base, tuned)."""
    from ayar.eval.report import model_blocks as blocks

    return blocks(metrics.get("eval") or {})


def key_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """The headline figures per model and their tuned-minus-base delta."""
    blocks = model_blocks(metrics)
    base, tuned = blocks.get("base", {}), blocks.get("tuned", {})
    out: dict[str, dict[str, float | None]] = {}
    for name in SUMMARY_METRICS:
        b, t = base.get(name), tuned.get(name)
        if b is None and t is None:
            continue
        delta = t - b if isinstance(t, int | float) and isinstance(b, int | float) else None
        out[name] = {"base": b, "tuned": t, "delta": delta}
    return out


def summarize(run_dir: Path, job_state: str | None = None, active: set[Path] | None = None) -> RunSummary:
    """The runs-list row of one run folder."""
    recipe = read_recipe(run_dir)
    metrics = read_json(RunFolder(run_dir).metrics_file, {}) or {}
    model = (recipe.get("model") or {}).get("name_or_path")
    pretrained = (recipe.get("pretrain") or {}).get("enabled")
    return RunSummary(
        name=run_dir.name, path=run_dir, task=str(recipe.get("task", "?")),
        method=str((recipe.get("method") or {}).get("name", "?")),
        base_model=str(model) if model else ("pretrained from scratch" if pretrained else "?"),
        status=run_status(run_dir, job_state, active), started=_started(run_dir),
        updated=_latest_mtime(run_dir), metrics=key_metrics(metrics), gate=gate_verdict(metrics),
    )


# ---------------------------------------------------------------- loss curves


def _tb_points(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of one TensorBoard event file, by tag."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    series: dict[str, list[tuple[int, float]]] = {}
    try:
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = float(value.simple_value)
                elif value.HasField("tensor"):
                    array = tensor_util.make_ndarray(value.tensor)
                    if array.size != 1 or array.dtype.kind not in "fiu":
                        continue
                    number = float(array.reshape(-1)[0])
                else:
                    continue
                series.setdefault(value.tag, []).append((int(event.step), number))
    except Exception:
        pass
    return series


_TAGS = {"train/loss": "loss", "eval/loss": "eval_loss"}


def _from_tensorboard(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Loss series from the run's TensorBoard events; a resumed run's later file continues the earlier ones."""
    files = sorted(tb_dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    merged: dict[str, dict[int, float]] = {}
    for path in files:
        points = _tb_points(path)
        first = min((s for tag in _TAGS for s, _ in points.get(tag, [])), default=None)
        if first is not None and first <= 1:  # a fresh start (overwrite): forget older files
            merged = {}
        for tag, name in _TAGS.items():
            for step, value in points.get(tag, []):
                merged.setdefault(name, {})[step] = value
    return {name: sorted(points.items()) for name, points in merged.items()}


def loss_series(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Training and validation loss by step: TensorBoard events while training (flushed at every log),
    else train_history.json or the latest checkpoint's trainer_state.json."""
    tb = RunFolder(run_dir).tb
    series = _from_tensorboard(tb) if tb.is_dir() else {}
    if series:
        return series
    # without TensorBoard (train.report_to), the newest of the final history and the checkpoints' Trainer state
    states = sorted(run_dir.glob("checkpoints/*/trainer_state.json"), key=lambda p: p.stat().st_mtime)
    final = RunFolder(run_dir).train_history
    if states and (not final.is_file() or states[-1].stat().st_mtime > final.stat().st_mtime):
        history = (read_json(states[-1], {}) or {}).get("log_history", [])
    else:
        history = read_json(final, []) or []
    out: dict[str, list[tuple[int, float]]] = {}
    for record in history:
        for key in ("loss", "eval_loss"):
            if isinstance(record.get(key), int | float):
                out.setdefault(key, []).append((int(record["step"]), float(record[key])))
    return out


# ---------------------------------------------------------------- other files


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Records of a JSONL file (the first ``limit``), skipping a half-written last line."""
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    with path.open(encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


@dataclass
class Artifact:
    """A file or folder a run produced, and the commands that use it."""

    kind: str
    path: Path
    commands: list[str]


def artifacts(run_dir: Path, shown_as: str) -> list[Artifact]:
    """The run's model, base, exports and logs, each with the ayar (or other) commands that take it.

    ``shown_as`` is how the run folder is written in the commands (the path the user gave --runs with).
    """
    out: list[Artifact] = []
    run = RunFolder(run_dir)
    model = run.model
    if (model / "adapter_config.json").is_file():
        out.append(Artifact("LoRA adapter", model, [
            f"ayar generate {shown_as} -p \"...\"", f"ayar serve {shown_as}",
            f"ayar export {shown_as} --out {shown_as}/export-hf",
            f"ayar export {shown_as} --format adapter --out {shown_as}/export-adapter",
            f"ayar export {shown_as} --format gguf --out {shown_as}/model.gguf",
            "ayar export --help  # every export format (ONNX, Triton, ...)"]))
    elif (model / "config.json").is_file():
        out.append(Artifact("model", model, [
            f"ayar generate {shown_as} -p \"...\"", f"ayar serve {shown_as}",
            f"ayar export {shown_as} --format gguf --out {shown_as}/model.gguf",
            "ayar export --help  # every export format (ONNX, Triton, ...)"]))
    if (run.pretrain_model / "config.json").is_file():
        out.append(Artifact("pretrained base model", run.pretrain_model,
                            [f"ayar generate {shown_as}/pretrain/model -p \"...\""]))
    for gguf in sorted(run_dir.glob("*.gguf")):
        out.append(Artifact("GGUF export", gguf, [f"llama-cli -m {shown_as}/{gguf.name}"]))
    for folder in sorted(p for p in run_dir.glob("export*") if (p / "config.json").is_file()):
        out.append(Artifact("exported model", folder, [f"ayar serve {shown_as}/{folder.name}"]))
    if (run.data / "train.jsonl").is_file():
        out.append(Artifact("prepared data", run.data,
                            [f"ayar monitor drift --reference {shown_as}/data --db requests.sqlite"]))
    if run.tb.is_dir():
        out.append(Artifact("TensorBoard events", run.tb, [f"tensorboard --logdir {shown_as}/tb"]))
    if run.checkpoints.is_dir() and any(run.checkpoints.iterdir()):
        out.append(Artifact("checkpoints", run.checkpoints,
                            [f"ayar train {shown_as}/recipe.yaml --resume"]))
    for name in ("report.html", "report.md"):
        if (run_dir / name).is_file():
            out.append(Artifact("report", run_dir / name, []))
    return out


def shared_examples(runs: list[Path], limit: int = 50) -> tuple[list[str], list[dict[str, Any]]]:
    """Per-example tuned outputs of several runs on the test examples they share (same id and prompt)."""
    tables = []
    for run_dir in runs:
        rows = read_jsonl(RunFolder(run_dir).predictions)
        tables.append({(r.get("id"), r.get("prompt")): r for r in rows})
    if len(tables) < 2:
        return [], []
    common = [key for key in tables[0] if all(key in t for t in tables[1:])]
    out = []
    for key in common[:limit]:
        first = tables[0][key]
        out.append({"id": key[0], "prompt": first.get("prompt"), "reference": first.get("reference"),
                    "outputs": [t[key].get("tuned_output") for t in tables]})
    return [r.name for r in runs], out
