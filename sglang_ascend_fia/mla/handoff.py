"""When the FIA MLA backend hands an MLA model to sglang's own ``AscendAttnBackend``: its rules.

The FIA MLA backend serves DeepSeek-V2/V3-style MLA through the patched ``DeepseekV2AttentionMLA``
steps and the split latent/rope pool (manifest group ``deepseek-mla``), at the attention dims
FIA's MLA calls take. The registry checks :data:`RULES` once per ``ModelRunner``, after the
model is loaded (``model_executor/model_runner.py:715``, ``:1105``).
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
    group_rule,
    kernel_rule,
    kv_dtype_reason,
)
from sglang_ascend_fia.ops.fia.rules import (
    MLA_DIM,
    MLA_ROPE_DIM,
    TND_HEADS,
    TND_MAX_TOKENS,
    TND_ROPE_HEAD_DIM,
)

# The manifest group the FIA MLA backend needs whole (patches/deepseek_mla.toml, mla_kv_pool.toml).
GROUP = "deepseek-mla"

# The attention dims FIA's MLA calls take: decode reads the latent with a rope part, TND
# prefill with rope takes nope = v = 128 and N up to TND_HEADS[-1] (smaller counts are padded).
LATENT_DIMS = (MLA_DIM, MLA_ROPE_DIM)
PREFILL_DIMS = (TND_ROPE_HEAD_DIM, TND_ROPE_HEAD_DIM)
MAX_HEADS = TND_HEADS[-1]
# The MLA prefill runs on FIA v2 (T <= 1M); a request never spans two launches.
MAX_CONTEXT = TND_MAX_TOKENS[2]


def _model(runner: Any) -> str | None:
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


def _dims(runner: Any) -> str | None:
    from sglang.srt.runtime_context import get_parallel

    config = runner.model_config
    latent = (config.kv_lora_rank, config.qk_rope_head_dim)
    if latent != LATENT_DIMS:
        return f"kv_lora_rank / qk_rope_head_dim {latent}: FIA's MLA decode takes {LATENT_DIMS}"
    prefill = (config.qk_nope_head_dim, config.v_head_dim)
    if prefill != PREFILL_DIMS:
        return (
            f"qk_nope_head_dim / v_head_dim {prefill}: FIA's TND prefill with rope takes "
            f"{PREFILL_DIMS}"
        )
    heads = config.get_num_attention_heads(get_parallel().attn_tp_size)
    if heads > MAX_HEADS:
        return (
            f"{heads} query heads per rank exceed what FIA's TND prefill takes "
            f"(at most {MAX_HEADS})"
        )
    if config.context_len > MAX_CONTEXT:
        return (
            f"context length {config.context_len} exceeds the KV tokens one FIA TND prefill "
            f"launch attends ({MAX_CONTEXT})"
        )
    return None


def _kv_pool(runner: Any) -> str | None:
    pool = runner.token_to_kv_pool
    if getattr(pool, "v_buffer", None) is None or not hasattr(pool, "kv_lora_rank"):
        return f"the KV pool {type(pool).__name__} is not the split latent/rope MLA pool"
    if getattr(pool, "use_fia_nz", False):
        return "the NZ MLA cache (SGLANG_USE_FIA_NZ) is not implemented by the FIA MLA backend"
    return None


def _kv_dtype(runner: Any) -> str | None:
    return kv_dtype_reason(runner, "the FIA MLA backend reads a latent cache")


def _environment(runner: Any) -> str | None:
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


def _layers(runner: Any) -> str | None:
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


# What makes the FIA MLA backend hand an MLA model off, in the order checked.
RULES: tuple[HandoffRule, ...] = (
    group_rule(GROUP),
    SPECULATIVE,
    CONTEXT_PARALLEL,
    HandoffRule(
        "DeepSeek sparse attention (DSA / NSA indexer models), sliding-window MLA and "
        "Mistral-Large-3's llama_4_scaling",
        "hf_config (DSA, llama_4_scaling), ModelRunner.is_hybrid_swa",
        _model,
    ),
    HandoffRule(
        f"attention dims other than kv_lora_rank {MLA_DIM} / qk_rope_head_dim {MLA_ROPE_DIM} / "
        f"qk_nope_head_dim {TND_ROPE_HEAD_DIM} / v_head_dim {TND_ROPE_HEAD_DIM}, more than "
        f"{MAX_HEADS} query heads per rank, or a context longer than one TND prefill launch "
        "attends (1M tokens) (FIA's MLA calls take these only)",
        "model_config (MLA dims, heads per rank, context_len)",
        _dims,
    ),
    HandoffRule(
        "MLA pools that are not the split latent/rope pool, or in FIA's NZ layout "
        "(SGLANG_USE_FIA_NZ)",
        "the KV pool; SGLANG_USE_FIA_NZ",
        _kv_pool,
        needs_pool=True,
    ),
    HandoffRule(
        "MLA caches in another dtype than the model (quantized and other --kv-cache-dtype)",
        "--kv-cache-dtype, --dtype",
        _kv_dtype,
    ),
    HandoffRule(
        "sglang's fused MLA preprocess (SGLANG_NPU_USE_MLAPO) and the all-gather after q_lora "
        "(SGLANG_USE_AG_AFTER_QLORA)",
        "SGLANG_NPU_USE_MLAPO, SGLANG_USE_AG_AFTER_QLORA",
        _environment,
    ),
    HandoffRule(
        "MLA attention modules whose forward steps are not DeepseekV2AttentionMLA's own",
        "every DeepseekV2AttentionMLA and RadixAttention layer the model holds",
        _layers,
    ),
    LAYER_COVERAGE,
    kernel_rule("mla"),
)
