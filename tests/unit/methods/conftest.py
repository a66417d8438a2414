"""Method tests: every method registered up front; one torch thread (tiny models, shared CPU)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from ayar.methods import available_methods

# Discover every method before a test module imports one method module directly: the registry only
# auto-discovers while it is empty, so an early `import ayar.methods.qlora` would hide the others.
available_methods()


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
