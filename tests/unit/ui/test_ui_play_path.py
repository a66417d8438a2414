"""The playground's paths: a run's folder name or a sweep trial's, then the side and the API path."""

from __future__ import annotations

import pytest

from ayar.ui.playground import PLAY_PATH


@pytest.mark.parametrize(("path", "run", "side", "rest"), [
    ("/play/quickstart/tuned/v1/chat/completions", "quickstart", "tuned", "v1/chat/completions"),
    ("/play/lr-search/trials/12/base/v1/models", "lr-search/trials/12", "base", "v1/models"),
    ("/play/trials/base/v1/models", "trials", "base", "v1/models"),  # a run that happens to be named so
])
def test_the_run_side_and_rest_are_found(path: str, run: str, side: str, rest: str) -> None:
    found = PLAY_PATH.match(path)
    assert found is not None
    assert (found["run"], found["side"], found["rest"]) == (run, side, rest)


@pytest.mark.parametrize("path", ["/play/quickstart", "/play/quickstart/tuned", "/runs/quickstart/tuned/x"])
def test_paths_without_a_side_and_api_path_do_not_match(path: str) -> None:
    assert PLAY_PATH.match(path) is None
