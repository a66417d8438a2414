"""``python -m ayar.serve RECIPE|RUN|MODEL``: the server without the CLI (for tests, benchmarks and containers)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ayar.errors import AyarError
from ayar.recipe import ServeConfig
from ayar.serve.options import option_help, option_name, option_type
from ayar.serve.server import serve_target


def parser() -> argparse.ArgumentParser:
    """The options `ayar serve` has: one per ServeConfig field (its description as help), plus the invocation's."""
    parser = argparse.ArgumentParser(prog="python -m ayar.serve")
    parser.add_argument("target", type=Path, help="Recipe YAML, run folder, model folder or adapter folder.")
    for name in ServeConfig.model_fields:
        kind = option_type(name)
        if kind is bool:
            parser.add_argument(option_name(name), dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=option_help(name))
        else:
            parser.add_argument(option_name(name), dest=name, type=kind, default=None, help=option_help(name))
    parser.add_argument("--adapter", action="append", help="name=path (repeatable)")
    parser.add_argument("--served-model-name")
    parser.add_argument("--api-key", action="append")
    parser.add_argument("--threads", type=int, help="CPU threads of torch, or of llama.cpp with --engine llamacpp "
                        "(default: CPU cores - 1)")
    parser.add_argument("--force", action="store_true", help="serve even when the template no longer matches training")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse the options and run the server."""
    args = parser().parse_args(argv)
    overrides = {name: getattr(args, name) for name in ServeConfig.model_fields}
    try:
        serve_target(args.target, overrides, args.adapter, args.served_model_name, args.api_key, args.threads,
                     args.force)
    except AyarError as exc:
        print(f"ayar: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
