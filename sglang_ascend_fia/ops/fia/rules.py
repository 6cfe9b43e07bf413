"""The documented FIA constraints that need no tensors, checked on plain ints.

Page sizes, head ratios, sparse modes, float dtypes, and the limits of each scenario (both
branches' sizes, TND, MLA), which :mod:`.scenarios` checks once :mod:`.plan` has resolved a call's
geometry. One source of truth for the op validator and for the attention backends, which import
their limits from here and check ``--page-size`` with :func:`check_page_size` when constructed.

Doc source: torch_npu 2.14.0 ``_op_plugin_docs.py``: ``npu_fused_infer_attention_score`` (v1)
sections "query_rope和key_rope参数约束", "TND场景下...综合限制", "当Q_S为1时", "当Q_S大于1时",
and ``npu_fused_infer_attention_score_v2`` (v2), whose MLA and TND sections differ from v1's:
where they do, each version is held to its own doc (``scenarios.CallShape.version``). Summary,
rule by rule: ``docs/ops-semantics.md``, section ``npu_fused_infer_attention_score``.
"""

from __future__ import annotations

from sglang_ascend_fia.ops._checks import FLOAT_DTYPES, HALF_DTYPES, fail

OP = "fused_infer_attention_score"

INT32_MAX = 2147483647
"""The default of ``pre_tokens``/``next_tokens`` (no band), and the element limit of a paged
cache."""

LAYOUTS: dict[str, tuple[str, str, int]] = {
    "BSH": ("BSH", "BSH", 3),
    "BSND": ("BSND", "BSND", 4),
    "BNSD": ("BNSD", "BNSD", 4),
    "BNSD_BSND": ("BNSD", "BSND", 4),
    "TND": ("TND", "TND", 3),
}
"""input_layout -> (query layout, output layout, query rank); the meta registration's
``LAYOUT_MAP`` restricted to the layouts FIA v1 documents."""

V2_ONLY_LAYOUTS = ("BSH_NBSD", "BSND_NBSD", "BNSD_NBSD", "TND_NTD", "NTD_TND")
"""v2 layouts the kernel documents but the reference does not model (output N-first)."""

NPU_FLOAT_DTYPES = HALF_DTYPES
"""The float query/KV dtypes FIA takes on an NPU (float16, bfloat16)."""
REFERENCE_FLOAT_DTYPES = FLOAT_DTYPES
"""The float dtypes the reference takes off the NPU: the NPU's and float32 (the CPU test bed
compares whole models with HF in fp32); float32 on an NPU tensor is refused as the kernel would."""

SUPPORTED_SPARSE_MODES = (0, 1, 2, 3, 4)
"""Modes the doc lists as implemented ("参数sparse_mode当前仅支持值为0、1、2、3、4的场景")."""

SPARSE_RIGHT_DOWN_CAUSAL = 3
"""Causal, aligned bottom-right on each request's KV ("rightDownCausal"); reads the 2048x2048
mask template."""

TREE_MASK_SPARSE_MODE = 9
"""v1 only: "sparse_mode为9时, 代表treeMask模式 ... 仅MLA场景(query_rope和key_rope不为空)支持"."""

MAX_GQA_RATIO = 64
"""num_heads / num_key_value_heads may not exceed this ("比值不能大于64")."""

MAX_3D_CACHE_HIDDEN = 65535
"""Page attention with a ``(blocknum, block_size, KV_N*D)`` cache rejects KV_N*D above this."""

MAX_BLOCK_SIZE = 512
MASK_TEMPLATE_SIZE = 2048
"""sparse_mode 2/3/4 take a 2048x2048 lower-triangular template, not the mask itself."""

MAX_ROPE_PAGED_QUERY_S = 16
"""With query_rope and page attention the query S must be 1-16 ("query的S为1-16")."""

# Size limits of both branches ("当Q_S为1时" / "当Q_S大于1时").
MAX_BATCH = 65536
MAX_HEADS = 256
MAX_HEAD_DIM = 512
MAX_DECODE_S = 262144  # Q_S=1: "支持S轴小于等于262144"
MAX_PROMPT_S = 20971520  # Q_S>1: "S支持小于等于20971520(20M)"
MAX_PROMPT_HIDDEN = 65535  # Q_S>1, BSH/BSND: "要求N*D小于65535" (strictly less)
PROMPT_HEAD_DIM_ALIGN = 16  # Q_S>1, float: "全为float16、bfloat16时, D轴需16对齐" (32 with int8)

