"""What the served_* benchmarks share: a run's held-out conversations, and the official `openai` client on
`ayar serve` over the run's model, in this process (fastapi's test client)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def held_out_conversations(run: Path) -> tuple[Any, list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """(the run's recipe, its test records, each record as the chat messages `ayar eval` renders)."""
    from ayar.data.prepared import PreparedData
    from ayar.data.templates import record_to_messages
    from ayar.recipe import load_recipe

    recipe = load_recipe(run / "recipe.yaml")
    records = PreparedData(run / "data").read_split("test")
    return recipe, records, [record_to_messages(r, recipe.data.system_prompt) for r in records]


@contextlib.contextmanager
def openai_client(run: Path, **settings: Any) -> Iterator[Any]:
    """The `openai` client on `ayar serve` over ``run``'s model, served as ``run`` (``settings``: ServeSettings)."""
    from fastapi.testclient import TestClient
    from openai import OpenAI

    from ayar.serve.app import ServeSettings, create_app
    from ayar.serve.engine import load_engine

    engine = load_engine(run / "model", served_name="run").start()
    with TestClient(create_app(ServeSettings(**settings), engine=engine)) as http:
        yield OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
