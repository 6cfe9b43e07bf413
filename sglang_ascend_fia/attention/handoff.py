"""When the FIA MHA/GQA backend hands a model to sglang's own ``AscendAttnBackend``: its rules.

The backend implements causal MHA/GQA self-attention over float paged KV caches. Anything else a
model or a server setting asks for is served by sglang's own backend (the wrapped
``create_ascend_backend``), so every model stock sglang serves on an NPU still starts with
``ASCEND_USE_FIA=1``. The registry checks :data:`RULES` once per ``ModelRunner``, when sglang
builds its attention backend: ``ModelRunner.initialize`` loads the model first (``load_model``,
model_executor/model_runner.py:715) and builds backends later (``init_attention_backends``,
model_runner.py:1105), so the per-layer properties on the model's ``RadixAttention`` modules
(``logit_cap``, ``attn_type``, ``is_cross_attention``, ``sliding_window_size``) are visible then.
Importing this module imports nothing from sglang.
"""

from __future__ import annotations

from typing import Any

from sglang_ascend_fia.fia_backend.handoff import (
    CONTEXT_PARALLEL,
    LAYER_COVERAGE,
    SPECULATIVE,
    HandoffRule,
    attention_layers,
    kernel_rule,
    kv_dtype_reason,
)


def _mla(runner: Any) -> str | None:
    if runner.use_mla_backend:
        # The registry sends MLA models to the FIA MLA backend (mla.handoff.RULES).
        return "the model uses MLA; the FIA backend serves MHA/GQA models"
    return None


def _encoder_decoder(runner: Any) -> str | None:
    if getattr(runner.model_config, "is_encoder_decoder", False):
        return "encoder-decoder (cross) attention is not implemented by the FIA backend"
    return None


def _sinks(runner: Any) -> str | None:
    if getattr(runner.model_config, "has_attention_sinks", False):
        return "learned attention sinks are not implemented by the FIA backend"
    return None


def _sliding_window(runner: Any) -> str | None:
    if runner.is_hybrid_swa:
        return "sliding-window attention is not implemented by the FIA backend"
    if runner.sliding_window_size is not None:
        # Said at hand-off so it is not silent: sglang's own backend windows only hybrid-SWA
        # models (ascend_backend.py:452-457, used at :1728); a test shows it on OLMo-3
        # (tests/support/upstream_findings.py). Remove when upstream applies every layer's window.
        return (
            "sliding-window attention is not implemented by the FIA backend; note that "
            "sglang 0.5.23's own AscendAttnBackend applies a window only to hybrid-SWA "
            f"architectures, so this model's window (sliding_window_size="
            f"{runner.sliding_window_size}) is not applied there either (attention past the "
            "window is full causal)"
        )
    return None


def _kv_pool(runner: Any) -> str | None:
    pool = runner.token_to_kv_pool
    if not all(hasattr(pool, a) for a in ("head_num", "head_dim", "v_head_dim")):
        return f"the KV pool {type(pool).__name__} is not an MHA token-to-KV pool"
    if getattr(pool, "use_hnd", False):
        return "the HND KV-cache layout (SGLANG_USE_HND_KVCACHE) is not paged the way FIA reads"
    if getattr(pool, "is_quantized_kv_cache", False):
        return "quantized KV caches are not implemented by the FIA backend"
    return None


def _kv_dtype(runner: Any) -> str | None:
    # A cache in the model's own dtype stays with FIA; the backend refuses a model dtype that
    # no FIA call takes (fp32 on an NPU, fp64), which sglang's own backend cannot run either.
    return kv_dtype_reason(runner, "the FIA backend reads a KV cache")


def _layers(runner: Any) -> str | None:
    model = getattr(runner, "model", None)
    if model is None:
        return None
    for layer in attention_layers(model):
        reason = layer_reason(layer)
        if reason is not None:
            return f"layer {layer.layer_id}: {reason}"
    return None


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


# What makes the FIA backend hand an MHA/GQA model off, in the order checked.
RULES: tuple[HandoffRule, ...] = (
    HandoffRule(
        "MLA models (the FIA MLA backend serves them)", "ModelRunner.use_mla_backend", _mla
    ),
    HandoffRule(
        "encoder-decoder (cross) attention",
        "model_config.is_encoder_decoder",
        _encoder_decoder,
    ),
    HandoffRule("learned attention sinks", "model_config.has_attention_sinks", _sinks),
    HandoffRule(
        "sliding-window attention (hybrid SWA or a model-wide window)",
        "ModelRunner.is_hybrid_swa, sliding_window_size",
        _sliding_window,
    ),
    SPECULATIVE,
    CONTEXT_PARALLEL,
    HandoffRule(
        "KV pools that are not an MHA token-to-KV pool, quantized, or in the HND layout",
        "the KV pool; SGLANG_USE_HND_KVCACHE",
        _kv_pool,
        needs_pool=True,
    ),
    HandoffRule(
        "a KV cache in another dtype than the model (FP8 and other --kv-cache-dtype)",
        "--kv-cache-dtype, --dtype",
        _kv_dtype,
    ),
    HandoffRule(
        "a layer with logit_cap (logit soft-capping, e.g. Grok's 30), cross attention, "
        "non-causal attention (encoder-only and others) or a sliding window",
        "every RadixAttention layer the model holds",
        _layers,
    ),
    LAYER_COVERAGE,
    kernel_rule("attention"),
)
