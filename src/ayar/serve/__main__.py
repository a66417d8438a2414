"""``python -m ayar.serve MODEL``: the server without the CLI (for tests, benchmarks and containers)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ayar.errors import AyarError
from ayar.recipe import ServeConfig
from ayar.serve.app import ServeSettings
from ayar.serve.server import api_keys_from, parse_adapters, serve


def main(argv: list[str] | None = None) -> None:
    """Parse the options `ayar serve` has and run the server."""
    defaults = ServeConfig()
    parser = argparse.ArgumentParser(prog="python -m ayar.serve")
    parser.add_argument("model", type=Path)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--adapter", action="append", help="name=path (repeatable)")
    parser.add_argument("--served-model-name")
    parser.add_argument("--api-key", action="append")
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue)
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: CPU cores - 1)")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--request-timeout", type=float, default=defaults.request_timeout)
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout)
    parser.add_argument("--log-db", type=Path)
    parser.add_argument("--log-requests", action="store_true")
    parser.add_argument("--log-text", action="store_true")
    args = parser.parse_args(argv)
    settings = ServeSettings(api_keys=api_keys_from(args.api_key), max_body_bytes=args.max_body_bytes,
                             request_timeout=args.request_timeout, log_db=args.log_db,
                             log_requests=args.log_requests or args.log_text, log_text=args.log_text)
    try:
        serve(args.model, args.host, args.port, parse_adapters(args.adapter), args.served_model_name, settings,
              args.max_queue, args.drain_timeout, args.max_batch, args.threads)
    except AyarError as exc:
        print(f"ayar: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
