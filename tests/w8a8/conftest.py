"""The W8A8 unit tests run tiny tensors: one intra-op thread for each module (``one_thread``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _w8a8_one_thread(one_thread: None) -> None:
    return None
