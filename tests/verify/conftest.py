"""verify-ops cases run tiny tensors: one intra-op thread per module (see ``one_thread``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _verify_one_thread(one_thread: None) -> None:
    return None
