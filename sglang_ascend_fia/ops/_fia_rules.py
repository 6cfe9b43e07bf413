"""The documented FIA constraints that do not need tensors: page sizes, head ratios, sparse modes.

One source of truth for the op validator (``ops.attention``) and for the attention backend, which
checks ``--page-size`` with :func:`check_page_size` when it is constructed.

Doc source: torch_npu 2.14.0 ``_op_plugin_docs.py``, ``npu_fused_infer_attention_score``,
sections "page attention场景" under "当Q_S大于1时" and "当Q_S为1时", and "query_rope和key_rope
参数约束" (summarised in shared/notes/upstream-0.5.23.md §2.4 and §3.1).
"""

from __future__ import annotations

from typing import NoReturn

SUPPORTED_SPARSE_MODES = (0, 1, 2, 3, 4)
"""Modes the doc lists as implemented ("参数sparse_mode当前仅支持值为0、1、2、3、4的场景")."""

MAX_GQA_RATIO = 64
"""num_heads / num_key_value_heads may not exceed this ("比值不能大于64")."""

MAX_3D_CACHE_HIDDEN = 65535
"""Page attention with a ``(blocknum, block_size, KV_N*D)`` cache rejects KV_N*D above this."""

MAX_BLOCK_SIZE = 512
MASK_TEMPLATE_SIZE = 2048
"""sparse_mode 2/3/4 take a 2048x2048 lower-triangular template, not the mask itself."""

MAX_ROPE_PAGED_QUERY_S = 16
"""With query_rope and page attention the query S must be 1-16 ("query的S为1-16")."""


def _fail(argument: str, value: object, rule: str) -> NoReturn:
    raise ValueError(f"{argument}={value!r} is not allowed: {rule}")


def check_block_size(block_size: int, *, prefill: bool, rope: bool, sparse_mode: int = 0) -> None:
    """Raise ``ValueError`` unless ``block_size`` is a legal FIA page-attention block size.

    Rules (doc, quoted above):

    - ``rope`` (MLA, query_rope/key_rope given): 16 or 128; with ``sparse_mode=4`` 64 or 128.
      This rule replaces the two below: it is the doc's MLA-specific section.
    - ``prefill`` (Q_S > 1, PromptFlashAttention branch): a multiple of 128 in [128, 512].
    - decode (Q_S == 1, IncreFlashAttention branch): non-zero, at most 512, a multiple of 16
      (the fp16/bf16 rule; int8 KV needs 32 but the reference does not take int8 KV).
    """
    if not isinstance(block_size, int) or isinstance(block_size, bool):
        _fail("block_size", block_size, "must be an int")
    if rope:
        legal = (64, 128) if sparse_mode == 4 else (16, 128)
        if block_size not in legal:
            _fail(
                "block_size",
                block_size,
                f"with query_rope/key_rope (MLA) page attention needs block_size in {legal}"
                f"{' for sparse_mode=4' if sparse_mode == 4 else ''}",
            )
        return
    if prefill:
        if not (128 <= block_size <= MAX_BLOCK_SIZE and block_size % 128 == 0):
            _fail(
                "block_size",
                block_size,
                "a prompt (Q_S>1) page-attention call needs a multiple of 128 in [128, 512]",
            )
        return
    if not (0 < block_size <= MAX_BLOCK_SIZE and block_size % 16 == 0):
        _fail(
            "block_size",
            block_size,
            "a decode (Q_S=1) page-attention call needs a non-zero multiple of 16 up to 512",
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
    size must pass both rules. MHA/GQA: prompt ∩ decode = (128, 256, 384, 512) — notes §2.4 lists
    {128, 256, 512}, but the doc's "multiple of 128 in [128, 512]" admits 384 as well. MLA: its
    decode call carries query_rope (16 or 128) and its chunked-prefix prompt pages the cache too,
    so the intersection is (128,), as notes §2.4 concludes.
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


def check_head_counts(num_heads: int, num_key_value_heads: int) -> int:
    """Validate the GQA head counts; return the effective KV head count (0 means num_heads)."""
    if num_heads <= 0:
        _fail("num_heads", num_heads, "must be positive")
    if num_key_value_heads < 0:
        _fail("num_key_value_heads", num_key_value_heads, "must be >= 0 (0 means num_heads)")
    nkv = num_key_value_heads or num_heads
    if num_heads % nkv != 0:
        _fail(
            "num_key_value_heads",
            num_key_value_heads,
            f"num_heads={num_heads} must be divisible by num_key_value_heads",
        )
    if num_heads // nkv > MAX_GQA_RATIO:
        _fail(
            "num_key_value_heads",
            num_key_value_heads,
            f"num_heads/num_key_value_heads={num_heads // nkv} exceeds {MAX_GQA_RATIO}",
        )
    return nkv


def check_sparse_mode(sparse_mode: int) -> None:
    if sparse_mode not in SUPPORTED_SPARSE_MODES:
        _fail("sparse_mode", sparse_mode, f"must be one of {SUPPORTED_SPARSE_MODES}")