# TND without page attention.
TND_HEADS = (8, 16, 32, 64, 128)  # v1: "N等于8/16/32/64/128, 且Q_N、K_N、V_N相等"
TND_MAX_TOKENS = {1: 65536, 2: 1 << 20}  # v1 "T小于等于65536"; v2 "T小于等于1M"
TND_MAX_BATCH_V2 = 4096  # v2: "actual_seq_qlen和actual_seq_kvlen的元素个数不大于4096"
# TND with query_rope/key_rope (v2 doc, applied to v1 too, see check below): Q_D = K_D = V_D.
TND_ROPE_HEAD_DIM = 128

# TND with page attention: the (D, V_D) pairs sglang 0.5.23 sends through one multi-request TND
# paged call (``_can_use_tnd``, hardware_backend/npu/attention/ascend_backend.py:459-464). Its
# comment says newer CANN supports multi-batch there; the public doc states no such form, so
# only the pairs upstream runs on hardware are accepted (inferred).
TND_PAGED_HEAD_DIMS = ((128, 128), (192, 192), (256, 256), (192, 128))

# MLA (query_rope/key_rope).
MLA_DIM = 512
MLA_ROPE_DIM = 64
MLA_BAND_HEADS = 128  # v1, sparse 4: "N为128"
MLA_BAND_MAX_KV_S = 131088  # v1, sparse 4: "key的S不大于131088"
MLA_V2_HEADS = (1, 2, 4, 8, 16, 32, 64, 128)  # v2, D=512: "query的n为1/2/4/8/16/32/64/128"
MLA_LAYOUTS = {1: ("BSH", "BSND", "BNSD"), 2: ("BSH", "BSND", "BNSD", "TND")}


def check_block_size(
    block_size: int,
    *,
    prefill: bool,
    rope: bool,
    sparse_mode: int = 0,
    kv_int8: bool = False,
    nz: bool = False,
) -> None:
    """Raise ``ValueError`` unless ``block_size`` is a legal FIA page-attention block size.

    Rules (doc, quoted above):

    - ``rope`` (MLA, query_rope/key_rope given): 16 or 128, not 16 with an NZ cache; with
      ``sparse_mode=4`` 64 or 128. This replaces the two rules below: it is the doc's MLA section.
    - ``prefill`` (Q_S > 1, PromptFlashAttention branch): a multiple of 128 in [128, 512].
    - decode (Q_S == 1, IncreFlashAttention branch): non-zero, at most 512, a multiple of 16, or
      of 32 when the KV cache is int8 ("key、value输入类型为int8时需要32对齐").
    """
    if not isinstance(block_size, int) or isinstance(block_size, bool):
        fail(OP, "block_size", block_size, "must be an int")
    if rope:
        legal = (64, 128) if sparse_mode == 4 else (128,) if nz else (16, 128)
        if block_size not in legal:
            why = " for sparse_mode=4" if sparse_mode == 4 else " with an NZ cache" if nz else ""
            fail(
                OP,
                "block_size",
                block_size,
                f"with query_rope/key_rope (MLA) page attention needs block_size in {legal}{why}",
            )
        return
    if prefill:
        if not (128 <= block_size <= MAX_BLOCK_SIZE and block_size % 128 == 0):
            fail(
                OP,
                "block_size",
                block_size,
                "a prompt (Q_S>1) page-attention call needs a multiple of 128 in [128, 512]",
            )
        return
    align = 32 if kv_int8 else 16
    if not (0 < block_size <= MAX_BLOCK_SIZE and block_size % align == 0):
        fail(
            OP,
            "block_size",
            block_size,
            f"a decode (Q_S=1) page-attention call needs a non-zero multiple of {align} up to 512"
            f"{' (int8 KV cache)' if kv_int8 else ''}",
        )


