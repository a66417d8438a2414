"""The `ayar` command line: one thin function per subcommand; each calls one stage function."""

from __future__ import annotations

import inspect
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from ayar.errors import AyarError, UsageError
from ayar.recipe import DataFormat, ExportFormat, GgufDtype  # the schema's allowed values, for help texts

app = typer.Typer(
    name="ayar",
    help="ince ayar: from raw data to a fine-tuned, evaluated and served language model with one YAML recipe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file (see recipes/).", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a recipe key: --set train.max_steps=5 (repeatable).",
                 show_default=False),
]


def _recipe(path: Path, overrides: list[str] | None):
    from ayar.methods import check_method
    from ayar.recipe import load_recipe

    recipe = load_recipe(path, overrides or [])
    check_method(recipe.method)  # the method's own keys (method.r), before any stage runs
    return recipe


def _methods_help() -> str:
    from ayar.methods import available_methods

    return "\n\n".join(f"{name}: {cls.summary}" for name, cls in available_methods().items())


class _HelpWithMethods(TyperCommand):
    """A command whose help ends with the method list, built only when that help is shown.

    Listing the methods imports every method module (torch, transformers, peft: seconds), which
    `ayar --help` and every other command must not pay for.
    """

    _methods_text: str | None = None

    @property
    def help(self) -> str | None:  # click reads it only to render this command's own help
        if self._base_help is None:
            return None
        if self._methods_text is None:
            self._methods_text = _methods_help()
        return f"{self._base_help}\n\nMethods (method.name):\n\n{self._methods_text}"

    @help.setter
    def help(self, value: str | None) -> None:
        self._base_help = value


@app.command()
def pretrain(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Train a tokenizer and a small base model from scratch (the recipe's pretrain section)."""
    from ayar.pipeline import stage_pretrain

    print(f"base model saved to {stage_pretrain(_recipe(recipe, set_))}")


@app.command()
def prepare(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe YAML (or use --input/--format/--out).",
                                                  show_default=False)] = None,
    set_: SetOpt = None,
    input_: Annotated[list[Path] | None, typer.Option("--input", "-i", help="Data file or folder (repeatable).",
                                                      show_default=False)] = None,
    format_: Annotated[str, typer.Option("--format", help=", ".join(typing.get_args(DataFormat)) + ".")] = "alpaca",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (without a recipe).",
                                             show_default=False)] = None,
    strict: Annotated[bool, typer.Option(help="Stop at the first malformed record.")] = False,
) -> None:
    """Clean, deduplicate, anonymize and split data; write the splits, rejects and a data card.

    With a recipe, the output goes to the run folder's data/. Without one:
    ayar prepare --input data.jsonl --format alpaca --out prepared/ [--strict]
    """
    if recipe is not None:
        from ayar.pipeline import stage_prepare

        stage_prepare(_recipe(recipe, [*(set_ or []), *(["data.strict=true"] if strict else [])]))
        return
    if not input_ or out is None:
        raise UsageError("give a recipe, or --input FILE... and --out DIR")
    from ayar.data.prepare import prepare_files

    prepare_files(list(input_), format_, out, strict=strict)


@app.command(cls=_HelpWithMethods, short_help="Fine-tune the base model on the prepared data.",
             help="Fine-tune the base model on the prepared data.")
def train(
    recipe: RecipeArg,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue from the latest complete checkpoint (after exit 75, "
                                                 "SIGTERM/SIGINT, or a crash).")] = False,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="Training processes on this machine (torchrun; "
                                                                "gloo on a CPU, NCCL on GPUs).")] = 1,
) -> None:
    if nproc > 1:  # re-run this same command under torchrun
        from ayar.train.launch import launch_distributed

        raise typer.Exit(launch_distributed(sys.argv[1:], nproc))
    from ayar.pipeline import stage_train

    summary = stage_train(_recipe(recipe, set_), resume=resume)
    print(f"trained {summary['steps']} steps, final loss {summary['final_loss']:.4f}; model in "
          f"{summary['model_dir']}")


