"""The hook behind ``ATTENTION_BACKENDS["ascend"]`` (manifest entry ``ascend-fia-backend``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The manifest entries whose hooks live here (checked against patches/ by the tests).
__sglang_patches__ = ("ascend-fia-backend",)


def create_ascend_fia_backend(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """wrapt wrapper around sglang's ``create_ascend_backend(runner)``.

    Causal MHA/GQA models get :class:`AscendFIABackend`, MLA models (DeepSeek-V2/V3)
    :class:`~sglang_ascend_fia.mla.backend.AscendFIAMLABackend`. A model or setting the backend
    does not implement (:func:`handoff.handoff_reason` for MHA/GQA: sliding window, sinks,
    non-causal or cross attention, logit_cap, speculative decoding, context parallel, non-float
    or HND KV caches; :func:`handoff.mla_handoff_reason` for MLA: DSA, sliding-window MLA,
    attention dims FIA's MLA calls do not take, quantized or NZ caches, MLAPO, ...) keeps
    sglang's own ``AscendAttnBackend`` (the call goes to ``wrapped``), with one log line naming
    the reason.
    """
    # Imported here: these modules import sglang's attention classes, which must not load
    # before sglang itself asks for a backend.
    from sglang_ascend_fia.attention import handoff

    runner = args[0] if args else kwargs["runner"]
    if runner.use_mla_backend:
        reason = handoff.mla_handoff_reason(runner)
        if reason is None:
            from sglang_ascend_fia.mla.backend import AscendFIAMLABackend

            mla_backend = AscendFIAMLABackend(runner)
            handoff.record(handoff.Decision("fia-mla", ""))
            return mla_backend
    else:
        reason = handoff.handoff_reason(runner)
    if reason is not None:
        handoff.record(handoff.Decision("sglang", reason))
        return wrapped(*args, **kwargs)
    from sglang_ascend_fia.attention.backend import AscendFIABackend

    backend = AscendFIABackend(runner)
    handoff.record(handoff.Decision("fia", ""))
    return backend
