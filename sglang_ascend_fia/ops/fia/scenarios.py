"""The FIA scenario rules, checked on a :class:`CallShape` that :mod:`.plan` resolved from a call.

Both branches' size limits (Q_S=1 and Q_S>1), TND without page attention, TND with page attention
and MLA (query_rope/key_rope): the rules that need a call's resolved geometry, where
:mod:`.rules` holds the limits and the checks on plain ints that the attention backend imports.
Doc sources and the rule-by-rule summary: :mod:`.rules` and ``docs/ops-semantics.md``, section
``npu_fused_infer_attention_score``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sglang_ascend_fia.ops._checks import fail
from sglang_ascend_fia.ops.fia.rules import (
    MAX_BATCH,
    MAX_DECODE_S,
    MAX_HEAD_DIM,
    MAX_HEADS,
    MAX_PROMPT_HIDDEN,
    MAX_PROMPT_S,
    MAX_ROPE_PAGED_QUERY_S,
    MLA_BAND_HEADS,
    MLA_BAND_MAX_KV_S,
    MLA_DIM,
    MLA_LAYOUTS,
    MLA_ROPE_DIM,
    MLA_V2_HEADS,
    OP,
    PROMPT_HEAD_DIM_ALIGN,
    TND_HEADS,
    TND_MAX_BATCH_V2,
    TND_MAX_TOKENS,
    TND_PAGED_HEAD_DIMS,
    TND_ROPE_HEAD_DIM,
    TREE_MASK_SPARSE_MODE,
    tnd_paged_supported,
)


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
