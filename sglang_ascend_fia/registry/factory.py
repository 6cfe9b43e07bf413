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

    Causal MHA/GQA models get :class:`~sglang_ascend_fia.attention.backend.AscendFIABackend`,
    MLA models (DeepSeek-V2/V3) :class:`~sglang_ascend_fia.mla.backend.AscendFIAMLABackend`.
    A model or setting the backend does not implement (``attention.handoff.RULES`` for MHA/GQA:
    sliding window, sinks, non-causal or cross attention, logit_cap, speculative decoding,
    context parallel, non-float or HND KV caches; ``mla.handoff.RULES`` for MLA: DSA,
    sliding-window MLA, attention dims FIA's MLA calls do not take, quantized or NZ caches,
    MLAPO, ...) keeps sglang's own ``AscendAttnBackend`` (the call goes to ``wrapped``), with
    one log line naming the reason.
    """
    # Imported here: the backends import sglang's attention classes, which must not load
    # before sglang itself asks for a backend.
    from sglang_ascend_fia.fia_backend import handoff
    from sglang_ascend_fia.registry import rules_for
    from sglang_ascend_fia.registry.rank_agreement import agreed_reason
    from sglang_ascend_fia.registry.rank_status import log_rank_status

    runner = args[0] if args else kwargs["runner"]
    _check_moe_kernels(runner)
    # The rules run once per runner, the ranks agree, and the backend built gets the verdict.
    verdict = handoff.Verdict(agreed_reason(handoff.first_reason(rules_for(runner), runner)))
    if verdict.reason is not None:
        backend: Any = _hand_off(runner, verdict.reason, lambda: wrapped(*args, **kwargs))
        log_rank_status(f"handed to sglang's AscendAttnBackend ({verdict.reason})")
        return backend
    if runner.use_mla_backend:
        from sglang_ascend_fia.mla.backend import AscendFIAMLABackend

        backend = AscendFIAMLABackend(runner, verdict)
        handoff.record(handoff.Decision("fia-mla", ""))
        log_rank_status("FIA MLA backend")
        return backend
    from sglang_ascend_fia.attention.backend import AscendFIABackend

    backend = AscendFIABackend(runner, verdict)
    handoff.record(handoff.Decision("fia", ""))
    log_rank_status("FIA backend")
    return backend


def _check_moe_kernels(runner: Any) -> None:
    """Refuse at start-up a MoE model whose experts the installed torch_npu cannot run.

    The MoE hooks run at the first forward; the attention backend is built once per model runner
    after the model is loaded (model_runner.py:715, :1105), so this is where a missing MoE
    kernel is found before any request. No hand-off helps: sglang's own NPU MoE path calls the
    same kernels (``hardware_backend/npu/moe/``)."""
    from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE

    from sglang_ascend_fia.fia_backend.base import UnsupportedConfiguration
    from sglang_ascend_fia.ops import kernels

    model = getattr(runner, "model", None)
    if model is None or not any(isinstance(m, FusedMoE) for m in model.modules()):
        return
    result = kernels.check("moe")
    if not result.ok:
        raise UnsupportedConfiguration(
            f"sglang-ascend-fia: this MoE model's experts cannot run: {result.reason()}"
        )


def _hand_off(runner: Any, reason: str, build: Callable[[], Any]) -> Any:
    """Build sglang's own backend for ``runner`` in the mode its pool was built for
    (``registry.sglang_mode``), after the checks that mode needs; one log line."""
    from sglang_ascend_fia.fia_backend import handoff
    from sglang_ascend_fia.fia_backend.base import UnsupportedConfiguration
    from sglang_ascend_fia.registry import sglang_mode

    fia_mode = getattr(runner, sglang_mode.RUNNER_FLAG, None)
    if fia_mode is None:  # built outside ModelRunner.alloc_memory_pool: the process's toggle
        fia_mode = True
    mode = "FIA mode (ASCEND_USE_FIA=1)" if fia_mode else "ATB mode (as with ASCEND_USE_FIA=0)"
    why = sglang_mode.fia_mode_reason(runner) if fia_mode else None
    if fia_mode and why is None:
        why = "the mode its KV pool was built for"
    handoff.record(handoff.Decision("sglang", reason, mode + (f": {why}" if why else "")))
    refusal = sglang_mode.page_size_refusal(runner, fia_mode)
    if refusal is not None:
        raise UnsupportedConfiguration(f"sglang-ascend-fia: {refusal}")
    _refuse_without_torch_npu(reason)
    sglang_mode.keep_batches_sglang_can_run(reason)
    with sglang_mode.scoped(fia_mode):
        return build()


def _refuse_without_torch_npu(reason: str) -> None:
    """sglang's own ``AscendAttnBackend`` imports ``torch_npu`` at top level
    (ascend_backend.py:7-11): on a host without it a hand-off would end start-up in an
    ``ImportError`` traceback. Say instead, in one line, what was handed off and why it cannot
    run here."""
    import importlib.util

    from sglang_ascend_fia.fia_backend.base import UnsupportedConfiguration

    if importlib.util.find_spec("torch_npu") is None:
        raise UnsupportedConfiguration(
            f"sglang-ascend-fia: this model is handed to sglang's own AscendAttnBackend "
            f"({reason}), which needs torch_npu, and torch_npu is not installed here"
        )
