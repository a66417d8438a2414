"""The `ayar` command line: one thin function per subcommand; each calls one stage function."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ayar.errors import AyarError, UsageError

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


def _recipe(path: Path, overrides: list[str] | None):  # noqa: ANN202
    from ayar.recipe import load_recipe

    return load_recipe(path, overrides or [])


def _methods_help() -> str:
    from ayar.methods import available_methods

    return "\n\n".join(f"{name}: {cls.summary}" for name, cls in available_methods().items())


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
    format_: Annotated[str, typer.Option("--format", help="alpaca, sharegpt, messages, text, classification, "
                                                          "seq2seq or preference.")] = "alpaca",
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


@app.command(help="Fine-tune the base model on the prepared data.\n\nMethods (method.name):\n\n" + _methods_help())
def train(
    recipe: RecipeArg,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint.")] = False,
) -> None:
    from ayar.pipeline import stage_train

    summary = stage_train(_recipe(recipe, set_), resume=resume)
    print(f"trained {summary['steps']} steps, final loss {summary['final_loss']:.4f}; model in "
          f"{summary['model_dir']}")


@app.command("eval")
def eval_(
    recipe: RecipeArg,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option(help="Evaluate even on a split used for training or selection.")] = False,
) -> None:
    """Evaluate base and fine-tuned model on the held-out test split; writes metrics.json and the report."""
    from ayar.pipeline import stage_eval

    _print_eval(stage_eval(_recipe(recipe, set_), force=force))


@app.command()
def run(
    recipe: RecipeArg,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Reuse the pretrained base and continue training.")] = False,
) -> None:
    """Run every stage of a recipe in order: pretrain, prepare, train, eval."""
    from ayar.pipeline import run_all

    loaded = _recipe(recipe, set_)
    metrics = run_all(loaded, resume=resume)
    _print_eval(metrics.get("eval", {}), metrics.get("train"))
    print(f"run folder: {loaded.run_dir}  (report: {loaded.run_dir / 'report.md'})")


@app.command()
def generate(
    model: Annotated[Path, typer.Argument(help="Run folder, model folder or adapter folder.")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="User message (repeatable).")],
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 means greedy decoding.")] = 0.0,
) -> None:
    """Answer prompts with a model, formatted with the chat template it was trained with."""
    from ayar.eval.generate import generate_chat
    from ayar.export import find_model_dir
    from ayar.models.load import load_for_inference
    from ayar.recipe import EvalConfig

    loaded, tokenizer = load_for_inference(find_model_dir(model))
    cfg = EvalConfig(max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature or 1.0)
    for text, answer in zip(prompt, generate_chat(loaded, tokenizer, [[{"role": "user", "content": p}]
                                                                       for p in prompt], cfg), strict=True):
        print(f"> {text}\n{answer}\n")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run folder or model/adapter folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write.")],
    format_: Annotated[str, typer.Option("--format", help="hf (merged model) or adapter.")] = "hf",
) -> None:
    """Merge adapters into the base and write a plain Hugging Face model folder (safetensors)."""
    from ayar.export import export_model

    print(f"exported to {export_model(run_dir, out, format_)}")


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
