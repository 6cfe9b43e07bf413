"""Where sglang 0.5.23's in-tree Ascend backend departs from HF on the test bed, with the cause.

Each finding names the upstream ``file:line`` that causes it and the error text it produces
through the torch_npu stand-in; the engine tests accept a departure from HF only when it matches
one of these, and fail if a finding no longer happens (so this list stays true). TEST-ONLY.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    run: str  # the engine run of test_engine_side_by_side that shows it
    mode: str  # the forward mode that raises
    error: str  # text of the error raised in that forward
    cause: str  # upstream file:line and why
    head_dims: tuple[int, ...] = (16, 128)  # the test models' head dims where it happens


UPSTREAM_FIA_MIXED_BLOCK_SIZE = Finding(
    run="upstream-fia+mixed",
    mode="MIXED",
    error="block_size=1 is not allowed",
    # With --enable-mixed-chunk (mixed batches reach forward_mixed on an NPU).
    cause=(
        "hardware_backend/npu/attention/ascend_backend.py:3517 reads "
        "`num_block, block_size, _, _ = k_cache.shape`, but with ASCEND_USE_FIA=1 the pool's "
        "per-layer key buffer is a [pages*page_size, 1, heads, dim] view "
        "(hardware_backend/npu/memory_pool_npu.py:175-189), so forward_mixed calls FIA with "
        "block_size=1 and page-unit block tables; a prompt page-attention call needs a multiple "
        "of 128 (FIA doc), and block_size=1 would read the wrong slots anyway"
    ),
)

UPSTREAM_MIXED_TND_OUTSIDE_ITS_SET = Finding(
    run="upstream",
    mode="MIXED",
    error="TND with page attention is accepted only at",
    # With --enable-mixed-chunk and ASCEND_USE_FIA unset (the ATB path).
    cause=(
        "hardware_backend/npu/attention/ascend_backend.py:3482-3540 (forward_mixed) calls FIA "
        "with input_layout='TND' and a block table at every head dim, while the same file's "
        "_can_use_tnd (ascend_backend.py:459-464) keeps TND + paged to head dims 128/192/256 "
        "and sends the rest through per-request BSND; at head dim 16 the stand-in (the plugin's "
        "reference, which applies that rule) refuses the call (inferred: the rule is upstream's, "
        "the public FIA doc does not state it)"
    ),
    head_dims=(16,),
)

FINDINGS = (UPSTREAM_FIA_MIXED_BLOCK_SIZE, UPSTREAM_MIXED_TND_OUTSIDE_ITS_SET)

# Not a departure from HF but a limit of the test bed (tests/upstream/test_deepseek_standin.py):
# stock DeepSeek's own NPU attention steps cannot run on the CPU stand-in at all.
UPSTREAM_DEEPSEEK_NPU_STEPS_NEED_AN_NPU = Finding(
    run="upstream",
    mode="EXTEND",
    error="name 'forward_mha_prepare_npu' is not defined",
    cause=(
        "models/deepseek_v2.py:255-263 imports the NPU attention steps "
        "(hardware_backend/npu/modules/deepseek_v2_attention_mla_npu.py) only when is_npu() "
        "holds at import, i.e. on a real NPU device; with --attention-backend ascend the "
        "dispatch still picks AttnForwardMethod.MHA_NPU and calls forward_mha_prepare_npu "
        "(deepseek_v2.py:2458), so on the CPU stand-in the first prefill raises NameError"
    ),
    head_dims=(192,),
)


def explains(run: str, error: str, head_dim: int) -> Finding | None:
    """The finding that explains ``error`` in ``run`` at ``head_dim``, if any."""
    return next(
        (f for f in FINDINGS if f.run == run and head_dim in f.head_dims and f.error in error),
        None,
    )


@dataclass(frozen=True)
class RoutingFinding:
    """A MoE routing that sglang 0.5.23's NPU path (``TopK.forward_npu``) gets wrong vs HF."""

    case: str  # the testbed.moe_layers.DEEPSEEK case (tests/moe/test_moe_npu_dispatch.py)
    cause: str  # upstream file:line and why


UPSTREAM_NPU_SIGMOID_RENORMALISED = RoutingFinding(
    case="v3-sigmoid-unnormalised",
    cause=(
        "hardware_backend/npu/moe/topk.py:72-101 (fused_topk_npu) calls npu_moe_gating_top_k "
        "with renorm=renormalize and norm_type=1 for sigmoid; the kernel renormalises sigmoid "
        "whatever renorm says (needRenorm = normType == 1 || renorm == 1 in the CANN kernel "
        "moe_gating_top_k_generalized.h, as ops.moe_gating_top_k models it; inferred for the "
        "shipped kernel, which verify-ops checks on an NPU), so a DeepSeek-V3 model with "
        "norm_topk_prob=False gets top-k weights that sum to routed_scaling_factor instead of "
        "HF's raw sigmoid scores: every token departs"
    ),
)

UPSTREAM_NPU_GROUP_SELECT_MODE = RoutingFinding(
    case="v2-grouped-softmax",
    cause=(
        "hardware_backend/npu/moe/topk.py:88 passes group_select_mode=1 (a group scores by the "
        "sum of its best two experts) for every grouped call; DeepSeek-V2's "
        "group_limited_greedy (HF, and sglang's own grouped_topk) scores a group by its best "
        "expert, so tokens whose two rules pick different groups depart. Softmax without a "
        "correction bias reaches that call only with a num_token_non_padded bound in the "
        "forward context (EP > 1, DP-attention gather, custom all-to-all: "
        "model_executor/forward_batch_info.py:2271-2285); without one fused_topk_npu falls back "
        "to select_experts (topk.py:103-113), which is right"
    ),
)

ROUTING_FINDINGS = (UPSTREAM_NPU_SIGMOID_RENORMALISED, UPSTREAM_NPU_GROUP_SELECT_MODE)


@dataclass(frozen=True)
class WindowFinding:
    """A sliding window that sglang 0.5.23's ``AscendAttnBackend`` does not apply."""

    model: str  # the test-bed model that shows it (tests/e2e/test_fia_handoff.py)
    cause: str  # upstream file:line and why


UPSTREAM_WINDOW_IGNORED_WITHOUT_HYBRID_SWA = WindowFinding(
    model="testbed.models.build_olmo3 (every layer a 32-token window)",
    cause=(
        "hardware_backend/npu/attention/ascend_backend.py:452-457 (_is_swa_layer) counts a "
        "layer's sliding_window_size only when the model runner is hybrid SWA, and "
        "forward_extend / forward_decode take their windowed FIA calls only for such layers or "
        "for layers with sinks (ascend_backend.py:1728); a model whose RadixAttention layers "
        "carry a window but whose architecture is not in is_hybrid_swa_model's list "
        "(configs/model_config.py:2651-2697; OLMo-3 served as Olmo2ForCausalLM, and inferred "
        "for Gemma-2 and others) is attended with plain causal masks, so past the window "
        "every token equals HF's full-attention answer, not the windowed one"
    ),
)
