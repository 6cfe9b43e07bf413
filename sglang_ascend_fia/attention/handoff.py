"""When the FIA backend hands a model to sglang's own ``AscendAttnBackend``, and why.

The FIA backend implements causal MHA/GQA self-attention over float paged KV caches. Anything
else a model or a server setting asks for is served by sglang's own backend (the wrapped
``create_ascend_backend``), so every model stock sglang serves on an NPU still starts with
``ASCEND_USE_FIA=1``. The choice is made once per ``ModelRunner``, when sglang builds its
attention backend: ``ModelRunner.initialize`` loads the model first (``load_model``,
model_executor/model_runner.py:715) and builds backends later (``init_attention_backends``,
model_runner.py:1105), so the per-layer properties on the model's ``RadixAttention`` modules
(``logit_cap``, ``attn_type``, ``is_cross_attention``, ``sliding_window_size``) are visible here.

Each decision is logged as one line and kept in :func:`decisions` for ``doctor``.
Importing this module imports nothing from sglang.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

# What makes the FIA backend hand off; shown by ``doctor``.
HANDOFF_RULES = (
    "speculative decoding (target verify / draft workers)",
    "encoder-decoder, cross, encoder-only and other non-causal attention",
    "sliding-window attention and learned attention sinks",
    "a layer with logit_cap (logit soft-capping, e.g. Grok's 30)",
    "context parallel attention",
    "KV caches that are quantized, FP8, in another dtype than the model, or in the HND layout",
)


@dataclass(frozen=True)
class Decision:
    """One attention-backend choice made in this process."""

    backend: str  # "fia", "fia-mla" or "sglang" (sglang's own AscendAttnBackend)
    reason: str  # why sglang's own backend was chosen; "" for fia


_decisions: list[Decision] = []


def decisions() -> list[Decision]:
    """Every attention-backend choice made in this process, oldest first."""
    return list(_decisions)


def record(decision: Decision) -> None:
    _decisions.append(decision)
    if decision.backend == "sglang":
        logger.warning(
            "sglang-ascend-fia: attention runs on sglang's own AscendAttnBackend, not FIA: %s",
            decision.reason,
        )


def handoff_reason(runner: Any) -> str | None:
    """Why ``runner``'s model or settings need sglang's own backend, or None for FIA."""
    for check in (_model_reason, _settings_reason, _kv_cache_reason, _layers_reason):
        reason = check(runner)
        if reason is not None:
            return reason
    return None


def _model_reason(runner: Any) -> str | None:
    if runner.use_mla_backend:
        return "the model uses MLA; the FIA backend serves MHA/GQA models"
    config = runner.model_config
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder (cross) attention is not implemented by the FIA backend"
    if getattr(config, "has_attention_sinks", False):
        return "learned attention sinks are not implemented by the FIA backend"
    if runner.is_hybrid_swa or runner.sliding_window_size is not None:
        return "sliding-window attention is not implemented by the FIA backend"
    return None


def _settings_reason(runner: Any) -> str | None:
    from sglang.srt.runtime_context import get_parallel

    if not runner.spec_algorithm.is_none() or runner.is_draft_worker:
        return (
            "speculative decoding (--speculative-algorithm) is not implemented by the FIA backend"
        )
    parallel = get_parallel()
    if parallel.attn_cp_size > 1 or parallel.dcp_enabled:
        return "context parallel attention is not implemented by the FIA backend"
    return None


def _kv_cache_reason(runner: Any) -> str | None:
    pool = runner.token_to_kv_pool
    if not all(hasattr(pool, a) for a in ("head_num", "head_dim", "v_head_dim")):
        return f"the KV pool {type(pool).__name__} is not an MHA token-to-KV pool"
    if getattr(pool, "use_hnd", False):
        return "the HND KV-cache layout (SGLANG_USE_HND_KVCACHE) is not paged the way FIA reads"
    if getattr(pool, "is_quantized_kv_cache", False):
        return "quantized KV caches are not implemented by the FIA backend"
    kv_dtype = runner.kv_cache_dtype
    # A cache in the model's own dtype stays with FIA; the backend refuses a model dtype that
    # no FIA call takes (fp32 on an NPU, fp64), which sglang's own backend cannot run either.
    if kv_dtype != runner.dtype:
        return (
            f"--kv-cache-dtype {str(kv_dtype).removeprefix('torch.')} with a "
            f"{str(runner.dtype).removeprefix('torch.')} model: the FIA backend reads a KV "
            "cache in the model's float dtype only"
        )
    return None


def _layers_reason(runner: Any) -> str | None:
    model = getattr(runner, "model", None)
    if model is None:
        return None
    for layer in attention_layers(model):
        reason = layer_reason(layer)
        if reason is not None:
            return f"layer {layer.layer_id}: {reason}"
    return None


def attention_layers(model: torch.nn.Module) -> list[Any]:
    """The model's ``RadixAttention`` modules, in module order."""
    from sglang.srt.layers.radix_attention import RadixAttention

    return [m for m in model.modules() if isinstance(m, RadixAttention)]


def layer_reason(layer: Any) -> str | None:
    """Why one ``RadixAttention`` layer needs more than causal self-attention, or None."""
    from sglang.srt.layers.radix_attention import AttentionType

    if layer.logit_cap:
        return f"logit_cap={layer.logit_cap} (logit soft-capping) is not implemented by FIA"
    if layer.is_cross_attention:
        return "cross attention is not implemented by the FIA backend"
    if layer.attn_type != AttentionType.DECODER:
        return f"non-causal attention ({layer.attn_type.name}) is not implemented by FIA"
    if layer.sliding_window_size is not None and layer.sliding_window_size > -1:
        return f"sliding window {layer.sliding_window_size} is not implemented by FIA"
    return None
