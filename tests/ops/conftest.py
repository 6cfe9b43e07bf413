"""The ops tests run tiny tensors: one intra-op thread for each module (see ``one_thread``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _ops_one_thread(one_thread: None) -> None:
    return None
