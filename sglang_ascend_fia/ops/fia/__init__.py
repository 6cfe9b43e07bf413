"""``npu_fused_infer_attention_score`` (FIA) and its ``_v2``, with a pure-PyTorch reference.

What the kernel computes (doc: torch_npu 2.14.0 ``_op_plugin_docs.py``; meta shapes:
``op_plugin/meta/_meta_registrations.py``; every rule, with its source: ``docs/ops-semantics.md``,
section ``npu_fused_infer_attention_score``)::

    attention_out = softmax(scale * (query @ key^T [+ query_rope @ key_rope^T]) + mask) @ value

per request and per query head, over that request's valid keys. The reference:

- reads the query in BSH ``[B,S,N*D]``, BSND ``[B,S,N,D]``, BNSD ``[B,N,S,D]``, BNSD_BSND (BNSD in,
  BSND out) or TND ``[T,N,D]`` and returns the output in the query's layout with the value's D;
- reads K/V dense (the query's layout, TND with cumulative lengths) or paged through
  ``block_table`` from a ``(blocks, block_size, Nkv*D)`` or ``(blocks, Nkv, block_size, D)`` cache;
- computes in fp32 with an online (flash-style) softmax over KV chunks, so neither the whole
  gathered cache nor the whole score matrix is materialised, and casts to the query dtype.

Two kinds of rejection, both ``ValueError``, worded by ``ops._checks``. The validator (run by
``_dispatch`` before either implementation, so also on an NPU) enforces only the *documented*
kernel constraints, and never refuses a call the kernel accepts. What only the reference lacks —
quantisation arguments, NZ caches, int8 inputs, the v2-only ``*_NBSD``/``NTD`` layouts — is
refused by the reference itself ("... is not implemented by the reference"), so only CPU/CUDA
runs see it.

Choices the doc does not settle are marked **(inferred)** where they are made. A call's path:
this module (the two public ops) → :mod:`.plan` (validator and geometry, with the limits of
:mod:`.rules` and the scenario rules of :mod:`.scenarios`) → :mod:`.reference` (the computation).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sglang_ascend_fia.ops._dispatch import npu_op
from sglang_ascend_fia.ops.fia.arguments import v2_to_v1, validate_v2_only_layout
from sglang_ascend_fia.ops.fia.plan import Plan, plan
from sglang_ascend_fia.ops.fia.reference import attention, no_lse, to_output_layout
from sglang_ascend_fia.ops.fia.rules import INT32_MAX, V2_ONLY_LAYOUTS

__all__ = ["fused_infer_attention_score", "fused_infer_attention_score_v2"]


def _run(
    a: Mapping[str, Any], sink: torch.Tensor | None = None, version: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference for a complete v1 argument mapping (every parameter present)."""
    call = plan(a, reference=True, version=version)
    query = a["query"]
    if query.numel() == 0:  # doc: an empty query returns at once
        return query.new_empty(_out_shape(call, query)), no_lse(query.device)
    out, lse = attention(
        call,
        query,
        a["key"],
        a["value"],
        query_rope=a["query_rope"],
        key_rope=a["key_rope"],
        atten_mask=a["atten_mask"],
        block_table=a["block_table"],
        scale=float(a["scale"]),
        sink=sink,
    )
    return to_output_layout(call, out, lse, query.dtype, bool(a["softmax_lse_flag"]))


def _out_shape(call: Plan, query: torch.Tensor) -> tuple[int, ...]:
    b, n, s, dv = call.batch, call.num_heads, call.q_s, call.v_dim
    return {
        "BSH": (b, s, n * dv),
        "BSND": (b, s, n, dv),
        "BNSD": (b, n, s, dv),
        "TND": (query.size(0), n, dv),
    }[call.out_layout]


# ---------------------------------------------------------------------------------------------
# v1
# ---------------------------------------------------------------------------------------------


def _validate_v1(a: Mapping[str, Any]) -> None:
    plan(a, reference=False)


