"""When the FIA backends hand a model to sglang's own ``AscendAttnBackend``, and why.

The FIA backend implements causal MHA/GQA self-attention over float paged KV caches, the FIA MLA
backend DeepSeek-V2/V3-style MLA through the patched ``DeepseekV2AttentionMLA`` steps. Anything
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sglang_ascend_fia.ops.fia.rules import (
    MLA_DIM,
    MLA_ROPE_DIM,
    TND_HEADS,
    TND_MAX_TOKENS,
    TND_ROPE_HEAD_DIM,
)

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

# What makes the FIA MLA backend hand an MLA model off; shown by ``doctor``.
MLA_HANDOFF_RULES = (
    "speculative decoding (target verify / draft workers) and context parallel attention",
    "DeepSeek sparse attention (DSA / NSA indexer models) and sliding-window MLA",
    "attention dims other than kv_lora_rank 512 / qk_rope_head_dim 64 / qk_nope_head_dim 128 / "
    "v_head_dim 128, more than 128 query heads per rank, or a context longer than one TND "
    "prefill launch attends (1M tokens) (FIA's MLA calls take these only)",
    "MLA caches that are quantized, in another dtype than the model, or in FIA's NZ layout "
    "(SGLANG_USE_FIA_NZ)",
    "sglang's fused MLA preprocess (SGLANG_NPU_USE_MLAPO) and the all-gather after q_lora "
    "(SGLANG_USE_AG_AFTER_QLORA), and Mistral-Large-3's llama_4_scaling",
    "MLA attention modules whose forward steps are not DeepseekV2AttentionMLA's own",
)


@dataclass(frozen=True)
class Decision:
    """One attention-backend choice made in this process."""

    backend: str  # "fia", "fia-mla" or "sglang" (sglang's own AscendAttnBackend)
    reason: str  # why sglang's own backend was chosen; "" for fia
    sglang_mode: str = ""  # the mode sglang's own backend runs in, and why; "" for fia


_decisions: list[Decision] = []


def decisions() -> list[Decision]:
    """Every attention-backend choice made in this process, oldest first."""
    return list(_decisions)


def record(decision: Decision) -> None:
    _decisions.append(decision)
    if decision.backend == "sglang":
        logger.warning(
            "sglang-ascend-fia: attention runs on sglang's own AscendAttnBackend, not FIA: %s%s",
            decision.reason,
            f" (in its {decision.sglang_mode})" if decision.sglang_mode else "",
        )


def handoff_reason(runner: Any) -> str | None:
    """Why ``runner``'s model or settings need sglang's own backend, or None for FIA."""
    for check in (
        _model_reason,
        _settings_reason,
        _kv_cache_reason,
        _kv_dtype_reason,
        _layers_reason,
    ):
        reason = check(runner)
        if reason is not None:
            return reason
    return None


def pre_pool_handoff_reason(runner: Any) -> str | None:
    """What :func:`handoff_reason` (MHA) or :func:`mla_handoff_reason` (MLA) says before the KV
    pool exists (``ModelRunner.alloc_memory_pool``): every check but those reading the pool, and
    the kernel check and patch groups the registry adds."""
    checks: tuple[Callable[[Any], str | None], ...]
    if runner.use_mla_backend:
        checks = (
            lambda r: group_reason(MLA_GROUP),
            _settings_reason,
            _mla_model_reason,
            _mla_dims_reason,
            _mla_kv_dtype_reason,
            _mla_env_reason,
            _mla_layers_reason,
            lambda r: kernel_reason("mla"),
        )
    else:
        checks = (
            _model_reason,
            _settings_reason,
            _kv_dtype_reason,
            _layers_reason,
            lambda r: kernel_reason("attention"),
        )
    for check in checks:
        reason = check(runner)
        if reason is not None:
            return reason
    return None


# The manifest group the FIA MLA backend needs whole (patches/deepseek_mla.toml, mla_kv_pool.toml).
MLA_GROUP = "deepseek-mla"


def group_reason(group: str) -> str | None:
    """Why the patches ``group`` names are not all applied, or None: the FIA MLA backend is fed
    by the DeepSeek forward steps and the split pool, and serves nothing without them."""
    from sglang_ascend_fia import plugin

    return plugin.group_skip_reason(group)


def kernel_reason(feature: str) -> str | None:
    """Why the installed torch_npu cannot run ``feature``'s FIA calls, or None: checked at
    start-up, so a missing kernel hands off instead of failing the first request
    (``ops.kernels``)."""
    from sglang_ascend_fia.ops import kernels

    result = kernels.check(feature)
    return None if result.ok else f"the FIA path's kernels: {result.reason()}"


def _model_reason(runner: Any) -> str | None:
    if runner.use_mla_backend:
        # The registry sends MLA models to mla_handoff_reason and the FIA MLA backend.
        return "the model uses MLA; the FIA backend serves MHA/GQA models"
    config = runner.model_config
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder (cross) attention is not implemented by the FIA backend"
    if getattr(config, "has_attention_sinks", False):
        return "learned attention sinks are not implemented by the FIA backend"
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
    return None


def _kv_dtype_reason(runner: Any) -> str | None:
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
    """Every ``RadixAttention`` the model holds, submodule or not, each once, in module order.

    ``model.modules()`` walks registered submodules only. sglang's Transformers backend
    (``--model-impl transformers``) keeps its layers in a plain dict attribute
    (``models/transformers.py:651``, ``attention_instances``), which ``modules()`` never
    reaches; so every module's plain attributes are read too, and the lists, tuples and dicts
    among them (one level: where such a model keeps its layers)."""
    from sglang.srt.layers.radix_attention import RadixAttention

    found: dict[int, Any] = {}

    def add(value: object) -> None:
        if isinstance(value, RadixAttention):
            found.setdefault(id(value), value)

    for module in model.modules():
        add(module)
        for value in vars(module).values():
            if isinstance(value, dict):
                for item in value.values():
                    add(item)
            elif isinstance(value, list | tuple):
                for item in value:
                    add(item)
            else:
                add(value)
    return list(found.values())


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


# ------------------------------------------------------------------------------------- MLA
# The attention dims FIA's MLA calls take: decode reads the latent with a rope part, TND
# prefill with rope takes nope = v = 128 and N up to TND_HEADS[-1] (smaller counts are padded).
_MLA_LATENT_DIMS = (MLA_DIM, MLA_ROPE_DIM)
_MLA_PREFILL_DIMS = (TND_ROPE_HEAD_DIM, TND_ROPE_HEAD_DIM)
_MLA_MAX_HEADS = TND_HEADS[-1]
# The MLA prefill runs on FIA v2 (T <= 1M); a request never spans two launches.
_MLA_MAX_CONTEXT = TND_MAX_TOKENS[2]


def mla_handoff_reason(runner: Any) -> str | None:
    """Why ``runner``'s MLA model or settings need sglang's own backend, or None for FIA MLA."""
    for check in (
        _settings_reason,
        _mla_model_reason,
        _mla_dims_reason,
        _mla_kv_cache_reason,
        _mla_kv_dtype_reason,
        _mla_env_reason,
        _mla_layers_reason,
    ):
        reason = check(runner)
        if reason is not None:
            return reason
    return None


def _mla_model_reason(runner: Any) -> str | None:
    from sglang.srt.configs.model_config import is_deepseek_dsa

    hf_config = runner.model_config.hf_config
    if is_deepseek_dsa(hf_config):
        return "DeepSeek sparse attention (DSA) is not implemented by the FIA MLA backend"
    if runner.is_hybrid_swa:
        return "sliding-window MLA is not implemented by the FIA MLA backend"
    if getattr(hf_config, "llama_4_scaling", None) is not None:
        # deepseek_v2.py:3058-3059 (Mistral-Large-3): a per-position query scale the FIA MLA
        # forward steps do not apply.
        return "llama_4_scaling (Mistral-Large-3) is not implemented by the FIA MLA path"
    return None


def _mla_dims_reason(runner: Any) -> str | None:
    from sglang.srt.runtime_context import get_parallel

    config = runner.model_config
    latent = (config.kv_lora_rank, config.qk_rope_head_dim)
    if latent != _MLA_LATENT_DIMS:
        return (
            f"kv_lora_rank / qk_rope_head_dim {latent}: FIA's MLA decode takes {_MLA_LATENT_DIMS}"
        )
    prefill = (config.qk_nope_head_dim, config.v_head_dim)
    if prefill != _MLA_PREFILL_DIMS:
        return (
            f"qk_nope_head_dim / v_head_dim {prefill}: FIA's TND prefill with rope takes "
            f"{_MLA_PREFILL_DIMS}"
        )
    heads = config.get_num_attention_heads(get_parallel().attn_tp_size)
    if heads > _MLA_MAX_HEADS:
        return (
            f"{heads} query heads per rank exceed what FIA's TND prefill takes "
            f"(at most {_MLA_MAX_HEADS})"
        )
    if config.context_len > _MLA_MAX_CONTEXT:
        return (
            f"context length {config.context_len} exceeds the KV tokens one FIA TND prefill "
            f"launch attends ({_MLA_MAX_CONTEXT})"
        )
    return None


def _mla_kv_cache_reason(runner: Any) -> str | None:
    pool = runner.token_to_kv_pool
    if getattr(pool, "v_buffer", None) is None or not hasattr(pool, "kv_lora_rank"):
        return f"the KV pool {type(pool).__name__} is not the split latent/rope MLA pool"
    if getattr(pool, "use_fia_nz", False):
        return "the NZ MLA cache (SGLANG_USE_FIA_NZ) is not implemented by the FIA MLA backend"
    return None


def _mla_kv_dtype_reason(runner: Any) -> str | None:
    kv_dtype = runner.kv_cache_dtype
    if kv_dtype != runner.dtype:
        return (
            f"--kv-cache-dtype {str(kv_dtype).removeprefix('torch.')} with a "
            f"{str(runner.dtype).removeprefix('torch.')} model: the FIA MLA backend reads a "
            "latent cache in the model's float dtype only"
        )
    return None


def _mla_env_reason(runner: Any) -> str | None:
    from sglang.srt.environ import envs

    # Both change sglang's DeepSeek prepare step (deepseek_v2_attention_mla_npu.py:175-202,
    # 206-217), which the plugin's own prepare step replaces: serving them would drop them.
    if envs.SGLANG_NPU_USE_MLAPO.get():
        return (
            "the fused MLA preprocess (SGLANG_NPU_USE_MLAPO) is not implemented by the FIA MLA path"
        )
    if envs.SGLANG_USE_AG_AFTER_QLORA.get():
        return (
            "the all-gather after q_lora (SGLANG_USE_AG_AFTER_QLORA) is not implemented by the "
            "FIA MLA path"
        )
    return None


def _mla_layers_reason(runner: Any) -> str | None:
    """The FIA MLA backend is fed by the patched ``DeepseekV2AttentionMLA`` steps only."""
    model = getattr(runner, "model", None)
    if model is None:
        return None
    from sglang.srt.models.deepseek_v2 import DeepseekV2AttentionMLA

    owned: set[int] = set()
    for module in model.modules():
        if not isinstance(module, DeepseekV2AttentionMLA):
            continue
        for cls in type(module).__mro__:
            if cls is DeepseekV2AttentionMLA:
                break
            overridden = {"forward_prepare", "forward_core"} & set(vars(cls))
            if overridden:
                return (
                    f"{cls.__name__} overrides DeepseekV2AttentionMLA.{min(overridden)}, which "
                    "the FIA MLA path patches"
                )
        owned.update(id(m) for m in module.modules())
    for layer in attention_layers(model):
        if id(layer) not in owned:
            return (
                f"layer {layer.layer_id}: MLA attention outside DeepseekV2AttentionMLA is not "
                "implemented by the FIA MLA path"
            )
    return None
