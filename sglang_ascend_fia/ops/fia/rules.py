"""The documented FIA constraints that need no tensors, checked on plain ints.

Page sizes, head ratios and sparse modes, plus the per-scenario limits (both branches' size
limits, TND without page attention, MLA) once :mod:`.plan` has resolved a call's geometry into
a :class:`CallShape`. One source of truth for the op validator and for the attention backend,
which imports its limits from here and checks ``--page-size`` with :func:`check_page_size` when
it is constructed.

Doc source: torch_npu 2.14.0 ``_op_plugin_docs.py``: ``npu_fused_infer_attention_score`` (v1)
sections "query_rope和key_rope参数约束", "TND场景下...综合限制", "当Q_S为1时", "当Q_S大于1时",
and ``npu_fused_infer_attention_score_v2`` (v2), whose MLA and TND sections differ from v1's:
where they do, each version is held to its own doc (``CallShape.version``). Summary, rule by
rule: ``docs/ops-semantics.md``, section ``npu_fused_infer_attention_score``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sglang_ascend_fia.ops._checks import fail

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

SUPPORTED_SPARSE_MODES = (0, 1, 2, 3, 4)
"""Modes the doc lists as implemented ("参数sparse_mode当前仅支持值为0、1、2、3、4的场景")."""

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


# ---------------------------------------------------------------------------------------------
# Scenario rules on a resolved call
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallShape:
    """What the scenario rules read of an FIA call, resolved from its tensors by :mod:`.plan`."""

    version: int  # 1 or 2: which op's doc governs where the two differ
    input_layout: str
    q_layout: str  # BSH | BSND | BNSD | TND
    q_s: int  # the query S axis, or the longest request for TND
    num_heads: int
    num_kv_heads: int
    q_dim: int
    v_dim: int
    rope_dim: int  # 0 without query_rope
    paged: bool
    nz: bool  # paged with a 5-D NZ cache
    int8: bool  # the query or the KV cache is int8
    sparse_mode: int
    mask_shape: tuple[int, ...] | None  # None without atten_mask
    q_lens: tuple[int, ...]
    kv_lens: tuple[int, ...]
    tokens: tuple[int, ...]  # dense TND: T of query, key and value
    pre_tokens: int
    next_tokens: int


def check_sizes(c: CallShape) -> None:
    """The size limits both branches document, and the prompt branch's D/N·D rules."""
    if len(c.q_lens) > MAX_BATCH:
        fail(OP, "query", f"B={len(c.q_lens)}", f"the batch must be <= {MAX_BATCH}")
    if c.num_heads > MAX_HEADS:
        fail(OP, "num_heads", c.num_heads, f"must be <= {MAX_HEADS}")
    for name, dim in (("query", c.q_dim), ("value", c.v_dim)):
        if dim > MAX_HEAD_DIM:
            fail(OP, name, f"D={dim}", f"the head dim must be <= {MAX_HEAD_DIM}")
    kv_s = max(c.kv_lens, default=0)
    if c.q_s <= 1:
        if kv_s > MAX_DECODE_S:
            fail(
                OP, "actual_seq_lengths_kv", f"max {kv_s}", f"Q_S=1 supports KV S <= {MAX_DECODE_S}"
            )
        return
    for name, s in (("query", c.q_s), ("actual_seq_lengths_kv", kv_s)):
        if s > MAX_PROMPT_S:
            fail(OP, name, f"S={s}", f"Q_S>1 supports S <= {MAX_PROMPT_S}")
    if c.rope_dim:
        # (inferred) The prompt-branch D and N·D rules are not applied to MLA calls: the v1 MLA
        # section fixes N=128, D=512, BSND for sparse_mode 4, whose N·D = 65536 the N·D rule
        # would refuse. Rejected: applying both, which makes the documented MLA form unusable.
        return
    # "包含int8时, D轴需要32对齐; 全为float16、bfloat16时, D轴需16对齐" (fp32, off the NPU: 16)
    align = 2 * PROMPT_HEAD_DIM_ALIGN if c.int8 else PROMPT_HEAD_DIM_ALIGN
    for name, dim in (("query", c.q_dim), ("value", c.v_dim)):
        if dim % align:
            fail(OP, name, f"D={dim}", f"Q_S>1 needs the head dim {align}-aligned")
    if c.input_layout in ("BSH", "BSND") and c.num_heads * c.q_dim >= MAX_PROMPT_HIDDEN:
        fail(
            OP,
            "query",
            f"N*D={c.num_heads * c.q_dim}",
            f"Q_S>1 with input_layout={c.input_layout} needs N*D < {MAX_PROMPT_HIDDEN}",
        )