@npu_op("npu_fused_infer_attention_score", validate=_validate_v1)
def fused_infer_attention_score(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    pse_shift: torch.Tensor | None = None,
    atten_mask: torch.Tensor | None = None,
    actual_seq_lengths: Sequence[int] | None = None,
    actual_seq_lengths_kv: Sequence[int] | None = None,
    dequant_scale1: torch.Tensor | None = None,
    quant_scale1: torch.Tensor | None = None,
    dequant_scale2: torch.Tensor | None = None,
    quant_scale2: torch.Tensor | None = None,
    quant_offset2: torch.Tensor | None = None,
    antiquant_scale: torch.Tensor | None = None,
    antiquant_offset: torch.Tensor | None = None,
    key_antiquant_scale: torch.Tensor | None = None,
    key_antiquant_offset: torch.Tensor | None = None,
    value_antiquant_scale: torch.Tensor | None = None,
    value_antiquant_offset: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    query_padding_size: torch.Tensor | None = None,
    kv_padding_size: torch.Tensor | None = None,
    key_shared_prefix: torch.Tensor | None = None,
    value_shared_prefix: torch.Tensor | None = None,
    actual_shared_prefix_len: Sequence[int] | None = None,
    query_rope: torch.Tensor | None = None,
    key_rope: torch.Tensor | None = None,
    key_rope_antiquant_scale: torch.Tensor | None = None,
    num_heads: int = 1,
    scale: float = 1.0,
    pre_tokens: int = INT32_MAX,
    next_tokens: int = INT32_MAX,
    input_layout: str = "BSH",
    num_key_value_heads: int = 0,
    sparse_mode: int = 0,
    inner_precise: int = 0,
    block_size: int = 0,
    antiquant_mode: int = 0,
    key_antiquant_mode: int = 0,
    value_antiquant_mode: int = 0,
    softmax_lse_flag: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch_npu.npu_fused_infer_attention_score``; parameters as in the 2.14 op yaml.

    ``attention_out = softmax(scale * (q·kᵀ [+ q_rope·k_ropeᵀ]) + mask) · v`` (doc formula), per
    request and query head; Q_S=1 is the IncreFlashAttention branch, Q_S>1 PromptFlashAttention.

    - **Layouts** (``input_layout``): BSH, BSND, BNSD, BNSD_BSND (BNSD in, BSND out, Q_S>1 only),
      TND. The output has the query's layout (BSND for BNSD_BSND) with the value's D (meta
      ``get_value_d``), and the query's dtype. For TND, Q_S is the longest request (inferred;
      rejected: T, the token axis, which would make a TND batch of one-token requests a prompt
      call).
    - **Lengths**: ``actual_seq_lengths`` is cumulative and required for TND (its length is B);
      otherwise per batch (1 value broadcasts, else the first B) and ignored when Q_S=1.
      ``actual_seq_lengths_kv`` is cumulative for a dense TND key and **per batch** with page
      attention (also for a TND query — doc, Q_S=1 page-attention section); page attention
      requires it. Lengths are lists of non-negative ints or 1-D integer tensors. Rows past a
      request's query length come out 0 (inferred: the doc leaves them undefined; rejected:
      leaving them unwritten, which is not deterministic). TND tokens past the last cumulative
      length likewise give output 0 and LSE -inf (inferred, same reason).
    - **GQA**: ``num_key_value_heads`` (0 = ``num_heads``) divides ``num_heads``, ratio ≤ 64
      (not applied to MLA, which takes one key head for up to 128 query heads). Query head h
      reads KV head ``h // (N/Nkv)`` (inferred from sglang's ``repeat_interleave`` fallback;
      rejected alternative: ``h % Nkv``).
    - **Page attention**: ``block_table`` int32 ``[B, ≥ max blocks]`` (-1 allowed past a
      request's length), ``block_size``, caches ``(blocks, block_size, Nkv*D)`` (Nkv*D ≤ 65535)
      or, for BNSD/TND queries, ``(blocks, Nkv, block_size, D)``. Requests may share blocks
      (sglang's radix cache does), so the doc's "block count >= the sum of each request's
      blocks" is not enforced; the reference refuses an id outside the cache. Token j of
      request b is ``cache[block_table[b, j // block_size], j % block_size]``. Block-size rules:
      :func:`sglang_ascend_fia.ops.check_block_size`.
    - **Masks** (True/1 = masked): ``sparse_mode`` 0 — ``atten_mask`` None means none, else an
      explicit mask; 1 — explicit mask required; 2 — leftUpCausal, masked iff ``j > i``;
      3 — rightDownCausal, masked iff ``j > i + (kv_len - q_len)`` per request; 4 — band around
      that diagonal, kept iff ``diag - pre_tokens ≤ j ≤ diag + next_tokens`` (both ends
      inclusive: inferred from "参数起点为右下角"; rejected: exclusive ends); 9 — treeMask, MLA
      only (validated; the reference refuses it). Modes 2-4 take the 2048×2048 template, whose
      contents are not read. Q_S=1 without rope ignores ``sparse_mode`` (doc), so the template
      then masks nothing. With page attention an explicit mask spans at least the block
      table's width × block_size (Q_S=1) or the longest request's blocks (Q_S>1).
    - **TND with page attention** (no rope): only at (D, V_D) = (128, 128), (192, 192),
      (256, 256) or (192, 128), the head dims sglang 0.5.23 runs it at (``_can_use_tnd``,
      ``ascend_backend.py:459-464``); the doc states no multi-request TND paged form (inferred).
    - **TND without page attention** (doc section of its own): N in 8/16/32/64/128 with
      Q_N = K_N = V_N, Q_D = K_D = 192 and V_D 128 or 192 (with rope: 128/128/128 and rope D 64,
      the v2 doc's rule), T ≤ 65536, bf16 only, sparse_mode 0 without a mask, 3 or 4 with one.
    - **MLA**: ``query_rope``/``key_rope`` add ``q_rope·k_ropeᵀ`` to the scores; key_rope has
      the key's layout. D 512, rope D 64, one key head; except sparse_mode 4 (BSND, 128 heads)
      page attention is required, query S 1-16, block_size 16 or 128. v1's "N 32/64/128" is not
      enforced: sglang 0.5.23 calls it with 8-16 heads (inferred documentation gap).
    - **LSE** (``softmax_lse_flag``): fp32 ``(B, N, S, 1)``, ``(T, N, 1)`` for TND: log Σ exp
      of the scaled scores over visible keys. Otherwise a ``[1]`` zero tensor (the doc's shape;
      the meta registration says ``[0]``). Rows with no visible key give output 0 and LSE -inf
      (inferred: the doc leaves such rows unspecified unless inner_precise bit 1 is set;
      rejected: NaN, or a uniform average over the masked keys).
    - ``inner_precise`` picks kernel precision and row-invalid correction; the reference always
      computes in fp32 and zeroes fully masked rows, which is what the corrected modes ask for.

    Not modelled: quantisation/antiquantisation arguments, ``pse_shift``, shared prefixes,
    query/kv left padding, NZ caches, int8 inputs, sparse_mode 9 (treeMask: its mask layout is
    not documented) and a sparse_mode 0 mask with non-default ``pre_tokens``/``next_tokens``
    (the doc says the band between them is computed but not where it is anchored) raise
    ``ValueError`` ("not implemented by the reference") after the validator has passed them.
    dtype policy: fp32 is accepted off the NPU only (the CPU test bed runs in fp32); on an NPU
    tensor it is refused like the kernel refuses it.
    """
    return _run(dict(locals()))


# ---------------------------------------------------------------------------------------------
# v2
# ---------------------------------------------------------------------------------------------


@functools.cache
def _v1_defaults() -> dict[str, Any]:
    """Every v1 parameter with its default: the base a v2 call is translated onto."""
    parameters = inspect.signature(fused_infer_attention_score.reference).parameters
    return {name: p.default for name, p in parameters.items()}


def _validate_v2(a: Mapping[str, Any]) -> None:
    if a["input_layout"] in V2_ONLY_LAYOUTS:
        validate_v2_only_layout(a)
        return
    plan(v2_to_v1(a, _v1_defaults(), reference=False), reference=False, version=2)


@npu_op("npu_fused_infer_attention_score_v2", validate=_validate_v2)
def fused_infer_attention_score_v2(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    query_rope: torch.Tensor | None = None,
    key_rope: torch.Tensor | None = None,
    pse_shift: torch.Tensor | None = None,
    atten_mask: torch.Tensor | None = None,
    actual_seq_qlen: Sequence[int] | None = None,
    actual_seq_kvlen: Sequence[int] | None = None,
    block_table: torch.Tensor | None = None,
    dequant_scale_query: torch.Tensor | None = None,
    dequant_scale_key: torch.Tensor | None = None,
    dequant_offset_key: torch.Tensor | None = None,
    dequant_scale_value: torch.Tensor | None = None,
    dequant_offset_value: torch.Tensor | None = None,
    dequant_scale_key_rope: torch.Tensor | None = None,
    quant_scale_out: torch.Tensor | None = None,
    quant_offset_out: torch.Tensor | None = None,
    quant_scale_p: torch.Tensor | None = None,
    learnable_sink: torch.Tensor | None = None,
    num_query_heads: int = 1,
    num_key_value_heads: int = 0,
    softmax_scale: float = 1.0,
    pre_tokens: int = INT32_MAX,
    next_tokens: int = INT32_MAX,
    input_layout: str = "BSH",
    sparse_mode: int = 0,
    block_size: int = 0,
    query_quant_mode: int = 0,
    key_quant_mode: int = 0,
    value_quant_mode: int = 0,
    inner_precise: int = 0,
    return_softmax_lse: bool = False,
    query_dtype: int | None = None,
    key_dtype: int | None = None,
    value_dtype: int | None = None,
    query_rope_dtype: int | None = None,
    key_rope_dtype: int | None = None,
    key_shared_prefix_dtype: int | None = None,
    value_shared_prefix_dtype: int | None = None,
    dequant_scale_query_dtype: int | None = None,
    dequant_scale_key_dtype: int | None = None,
    dequant_scale_value_dtype: int | None = None,
    dequant_scale_key_rope_dtype: int | None = None,
    out_dtype: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch_npu.npu_fused_infer_attention_score_v2``: FIA with the v2 argument names.

    Same semantics as :func:`fused_infer_attention_score` (the v2 docstring repeats the v1
    formula), delegated to the same core under the renames
    ``num_query_heads``→``num_heads``, ``softmax_scale``→``scale``,
    ``actual_seq_qlen``/``actual_seq_kvlen``→``actual_seq_lengths``/``actual_seq_lengths_kv``,
    ``return_softmax_lse``→``softmax_lse_flag``.

    ``learnable_sink`` (shape ``(Q_N,)``) adds one logit per query head to every softmax
    denominator and contributes no value: ``p_j = exp(s_j) / (exp(sink_h) + Σ_k exp(s_k))``
    (inferred from "通过可学习的Sink Token起到吸收Attention Score的作用"). The returned LSE includes
    the sink term (inferred: the doc defines softmaxLse as the log of the softmax denominator,
    which the sink is part of; rejected: the LSE over the keys alone). The doc limits sinks to TND
    with value D ≤ 128, but sglang 0.5.23 also passes them to BSND decode, so the reference does
    not enforce the layout.

    The validator holds v2 calls to the v2 doc where it differs from v1's: TND without page
    attention also takes GQA and Q_D = K_D = V_D = 128, up to 1M tokens and 4096 requests;
    MLA at D 512 takes sparse_mode 0 (Q_S=1) or 3 (Q_S>1) only, N in 1/2/4/.../128, and TND
    with page attention; MLA at D 128 needs TND without page attention; sparse_mode 9 is v1's.

    The quantisation arguments and the reserved ``*_dtype``/``out_dtype`` must keep their
    defaults ("not implemented by the reference"); the ``*_NBSD``/``NTD`` layouts are not modelled.
    """
    v1 = v2_to_v1(dict(locals()), _v1_defaults(), reference=True)
    return _run(v1, sink=learnable_sink, version=2)
