"""The hook behind ``ATTENTION_BACKENDS["ascend"]`` (manifest entry ``ascend-fia-backend``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

# The manifest entries whose hooks live here (checked against patches/ by the tests).
__sglang_patches__ = ("ascend-fia-backend",)

logger = logging.getLogger(__name__)


def create_ascend_fia_backend(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """wrapt wrapper around sglang's ``create_ascend_backend(runner)``.

    MHA/GQA models get :class:`AscendFIABackend`, MLA models (DeepSeek-V2/V3)
    :class:`~sglang_ascend_fia.mla.backend.AscendFIAMLABackend`.
    """
    runner = args[0] if args else kwargs["runner"]
    if runner.use_mla_backend:
        from sglang_ascend_fia.mla.backend import AscendFIAMLABackend

        return AscendFIAMLABackend(runner)
    # Imported here: the backend module imports sglang's attention base classes, which must
    # not load before sglang itself asks for a backend.
    from sglang_ascend_fia.attention.backend import AscendFIABackend

    return AscendFIABackend(runner)
