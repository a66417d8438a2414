"""Fuzzing: schemathesis drives every operation of the OpenAPI schema, hypothesis throws raw bytes; no 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                         suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzz_app(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The app over a chat model with only 48 positions, so no fuzzed max_tokens makes a long generation."""
    from ayar.data.templates import set_template
    from ayar.models.load import load_tokenizer
    from ayar.models.scratch import build_model
    from ayar.recipe import ScratchModelConfig
    from ayar.serve.app import ServeSettings, create_app
    from ayar.serve.engine import load_engine

    out = tmp_path_factory.mktemp("fuzz_model")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    set_template(tokenizer, "chatml")
    build_model(ScratchModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                   context_length=48), tokenizer, seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    engine = load_engine(out, served_name="tiny").start()
    yield create_app(ServeSettings(max_body_bytes=20_000, request_timeout=120), engine=engine)
    engine.stop()


def test_no_schema_driven_input_gets_a_5xx(fuzz_app: FastAPI) -> None:
    """Every operation of the app's own OpenAPI schema, fed schemathesis' generated cases.

    The cases are drawn in the test itself (not with ``schema.parametrize``) because the app is built
    from a fixture, and schemathesis' lazy-fixture loader does not work with pytest 9.
    """
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/models"}
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy(), served=st.booleans())
        @FUZZ_SETTINGS
        def call(case, served: bool) -> None:
            if served:  # half the cases name the served model, so they get past the 404 into generation
                if isinstance(case.body, dict) and "model" in case.body:
                    case.body["model"] = "tiny"
                if case.path_parameters and "model" in case.path_parameters:
                    case.path_parameters["model"] = "tiny"
            response = case.call()
            statuses.append(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"
            if response.status_code >= 400 and case.path.startswith("/v1/"):
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}

        call()
    assert len(statuses) >= len(operations)
    assert statuses.count(200) >= 20  # the fuzz reached generation, not only the validators


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
fields = st.fixed_dictionaries(
    {}, optional={"model": st.sampled_from(["tiny", "", "x"]) | st.text(max_size=5),
                  "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant",
                                                                                       "system", "tool"]),
                                                              "content": json_values}), max_size=3) | json_values,
                  "prompt": json_values, "max_tokens": json_values, "temperature": json_values,
                  "top_p": json_values, "stop": json_values, "seed": json_values, "n": json_values,
                  "stream": json_values, "min_tokens": st.integers(-5, 60) | json_values},
)


@given(path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
       body=st.binary(max_size=200) | fields.map(lambda d: __import__("json").dumps(d).encode()))
@FUZZ_SETTINGS
def test_no_raw_body_gets_a_5xx(fuzz_app: FastAPI, path: str, body: bytes) -> None:
    with TestClient(fuzz_app) as client:
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, f"{body!r}: {response.text[:300]}"
