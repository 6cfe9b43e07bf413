"""TEST-ONLY: stand-ins for an ``ops`` op that a test puts in its place to watch its calls.

The backends launch most ops through prepared calls (``op.prepare(**fixed)(*tensors)``,
``ops.PreparedCall``). :func:`spying` gives a plain function the same ``prepare``, so a test's
stand-in sees every launch as one ordinary call with all its arguments, however it was made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def spying(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with a ``prepare`` whose launches call ``fn(*tensors, **fixed, **more)``."""

    def prepare(**fixed: Any) -> Callable[..., Any]:
        def launch(*tensors: Any, **more: Any) -> Any:
            return fn(*tensors, **fixed, **more)

        return launch

    fn.prepare = prepare  # type: ignore[attr-defined]
    return fn