@app.command("eval")
def eval_(
    recipe: RecipeArg,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option(help="Evaluate even on a split used for training or selection.")] = False,
    human: Annotated[Path | None, typer.Option(help="A filled annotation sheet (annotation/annotation.csv): add "
                                                    "its win/tie/loss to metrics.json and the report, without "
                                                    "evaluating again.", show_default=False)] = None,
) -> None:
    """Evaluate base and fine-tuned model on the held-out test split; writes metrics.json and the report."""
    from ayar.pipeline import stage_eval, stage_human_eval

    if human is not None:
        result = stage_human_eval(_recipe(recipe, set_), human)
        print(f"human evaluation: {result['annotated']} comparisons; win {result['win']['rate']:.3f}, "
              f"tie {result['tie']['rate']:.3f}, loss {result['loss']['rate']:.3f} (report updated)")
        return
    _print_eval(stage_eval(_recipe(recipe, set_), force=force))


@app.command()
def run(
    recipe: RecipeArg,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Reuse the pretrained base and continue training.")] = False,
) -> None:
    """Run every stage of a recipe in order: pretrain, prepare, train, eval, then export if export.enabled."""
    from ayar.pipeline import run_all

    loaded = _recipe(recipe, set_)
    metrics = run_all(loaded, resume=resume)
    _print_eval(metrics.get("eval", {}), metrics.get("train"))
    print(f"run folder: {loaded.run_dir}  (report: {loaded.run_dir / 'report.md'})")


@app.command()
def sweep(
    recipe: RecipeArg,
    set_: SetOpt = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Trials in the study, all workers together "
                                                            "(default: sweep.n_trials).", show_default=False)] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage shared by the workers: a database URL "
                                                     "(sqlite:///, postgresql://...) or journal:PATH (default: "
                                                     "SQLite in the sweep folder).", show_default=False)] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: run.name).", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads of each trial of this worker "
                                                            "(default: the machine's cores divided by the `ayar "
                                                            "sweep` workers running on it, counted before each "
                                                            "trial; at most train.num_threads).",
                                                show_default=False)] = None,
) -> None:
    """Search the recipe's sweep.space with Optuna, judged on validation figures; run it again to continue,
    or start more of it on the same --storage to share the study."""
    from ayar.sweep import SweepOptions, run_sweep

    result = run_sweep(_recipe(recipe, set_), SweepOptions(trials, storage, study, threads))
    for number, values in result.best:
        print(f"best trial {number}: {', '.join(f'{v:.4g}' for v in values)}")
    print(f"sweep folder: {result.folder} (report: {result.report}; best recipe: {result.folder / 'best.yaml'})")


@app.command()
def generate(
    model: Annotated[Path, typer.Argument(help="Run folder, model folder or adapter folder.")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="User message (repeatable).")],
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 means greedy decoding.")] = 0.0,
    system: Annotated[str | None, typer.Option(help="System message; for a run folder, its recipe's "
                                               "data.system_prompt unless given ('' for none: the template's "
                                               "default).", show_default=False)] = None,
) -> None:
    """Answer prompts with a model, formatted with the chat template it was trained with."""
    from ayar.eval.generate import generate_chat
    from ayar.export import find_model_dir
    from ayar.models.load import load_for_inference
    from ayar.recipe import EvalConfig
    from ayar.run_folder import RunFolder

    model_dir = find_model_dir(model)  # a run folder's format is checked before its recipe is read
    run = RunFolder(model)
    if system is None and run.is_run():
        system = run.read_recipe().data.system_prompt
    loaded, tokenizer = load_for_inference(model_dir)
    cfg = EvalConfig(max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature or 1.0)
    opening = [{"role": "system", "content": system}] if system else []
    conversations = [[*opening, {"role": "user", "content": p}] for p in prompt]
    for text, answer in zip(prompt, generate_chat(loaded, tokenizer, conversations, cfg), strict=True):
        print(f"> {text}\n{answer}\n")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run folder or model/adapter folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder (or .gguf file) to write.")],
    format_: Annotated[str, typer.Option("--format", help=", ".join(typing.get_args(ExportFormat)) + ": hf is the "
                                         "merged model, onnx model.onnx with KV cache, triton a Triton model "
                                         "repository.")] = "hf",
    gguf_dtype: Annotated[str, typer.Option(help="GGUF weight type: "
                                            + ", ".join(typing.get_args(GgufDtype)) + ".")] = "f16",
    verify: Annotated[bool, typer.Option(help="onnx/triton: check logits and greedy generation against "
                                         "PyTorch with onnxruntime; gguf: tokens and greedy answers "
                                         "in llama.cpp.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Use the model even when its chat template or tokenizer "
                                        "no longer matches training (ayar_contract.json).")] = False,
) -> None:
    """Merge adapters into the base and write a plain Hugging Face folder (vLLM/TGI serve it), GGUF, ONNX or a
    Triton model repository."""
    from ayar.export import export_model

    written = export_model(run_dir, out, format_, gguf_dtype=gguf_dtype, verify=verify, force=force)
    print(f"exported to {written}")