def tnd_paged_supported(head_dim: int, v_head_dim: int) -> bool:
    """Whether a TND query with page attention is accepted at these head dims (see above)."""
    return (head_dim, v_head_dim) in TND_PAGED_HEAD_DIMS


def check_tnd_paged(c: CallShape) -> None:
    """TND with page attention, without rope: only at :data:`TND_PAGED_HEAD_DIMS` (inferred)."""
    if not tnd_paged_supported(c.q_dim, c.v_dim):
        fail(
            OP,
            "query/value D",
            (c.q_dim, c.v_dim),
            f"TND with page attention is accepted only at (D, V_D) in {TND_PAGED_HEAD_DIMS}, "
            "the pairs sglang 0.5.23 runs on hardware (ascend_backend.py:459-464); use BSND "
            "with per-request actual_seq_lengths for other head dims",
        )


def _mask_rule(c: CallShape, scenario: str, with_mask: tuple[int, ...]) -> None:
    """sparse_mode 0 takes no mask in these scenarios; the modes in ``with_mask`` need one."""
    if c.sparse_mode == 0 and c.mask_shape is not None:
        fail(OP, "atten_mask", c.mask_shape, f"{scenario} with sparse_mode=0 takes no mask")
    if c.sparse_mode in with_mask and c.mask_shape is None:
        fail(OP, "atten_mask", None, f"{scenario} with sparse_mode={c.sparse_mode} needs a mask")


def _q_not_longer_than_kv(c: CallShape, why: str) -> None:
    for b, (q, kv) in enumerate(zip(c.q_lens, c.kv_lens, strict=True)):
        if q > kv:
            fail(OP, "actual_seq_lengths", f"request {b}: {q} > kv {kv}", why)


def check_tnd_dense(c: CallShape) -> None:
    """TND without page attention ("TND场景下query、key、value输入的综合限制").

    Applied at any Q_S: the doc section is not scoped to one branch (inferred; sglang uses it at
    Q_S>1 only; rejected: Q_S>1 only, which would hand a TND
    MLA extend whose requests all have one new token to the D=512 page-attention MLA rules).
    The bf16-only rule needs the tensors and is checked in :mod:`.plan`.
    """
    limit = TND_MAX_TOKENS[c.version]
    for name, t in zip(("query", "key", "value"), c.tokens, strict=True):
        if t > limit:
            fail(OP, name, f"T={t}", f"TND without page attention needs T <= {limit}")
    if c.version == 1:
        if c.num_heads not in TND_HEADS or c.num_kv_heads != c.num_heads:
            fail(
                OP,
                "num_heads/num_key_value_heads",
                (c.num_heads, c.num_kv_heads),
                f"TND without page attention needs N in {TND_HEADS} with Q_N = K_N = V_N",
            )
    elif len(c.q_lens) > TND_MAX_BATCH_V2:
        fail(OP, "actual_seq_qlen", f"{len(c.q_lens)} entries", f"at most {TND_MAX_BATCH_V2} (v2)")
    dims = (c.q_dim, c.q_dim, c.v_dim)
    if c.rope_dim:
        # The v2 doc: with rope "要求Q_D、K_D、V_D等于128" and rope D 64. The v1 doc gives no TND
        # rope rule; v2's is applied to v1 too (inferred: same kernel; rejected: v1's no-rope
        # Q_D=192 read as nope+rope, which no doc states).
        if dims != (TND_ROPE_HEAD_DIM,) * 3 or c.rope_dim != MLA_ROPE_DIM:
            fail(
                OP,
                "query/key/value D, rope D",
                (*dims, c.rope_dim),
                "TND MLA without page attention needs Q_D = K_D = V_D = 128 and rope D 64",
            )
    else:
        legal = [(192, 192, 128), (192, 192, 192)] + ([(128, 128, 128)] if c.version == 2 else [])
        if dims not in legal:
            fail(OP, "query/key/value D", dims, f"TND without page attention needs one of {legal}")
    if c.sparse_mode not in (0, 3, 4):
        fail(OP, "sparse_mode", c.sparse_mode, "TND without page attention takes 0, 3 or 4")
    _mask_rule(c, "TND without page attention", with_mask=(3, 4))
    if c.sparse_mode == 3:
        # (inferred) The doc says actual_seq_qlen < actual_seq_kvlen per request; sglang 0.5.23
        # passes equal lengths (MLA extend, actual_seq_kvlen=cu_query_lens), so <= is enforced.
        # Rejected: the strict <, which would refuse plain causal self-attention.
        _q_not_longer_than_kv(c, "sparse_mode=3 needs each request's query length <= its KV")
    if c.sparse_mode == 4:
        # Per request (inferred: the doc names the lengths without saying cumulative or not).
        if any(c.pre_tokens < -q for q in c.q_lens) or any(c.next_tokens < -k for k in c.kv_lens):
            fail(
                OP,
                "pre_tokens/next_tokens",
                (c.pre_tokens, c.next_tokens),
                "sparse_mode=4 needs pre_tokens >= -q_len and next_tokens >= -kv_len per request",
            )
        if c.pre_tokens + c.next_tokens < 0:
            fail(
                OP,
                "pre_tokens/next_tokens",
                (c.pre_tokens, c.next_tokens),
                "sparse_mode=4 needs pre_tokens + next_tokens >= 0",
            )


