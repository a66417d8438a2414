"""The GPU check's steps that are easier in Python than in bash (bench/gpu/check.sh runs them).

    python bench/gpu/gpu_check.py install .whl          # install the wheels whose distribution is missing
    python bench/gpu/gpu_check.py imports [--closure] [--recipes]   # import what the check imports (--closure:
                                # and judge that every distribution it pulls in travels or is there; --recipes: and
                                # validate the GPU tests' recipes)
    python bench/gpu/gpu_check.py parse-only SCRIPT ARGS...   # SCRIPT's argument parser accepts ARGS
    python bench/gpu/gpu_check.py report OUTDIR         # gpu_check.md and gpu_check.json from the parts' results
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# What the check imports: ayar's training, methods, recipes, data and serving, the peers, the tests' runner
CHECK_MODULES = [
    "ayar.cli", "ayar.recipe", "ayar.data.prepare", "ayar.data.synthetic", "ayar.models.load", "ayar.models.scratch",
    "ayar.methods", "ayar.methods.lora", "ayar.methods.qlora", "ayar.train.engine", "ayar.train.trainer",
    "ayar.train.packing", "ayar.train.precision", "ayar.serve.server", "ayar.serve.transformers_engine",
    "trl", "datasets", "peft", "httpx", "pytest",
]
# What the GPU machine imports before anything is installed (its distributions are in gpu_machine.txt)
MACHINE_MODULES = ["torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "sentencepiece",
                   "tensorboard", "typer", "rich", "pyarrow", "pandas", "fsspec", "xxhash"]


def normalized(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def listed(file: str) -> set[str]:
    lines = (HERE / file).read_text().splitlines()
    return {normalized(x) for x in lines if x.strip() and not x.startswith("#")}


def wheel_distribution(path: Path) -> str:
    return normalized(path.name.split("-")[0])


def installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def install(folder: Path) -> int:
    """pip-install (offline, without dependencies) the wheels whose distribution this Python lacks.

    What the machine already has stays as it is: its torch stack was built against its own versions.
    """
    wheels = sorted(folder.glob("*.whl"))
    missing = [w for w in wheels if not installed(wheel_distribution(w))]
    kept = sorted({wheel_distribution(w) for w in wheels} - {wheel_distribution(w) for w in missing})
    print(f"already installed, kept: {', '.join(kept) or 'none'}")
    print(f"installing: {', '.join(w.name for w in missing) or 'nothing'}")
    if not missing:
        return 0
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check",
               *map(str, missing)]
    return subprocess.run(command, check=False).returncode


def import_all(modules: list[str]) -> list[str]:
    """Import each module; the failures, one line each."""
    failures = []
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any import error is a finding to report, not a crash of the check
            failures.append(f"{module}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return failures


def imported_distributions(modules: set[str]) -> set[str]:
    """The distributions that provide these top-level modules (the standard library's have none)."""
    providers = importlib.metadata.packages_distributions()
    return {normalized(d) for m in modules for d in providers.get(m, [])}


def closure_gaps(wheel_folder: Path) -> list[str]:
    """Distributions the check imports that neither the GPU machine has nor a wheel brings; wheels.txt entries
    without a wheel in the folder (when it exists)."""
    import_all(MACHINE_MODULES)
    machine_top = {n.split(".")[0] for n in sys.modules}
    import_all(CHECK_MODULES)
    pulled = imported_distributions({n.split(".")[0] for n in sys.modules} - machine_top)
    travelling, machine = listed("wheels.txt"), listed("gpu_machine.txt")
    gaps = [f"{d}: imported by the check, neither in gpu_machine.txt nor in wheels.txt"
            for d in sorted(pulled - travelling - machine - {"ayar"})]
    if wheel_folder.is_dir():
        have = {wheel_distribution(w) for w in wheel_folder.glob("*.whl")}
        gaps += [f"{d}: in wheels.txt but no wheel in {wheel_folder.name}/ (run bench/gpu/prepare.sh)"
                 for d in sorted(travelling - have)]
    return gaps


def imports(closure: bool, wheel_folder: Path, with_recipes: bool) -> int:
    failures = import_all(CHECK_MODULES)
    for line in failures:
        print(f"import failed: {line}")
    gaps = closure_gaps(wheel_folder) if closure and not failures else []
    for line in gaps:
        print(f"not travelling: {line}")
    import transformers

    print(f"{len(CHECK_MODULES) - len(failures)} of {len(CHECK_MODULES)} modules import "
          f"(transformers {transformers.__version__})")
    if failures or gaps:
        return 1
    return recipes() if with_recipes else 0


class ParsedArguments(Exception):
    """Raised once a script's parser accepted its arguments: nothing more of the script runs."""


def parse_only(script: Path, arguments: list[str]) -> int:
    """Run ``script`` with ``arguments`` until its argparse parser returns; 0 if it accepted them."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> argparse.Namespace:
        original(self, *args, **kwargs)  # exits with status 2 on a wrong argument
        raise ParsedArguments

    argparse.ArgumentParser.parse_args = parse_then_stop
    sys.argv = [str(script), *arguments]
    sys.path.insert(0, str(script.parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except ParsedArguments:
        print(f"{script.name}: arguments accepted")
        return 0
    finally:
        argparse.ArgumentParser.parse_args = original
    print(f"{script.name}: its parser never ran")
    return 1


def recipes() -> int:
    """The recipes the GPU tests train (their overrides on ayar's defaults) load and validate."""
    sys.path[:0] = [str(ROOT / "tests" / "unit" / "train"), str(ROOT / "tests")]
    from test_gpu_training import GPU_RECIPES

    from ayar.recipe import load_recipe

    for name, overrides in GPU_RECIPES.items():
        recipe = load_recipe(None, [f"model.name_or_path={ROOT}", "run.output_dir=/tmp", *overrides])
        print(f"recipe {name}: valid ({recipe.method.name}, precision {recipe.train.precision}, "
              f"batch {recipe.train.batch_size} x {recipe.train.grad_accum})")
    print(f"{len(CHECK_MODULES)} modules import; {len(GPU_RECIPES)} GPU test recipes valid")
    return 0


# ---------------------------------------------------------------- the report


def read_parts(out: Path) -> list[dict[str, Any]]:
    parts = []
    for line in (out / "parts.tsv").read_text().splitlines():
        name, status, seconds, detail = (line.split("\t") + [""] * 4)[:4]
        parts.append({"part": name, "status": status, "seconds": float(seconds or 0), "detail": detail})
    return parts


def junit_counts(path: Path) -> dict[str, int] | None:
    """Passed/failed/skipped/error counts of a pytest JUnit XML file."""
    if not path.is_file():
        return None
    import xml.etree.ElementTree as ET

    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def train_rows(bench: dict | None) -> list[str]:
    if not bench:
        return []
    lines = ["| system | method | real tok/s | s/step | peak GPU MB | held-out loss | MFU |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in bench["rows"]:
        if "error" in r:
            lines.append(f"| {r['system']} | {r['method']} | error: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['system']} | {r['method']} | {r['real_tokens_per_s']:,.0f} | {r['s_per_step']:.3f} "
                     f"| {r.get('peak_gpu_mb', float('nan')):,.0f} | {r['eval_loss']:.4f} | {100 * r['mfu']:.1f}% |")
    peak = bench["matmul_peak_gflops"]
    lines.append(f"\nMatmul peak measured: bf16 {peak['bfloat16']:,.0f}, fp32 {peak['float32']:,.0f} GFLOP/s.")
    return lines


def report(out: Path) -> int:
    parts = read_parts(out)
    figures = {"device": (out / "device.txt").read_text().strip() if (out / "device.txt").is_file() else None,
               "parts": parts, "gpu_tests": junit_counts(out / "gpu_tests.xml"),
               "qlora_tests": junit_counts(out / "qlora_tests.xml"),
               "train_bench": read_json(out / "train_bench_gpu.json"), "serve_bench": read_json(out / "serve_bench.json")}
    (out / "gpu_check.json").write_text(json.dumps(figures, indent=1))
    lines = ["# GPU check", "", f"Device: {figures['device'] or 'unknown'}", "",
             "| part | status | seconds | detail |", "|---|---|---:|---|",
             *[f"| {p['part']} | {p['status']} | {p['seconds']:.0f} | {p['detail']} |" for p in parts]]
    for name in ("gpu_tests", "qlora_tests"):
        if figures[name]:
            lines.append(f"\n{name.replace('_', ' ')}: {figures[name]}")
    if figures["train_bench"]:
        lines += ["", "## Training (SmolLM2's shape, random weights, bf16, SDPA)", "", *train_rows(figures["train_bench"])]
    if figures["serve_bench"]:
        lines += ["", "## Serving (transformers engine, tiny scratch model)", "", "```",
                  json.dumps(figures["serve_bench"], indent=1), "```"]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install").add_argument("folder", type=Path)
    check = sub.add_parser("imports")
    check.add_argument("--closure", action="store_true")
    check.add_argument("--recipes", action="store_true")
    check.add_argument("--wheels", type=Path, default=ROOT / ".whl")
    parse = sub.add_parser("parse-only")
    parse.add_argument("script", type=Path)
    parse.add_argument("arguments", nargs=argparse.REMAINDER)
    sub.add_parser("report").add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "install":
        return install(args.folder)
    if args.command == "imports":
        return imports(args.closure, args.wheels, args.recipes)
    if args.command == "parse-only":
        return parse_only(args.script, args.arguments)
    return report(args.out)


if __name__ == "__main__":
    sys.exit(main())
