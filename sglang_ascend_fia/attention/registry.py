"""The hook behind ``ATTENTION_BACKENDS["ascend"]`` (manifest entry ``ascend-fia-backend``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The manifest entries whose hooks live here (checked against patches/ by the tests).
__sglang_patches__ = ("ascend-fia-backend",)

# The manifest group the FIA MLA backend needs whole (patches/deepseek_mla.toml, mla_kv_pool.toml).
MLA_GROUP = "deepseek-mla"


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
    _check_moe_kernels(runner)
    if runner.use_mla_backend:
        reason = (
            _group_reason(MLA_GROUP) or handoff.mla_handoff_reason(runner) or _kernel_reason("mla")
        )
        if reason is None:
            from sglang_ascend_fia.mla.backend import AscendFIAMLABackend

            mla_backend = AscendFIAMLABackend(runner)
            handoff.record(handoff.Decision("fia-mla", ""))
            return mla_backend
    else:
        reason = handoff.handoff_reason(runner) or _kernel_reason("attention")
    if reason is not None:
        handoff.record(handoff.Decision("sglang", reason))
        _refuse_without_torch_npu(reason)
        return wrapped(*args, **kwargs)
    from sglang_ascend_fia.attention.backend import AscendFIABackend

    backend = AscendFIABackend(runner)
    handoff.record(handoff.Decision("fia", ""))
    return backend


def _kernel_reason(feature: str) -> str | None:
    """Why the installed torch_npu cannot run ``feature``'s FIA calls, or None: checked here, at
    start-up, so a missing kernel hands off instead of failing the first request
    (``ops.kernels``)."""
    from sglang_ascend_fia.ops import kernels

    result = kernels.check(feature)
    return None if result.ok else f"the FIA path's kernels: {result.reason()}"


def _check_moe_kernels(runner: Any) -> None:
    """Refuse at start-up a MoE model whose experts the installed torch_npu cannot run.

    The MoE hooks run at the first forward; the attention backend is built once per model runner
    after the model is loaded (model_runner.py:715, :1105), so this is where a missing MoE
    kernel is found before any request. No hand-off helps: sglang's own NPU MoE path calls the
    same kernels (``hardware_backend/npu/moe/``)."""
    from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE

    from sglang_ascend_fia.attention.base import UnsupportedConfiguration
    from sglang_ascend_fia.ops import kernels

    model = getattr(runner, "model", None)
    if model is None or not any(isinstance(m, FusedMoE) for m in model.modules()):
        return
    result = kernels.check("moe")
    if not result.ok:
        raise UnsupportedConfiguration(
            f"sglang-ascend-fia: this MoE model's experts cannot run: {result.reason()}"
        )


def _group_reason(group: str) -> str | None:
    """Why the patches ``group`` names are not all applied, or None: the FIA MLA backend is fed by
    the DeepSeek forward steps and the split pool, and serves nothing without them."""
    from sglang_ascend_fia import plugin

    return plugin.group_skip_reason(group)


def _refuse_without_torch_npu(reason: str) -> None:
    """sglang's own ``AscendAttnBackend`` imports ``torch_npu`` at top level
    (ascend_backend.py:7-11): on a host without it a hand-off would end start-up in an
    ``ImportError`` traceback. Say instead, in one line, what was handed off and why it cannot
    run here."""
    import importlib.util

    from sglang_ascend_fia.attention.base import UnsupportedConfiguration

    if importlib.util.find_spec("torch_npu") is None:
        raise UnsupportedConfiguration(
            f"sglang-ascend-fia: this model is handed to sglang's own AscendAttnBackend "
            f"({reason}), which needs torch_npu, and torch_npu is not installed here"
        )
