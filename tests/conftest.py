"""Shared test set-up: the CPU test bed is on the path of this process and of every child."""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPPORT = Path(__file__).resolve().parent / "support"
for path in (SUPPORT / "pythonpath", SUPPORT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
# Children (sglang schedulers, subprocess tests) inherit the test bed through the environment.
_parts = [str(SUPPORT / "pythonpath"), str(SUPPORT), *filter(None, [os.environ.get("PYTHONPATH")])]
os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(_parts))
os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# `make test` puts the test bed on PYTHONPATH before the interpreter starts, so sitecustomize
# has already run; a bare `pytest` has not, so run the torchvision fix here too.
_site = sys.modules.get("sitecustomize")
if _site is None or not str(getattr(_site, "__file__", "")).startswith(str(SUPPORT)):
    runpy.run_path(str(SUPPORT / "pythonpath" / "sitecustomize.py"))
# A developer's shell may have the toggle set; every test states the value it needs.
os.environ.pop("ASCEND_USE_FIA", None)


TINY_TENSOR_DIRS = frozenset({"ops", "verify", "w8a8"})
"""Test directories (under tests/) whose every module runs tiny tensors on one thread."""


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny-tensor tests.

    Their tensors are tiny: intra-op threads only add OpenMP spin-waits, which on a busy 2-core
    machine cost 10-30x. A directory opts in through :data:`TINY_TENSOR_DIRS`; a fixture that
    builds tiny sglang objects elsewhere requests it by name.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _tiny_tensor_dirs_one_thread(request: pytest.FixtureRequest) -> None:
    """``one_thread`` for every module in :data:`TINY_TENSOR_DIRS`, and nothing elsewhere."""
    if request.path.relative_to(Path(__file__).parent).parts[0] in TINY_TENSOR_DIRS:
        request.getfixturevalue("one_thread")