def serve(
    target: Annotated[Path, typer.Argument(help="Recipe YAML (its serve section and run folder), run folder, "
                                                "merged model folder or adapter folder.")],
    adapter: Annotated[list[str] | None, typer.Option(help="Extra LoRA adapter as name=path (repeatable).",
                                                      show_default=False)] = None,
    served_model_name: Annotated[str | None, typer.Option(help="Model name clients use.")] = None,
    api_key: Annotated[list[str] | None, typer.Option(help="Require this Bearer key (repeatable; or "
                                                           "AYAR_API_KEY).", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads of torch, or of llama.cpp with --engine "
                                                    "llamacpp (default: cores - 1).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Use the model even when its chat template or tokenizer "
                                        "no longer matches training (ayar_contract.json).")] = False,
    **settings: object,
) -> None:
    """Serve a model with an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /metrics).

    Settings: the recipe's serve section (a recipe, or a run folder's recipe.yaml), then these flags.
    """
    from ayar.serve.server import serve_target

    serve_target(target, settings, adapter, served_model_name, api_key, threads, force)


def _with_serve_config_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command``'s signature with one option per ServeConfig field (the schema states them once)."""
    from ayar.recipe import ServeConfig
    from ayar.serve.options import option_help, option_name, option_type

    hints = typing.get_type_hints(command, include_extras=True)  # the annotations are strings here
    fixed = [p.replace(annotation=hints[p.name]) for p in inspect.signature(command).parameters.values()
             if p.kind is not p.VAR_KEYWORD]
    generated = []
    for name in ServeConfig.model_fields:
        flag = option_name(name)
        kind = option_type(name)
        flags = (f"{flag}/--no-{flag[2:]}",) if kind is bool else (flag,)
        option = typer.Option(*flags, help=option_help(name), show_default=False)
        generated.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                           annotation=Annotated[kind | None, option]))
    command.__signature__ = inspect.Signature([*fixed, *generated])
    return command


app.command()(_with_serve_config_options(serve))


@app.command()
def batch(
    model: Annotated[Path, typer.Option(help="Run, model or adapter folder.")],
    input_: Annotated[Path, typer.Option("--input", help="JSONL of prompts (prompt or messages, and id).")],
    output: Annotated[Path, typer.Option(help="JSONL to write; existing ids are skipped (resumable).")],
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 means greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Use the model even when its chat template or tokenizer "
                                        "no longer matches training (ayar_contract.json).")] = False,
) -> None:
    """Batch inference over a JSONL file: one output line per input line, resumable after a crash."""
    from ayar.serve.batch import run_batch

    summary = run_batch(model, input_, output, batch_size, max_new_tokens, temperature, top_p, stop, seed,
                        force)
    print(summary.as_dict())