def check_mla(c: CallShape) -> None:
    """query_rope/key_rope outside TND-without-paging (the doc's MLA sections, per version).

    The query head count rule of v1 ("N为32、64、128") is not enforced (inferred): sglang 0.5.23
    calls this kernel with 8-16 heads after power-of-two padding (a documentation gap; see
    ``docs/ops-semantics.md``), and the v2 doc lists 1/2/4/8/16/32/64/128 for the same kernel.
    v2 calls are held to v2's list. Rejected: enforcing v1's list, which refuses sglang's own
    MLA decode.
    """
    if c.version == 2 and c.q_dim == 128:
        fail(
            OP,
            "query",
            f"D={c.q_dim}",
            "MLA with a query D of 128 needs TND without page attention",
        )
    if c.q_dim != MLA_DIM or c.rope_dim != MLA_ROPE_DIM:
        fail(
            OP,
            "query/query_rope D",
            (c.q_dim, c.rope_dim),
            f"MLA needs D={MLA_DIM} and rope D={MLA_ROPE_DIM} (key D {MLA_DIM} too)",
        )
    if c.num_kv_heads != 1:
        fail(OP, "num_key_value_heads", c.num_kv_heads, "MLA needs one key head (key N=1)")
    decode = c.q_s <= 1
    if c.version == 2:
        mode = 0 if decode else 3
        if c.sparse_mode != mode:
            fail(
                OP,
                "sparse_mode",
                c.sparse_mode,
                f"v2 MLA with Q_S{'=1' if decode else '>1'} takes {mode}",
            )
        if c.num_heads not in MLA_V2_HEADS:
            fail(OP, "num_heads", c.num_heads, f"v2 MLA needs N in {MLA_V2_HEADS}")
    else:
        legal = (0, 4, 9) if decode else (3, 4, 9)
        if c.sparse_mode not in legal:
            fail(
                OP,
                "sparse_mode",
                c.sparse_mode,
                f"with query_rope/key_rope and Q_S{'=1' if decode else '>1'} only {legal}",
            )
    _mask_rule(c, "MLA", with_mask=(3, 4, 9))
    if c.sparse_mode == 4:
        if c.input_layout != "BSND" or c.num_heads != MLA_BAND_HEADS:
            fail(
                OP,
                "input_layout/num_heads",
                (c.input_layout, c.num_heads),
                f"MLA with sparse_mode=4 needs BSND and N={MLA_BAND_HEADS}",
            )
        if c.nz:
            fail(OP, "key", "NZ cache", "MLA with sparse_mode=4 takes only ND caches")
        if max(c.kv_lens, default=0) > MLA_BAND_MAX_KV_S:
            fail(OP, "actual_seq_lengths_kv", max(c.kv_lens), f"<= {MLA_BAND_MAX_KV_S} (sparse 4)")
        _q_not_longer_than_kv(c, "MLA with sparse_mode=4 needs each query S <= its key S")
        return
    if not c.paged:
        fail(OP, "block_table", None, f"MLA with sparse_mode={c.sparse_mode} needs page attention")
    if c.q_s > MAX_ROPE_PAGED_QUERY_S:
        fail(
            OP,
            "query",
            f"S={c.q_s}",
            f"MLA page attention supports query S 1-{MAX_ROPE_PAGED_QUERY_S}",
        )
    layouts = MLA_LAYOUTS[c.version]
    if c.input_layout not in layouts or (c.nz and c.input_layout == "BNSD"):
        fail(OP, "input_layout", c.input_layout, f"MLA takes {layouts} (not BNSD with an NZ cache)")
    if c.sparse_mode == TREE_MASK_SPARSE_MODE:
        _q_not_longer_than_kv(c, "sparse_mode=9 (treeMask) needs each query S <= its KV S")