def _is_legal(block_size: int, *, prefill: bool, rope: bool) -> bool:
    try:
        check_block_size(block_size, prefill=prefill, rope=rope)
    except ValueError:
        return False
    return True


def legal_page_sizes(*, mla: bool) -> tuple[int, ...]:
    """Page sizes that every paged FIA call the attention backend makes accepts.

    A server runs both prompt (Q_S>1) and decode (Q_S=1) calls on the same paged cache, so a page
    size must pass both rules. MHA/GQA: prompt ∩ decode = (128, 256, 384, 512) (the doc's
    "multiple of 128 in [128, 512]" admits 384 as well as the powers of two). MLA: its decode call
    carries query_rope (16 or 128) and its chunked-prefix prompt pages the cache too, so the
    intersection is (128,).
    """
    candidates = range(16, MAX_BLOCK_SIZE + 1, 16)
    rope_modes = (True,) if mla else (False,)
    return tuple(
        size
        for size in candidates
        if _is_legal(size, prefill=True, rope=False)
        and all(_is_legal(size, prefill=False, rope=rope) for rope in rope_modes)
    )


def check_page_size(page_size: int, *, mla: bool) -> None:
    """Raise ``ValueError`` naming ``--page-size`` unless it is in :func:`legal_page_sizes`."""
    legal = legal_page_sizes(mla=mla)
    if page_size not in legal:
        kind = "MLA" if mla else "MHA/GQA"
        raise ValueError(
            f"--page-size={page_size!r} is not allowed: FIA page attention for {kind} models "
            f"accepts page sizes {legal} (prompt calls need a multiple of 128 in [128, 512]; "
            f"decode calls a multiple of 16 up to 512; MLA rope calls 16 or 128)"
        )


def check_head_counts(num_heads: int, num_key_value_heads: int, *, mla: bool = False) -> int:
    """Validate the GQA head counts; return the effective KV head count (0 means num_heads).

    The ratio limit is not applied to MLA (``mla``: query_rope/key_rope given) (inferred): the
    MLA sections require one key head with up to 128 query heads (v1 sparse_mode 4 requires 128).
    Rejected: applying it, which makes the documented MLA forms with more than 64 heads illegal.
    """
    if num_heads <= 0:
        fail(OP, "num_heads", num_heads, "must be positive")
    if num_key_value_heads < 0:
        fail(OP, "num_key_value_heads", num_key_value_heads, "must be >= 0 (0 means num_heads)")
    nkv = num_key_value_heads or num_heads
    if num_heads % nkv != 0:
        fail(
            OP,
            "num_key_value_heads",
            num_key_value_heads,
            f"num_heads={num_heads} must be divisible by num_key_value_heads",
        )
    if num_heads // nkv > MAX_GQA_RATIO and not mla:
        fail(
            OP,
            "num_key_value_heads",
            num_key_value_heads,
            f"num_heads/num_key_value_heads={num_heads // nkv} exceeds {MAX_GQA_RATIO}",
        )
    return nkv


def check_sparse_mode(sparse_mode: int, *, rope: bool, version: int = 1) -> None:
    """0-4 everywhere; 9 (treeMask) only in v1 and only with query_rope/key_rope (MLA)."""
    if sparse_mode in SUPPORTED_SPARSE_MODES:
        return
    if sparse_mode == TREE_MASK_SPARSE_MODE and version == 1:
        if not rope:
            fail(
                OP, "sparse_mode", sparse_mode, "9 (treeMask) needs query_rope/key_rope (MLA only)"
            )
        return
    if version == 1:
        legal = (*SUPPORTED_SPARSE_MODES, TREE_MASK_SPARSE_MODE)
        fail(
            OP,
            "sparse_mode",
            sparse_mode,
            f"must be one of {legal} (9 with query_rope/key_rope only)",
        )
    fail(OP, "sparse_mode", sparse_mode, f"the v2 op takes one of {SUPPORTED_SPARSE_MODES}")


def tnd_paged_supported(head_dim: int, v_head_dim: int) -> bool:
    """Whether a TND query with page attention is accepted at these head dims (see above)."""
    return (head_dim, v_head_dim) in TND_PAGED_HEAD_DIMS