@app.command()
def ui(
    runs: Annotated[Path, typer.Option(help="Folder holding the run folders.")] = Path("runs"),
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps it local (elsewhere needs "
                                           "--api-key).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 7860,
    api_key: Annotated[list[str] | None, typer.Option(help="Require this key (repeatable; or AYAR_API_KEY).",
                                                      show_default=False)] = None,
) -> None:
    """A local web app: runs, run pages with live loss curves, compare, playground and a new-run form."""
    from ayar.serve.server import api_keys_from
    from ayar.ui.app import serve_ui

    serve_ui(runs, host, port, api_keys_from(api_key))


monitor_app = typer.Typer(help="Production monitoring.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("drift")
def monitor_drift(
    target: Annotated[Path | None, typer.Argument(help="Recipe YAML or run folder: its monitor section, "
                                                       "prepared data and request log.", show_default=False)] = None,
    reference: Annotated[Path | None, typer.Option(help="Prepared data folder (the training prompts; default: "
                                                        "the run's data/).", show_default=False)] = None,
    db: Annotated[Path | None, typer.Option(help="Request log (SQLite) written by `ayar serve --log-requests` "
                                                 "(default: serve.log_db or <run>/requests.sqlite).",
                                            show_default=False)] = None,
    window: Annotated[int | None, typer.Option(help="Latest N requests (default: recipe monitor.window).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a drift plot PNG here.")] = None,
    embeddings: Annotated[bool, typer.Option(help="MiniLM embedding drift where installed.")] = True,
) -> None:
    """Compare live prompts with the training prompts; exit 0 OK, 3 WARN, 4 ALERT."""
    from ayar.serve.drift import check_drift, drift_inputs, format_report

    inputs = drift_inputs(target, reference, db)
    report = check_drift(inputs.reference, inputs.db, window=window, plot=plot, thresholds=inputs.thresholds,
                         embeddings=embeddings)
    print(format_report(report))
    raise typer.Exit(report.exit_code)


@app.command()
def iterate(
    run_dir: Annotated[Path, typer.Argument(help="A trained run folder (holds recipe.yaml and model/).",
                                            show_default=False)],
    db: Annotated[Path, typer.Option(help="Request log with feedback (`ayar serve --log-text --log-db`).")],
    set_: SetOpt = None,
) -> None:
    """Feedback from serving -> v2 trained from this run, evaluated against it and checked for promotion
    (promote/block)."""
    from ayar.iterate import iterate as run_iteration
    from ayar.iterate import read_promotion

    metrics = run_iteration(run_dir, db, set_ or [])
    drift = metrics["iterate"]["drift"]
    print(f"drift of the served traffic: {drift['status']} ({drift['n_live']} live prompts)" if "status" in drift
          else f"drift not measured: {drift.get('skipped')}")
    promotion = read_promotion(metrics)
    print(f"promotion: {promotion['decision']} ({'; '.join(promotion['reasons'])})")
    print(f"report: {Path(metrics['iterate']['v2_run']) / 'report.md'}")


def _print_eval(evals: dict, train_summary: dict | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from ayar.eval.report import model_blocks

    def fmt(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, int | float) else "n/a"

    table = Table(title="ayar results")
    table.add_column("figure")
    blocks = model_blocks(evals)
    names = list(blocks) or [""]
    for name in names:
        table.add_column(name, justify="right")
    first = next(iter(blocks.values()), {})
    metrics = [k for k, v in first.items() if isinstance(v, int | float) or v is None]
    for metric in metrics:
        table.add_row(metric, *(fmt(blocks[n].get(metric)) for n in names))
    if train_summary:
        for key in ("final_loss", "steps", "tokens_per_second", "wall_time_s"):
            table.add_row(f"train {key}", *(fmt(train_summary[key]) if i == 0 else "" for i in range(len(names))))
    Console().print(table)


def main() -> None:
    """Entry point: user mistakes exit 2 and runtime failures exit 1, each with one clear line."""
    try:
        app()
    except AyarError as exc:
        print(f"ayar: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("ayar: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a bug or an unforeseen failure: one line, the traceback on request
        if os.environ.get("AYAR_DEBUG") == "1":
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"ayar: error: {type(exc).__name__}: {first} (set AYAR_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
