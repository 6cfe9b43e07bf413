"""``npu_fused_infer_attention_score`` (FIA) and its ``_v2``, with a pure-PyTorch reference.

What the kernel computes (doc: torch_npu 2.14.0 ``_op_plugin_docs.py``; meta shapes:
``op_plugin/meta/_meta_registrations.py``; summary in shared/notes/upstream-0.5.23.md §3.1-3.2)::

    attention_out = softmax(scale * (query @ key^T [+ query_rope @ key_rope^T]) + mask) @ value

per request and per query head, over that request's valid keys. The reference:

- reads the query in BSH ``[B,S,N*D]``, BSND ``[B,S,N,D]``, BNSD ``[B,N,S,D]``, BNSD_BSND (BNSD in,
  BSND out) or TND ``[T,N,D]`` and returns the output in the query's layout with the value's D;
- reads K/V dense (the query's layout, TND with cumulative lengths) or paged through
  ``block_table`` from a ``(blocks, block_size, Nkv*D)`` or ``(blocks, Nkv, block_size, D)`` cache;
- computes in fp32 with an online (flash-style) softmax over KV chunks, so neither the whole
  gathered cache nor the whole score matrix is materialised, and casts to the query dtype.

Two kinds of rejection, both ``ValueError``. The validator (run by ``_dispatch`` before either
implementation, so also on an NPU) enforces only the *documented* kernel constraints, and never
refuses a call the kernel accepts. What only the reference lacks — quantisation arguments, NZ
caches, int8 inputs, the v2-only ``*_NBSD``/``NTD`` layouts — is refused by the reference itself
("... is not supported by the reference"), so only CPU/CUDA runs see it.

Choices the doc does not settle are marked **(inferred)** where they are made. The validator and
planner live in :mod:`._fia_plan`, the computation in :mod:`._fia_reference`; this module holds
the two public ops and their argument handling.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch

from sglang_ascend_fia.ops._dispatch import npu_op
from sglang_ascend_fia.ops._fia_plan import (
    _OP,
    _V2_ONLY_LAYOUTS,
    INT32_MAX,
    _fail,
    _not_supported,
    _Plan,
    _plan,
    _shape,
)
from sglang_ascend_fia.ops._fia_reference import _attention, _no_lse, _to_output_layout
from sglang_ascend_fia.ops._fia_rules import (
    TREE_MASK_SPARSE_MODE,
    check_head_counts,
    check_sparse_mode,
)

# ---------------------------------------------------------------------------------------------
# v1
# ---------------------------------------------------------------------------------------------

# Arguments the reference does not model; each must keep its default (None, or 0 for modes).
_V1_UNSUPPORTED = (
    "pse_shift",
    "dequant_scale1",
    "quant_scale1",
    "dequant_scale2",
    "quant_scale2",
    "quant_offset2",
    "antiquant_scale",
    "antiquant_offset",
    "key_antiquant_scale",
    "key_antiquant_offset",
    "value_antiquant_scale",
    "value_antiquant_offset",
    "query_padding_size",
    "kv_padding_size",
    "key_shared_prefix",
    "value_shared_prefix",
    "actual_shared_prefix_len",
    "key_rope_antiquant_scale",
    "antiquant_mode",
    "key_antiquant_mode",
    "value_antiquant_mode",
)
_V2_UNSUPPORTED = (
    "pse_shift",
    "dequant_scale_query",
    "dequant_scale_key",
    "dequant_offset_key",
    "dequant_scale_value",
    "dequant_offset_value",
    "dequant_scale_key_rope",
    "quant_scale_out",
    "quant_offset_out",
    "quant_scale_p",
    "query_quant_mode",
    "key_quant_mode",
    "value_quant_mode",
    "query_dtype",
    "key_dtype",
    "value_dtype",
    "query_rope_dtype",
    "key_rope_dtype",
    "key_shared_prefix_dtype",
    "value_shared_prefix_dtype",
    "dequant_scale_query_dtype",
    "dequant_scale_key_dtype",
    "dequant_scale_value_dtype",
    "dequant_scale_key_rope_dtype",
    "out_dtype",
)


def _reject_unsupported(op: str, a: dict[str, Any], names: tuple[str, ...]) -> None:
    """The reference refuses (never ignores) arguments it does not model."""
    for name in names:
        value = a[name]
        is_default = value is None if not name.endswith("_mode") else value == 0
        if not is_default:
            shown = _shape(value) if isinstance(value, torch.Tensor) else value
            raise ValueError(
                f"{op}: {name}={shown!r} is not supported by the reference; it implements float "
                "attention without quantisation, pse_shift, shared prefixes, left padding or "
                "dtype overrides"
            )


# What the doc excludes from sparse_mode=9 (treeMask): "不支持左padding、pse_shift、sharedPrefix,
# 输出dtype不支持int8" (an int8 output is what quant_scale2 asks for).
_TREE_MASK_EXCLUDES = (
    "pse_shift",
    "query_padding_size",
    "kv_padding_size",
    "key_shared_prefix",
    "value_shared_prefix",
    "actual_shared_prefix_len",
    "quant_scale2",
)


def _plan_v1(a: dict[str, Any], *, reference: bool, version: int = 1) -> _Plan:
    if a["sparse_mode"] == TREE_MASK_SPARSE_MODE:
        for name in _TREE_MASK_EXCLUDES:
            if a.get(name) is not None:
                shown = _shape(a[name]) if isinstance(a[name], torch.Tensor) else a[name]
                _fail(
                    name,
                    shown,
                    "sparse_mode=9 (treeMask) takes no left padding, pse_shift, "
                    "shared prefix or int8 output",
                )
    if reference:
        _reject_unsupported(_OP, a, _V1_UNSUPPORTED)
    return _plan(
        a["query"],
        a["key"],
        a["value"],
        atten_mask=a["atten_mask"],
        actual_seq_lengths=a["actual_seq_lengths"],
        actual_seq_lengths_kv=a["actual_seq_lengths_kv"],
        block_table=a["block_table"],
        query_rope=a["query_rope"],
        key_rope=a["key_rope"],
        num_heads=a["num_heads"],
        pre_tokens=a["pre_tokens"],
        next_tokens=a["next_tokens"],
        input_layout=a["input_layout"],
        num_key_value_heads=a["num_key_value_heads"],
        sparse_mode=a["sparse_mode"],
        inner_precise=a["inner_precise"],
        block_size=a["block_size"],
        reference=reference,
        version=version,
    )


def _run_v1(
    a: dict[str, Any], sink: torch.Tensor | None = None, version: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference for a complete v1 argument dict (every parameter present)."""
    plan = _plan_v1(a, reference=True, version=version)
    query = a["query"]
    if query.numel() == 0:  # doc: an empty query returns at once
        return query.new_empty(_out_shape(plan, query)), _no_lse(query.device)
    out, lse = _attention(
        plan,
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
    return _to_output_layout(plan, out, lse, query.dtype, bool(a["softmax_lse_flag"]))


def _out_shape(plan: _Plan, query: torch.Tensor) -> tuple[int, ...]:
    b, n, s, dv = plan.batch, plan.num_heads, plan.q_s, plan.v_dim
    return {
        "BSH": (b, s, n * dv),
        "BSND": (b, s, n, dv),
        "BNSD": (b, n, s, dv),
        "TND": (query.size(0), n, dv),
    }[plan.out_layout]


# inspect.signature() rebuilds the Signature on every call (~100 us for FIA's 40 parameters,
# more than the reference's whole decode on a tiny model); the ops' signatures never change.
_signature = functools.cache(inspect.signature)


@functools.cache
def _parameters(fn: Any) -> tuple[tuple[str, ...], frozenset[str], dict[str, Any]]:
    """``fn``'s positional parameter names, all names, and defaults."""
    params = _signature(fn).parameters
    positional = tuple(n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD)
    defaults = {n: p.default for n, p in params.items() if p.default is not p.empty}
    return positional, frozenset(params), defaults


def _bind(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """All of ``op``'s parameters, defaults filled in, as the validator sees the call."""
    positional, names, defaults = _parameters(op.reference)
    if (
        len(args) == len(positional)
        and names.issuperset(kwargs)
        and kwargs.keys().isdisjoint(positional)
    ):
        # The usual call (tensors by position, the rest by keyword), bound in a few microseconds;
        # anything else goes through Signature.bind, which also raises Python's own TypeErrors.
        return {**defaults, **dict(zip(positional, args, strict=True)), **kwargs}
    bound = _signature(op.reference).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _validate_v1(*args: Any, **kwargs: Any) -> None:
    _plan_v1(_bind(fused_infer_attention_score, args, kwargs), reference=False)


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
      or, for BNSD/TND queries, ``(blocks, Nkv, block_size, D)``, with at least as many blocks
      as the KV lengths need. Token j of request b is
      ``cache[block_table[b, j // block_size], j % block_size]``. Block-size rules:
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
    ``ValueError`` ("not supported by the reference") after the validator has passed them.
    dtype policy: fp32 is accepted off the NPU only (the CPU test bed runs in fp32); on an NPU
    tensor it is refused like the kernel refuses it.
    """
    return _run_v1(dict(locals()))


# ---------------------------------------------------------------------------------------------
# v2
# ---------------------------------------------------------------------------------------------

# v2 name -> v1 name, for the arguments the two versions share under different names.
_V2_RENAMES = {
    "actual_seq_qlen": "actual_seq_lengths",
    "actual_seq_kvlen": "actual_seq_lengths_kv",
    "num_query_heads": "num_heads",
    "softmax_scale": "scale",
    "return_softmax_lse": "softmax_lse_flag",
}
_V2_SHARED = (
    "query",
    "key",
    "value",
    "query_rope",
    "key_rope",
    "atten_mask",
    "block_table",
    "num_key_value_heads",
    "pre_tokens",
    "next_tokens",
    "input_layout",
    "sparse_mode",
    "block_size",
    "inner_precise",
)


def _v2_to_v1(a: dict[str, Any], *, reference: bool) -> dict[str, Any]:
    """Check the v2-only arguments, then express the call with v1's names and defaults."""
    if reference:
        _reject_unsupported(f"{_OP}_v2", a, _V2_UNSUPPORTED)
        if a["input_layout"] in _V2_ONLY_LAYOUTS:
            _not_supported(
                "input_layout", a["input_layout"], "the N-first output layouts are not implemented"
            )
    sink = a["learnable_sink"]
    if sink is not None:
        n = a["num_query_heads"]
        if not isinstance(sink, torch.Tensor) or tuple(sink.shape) != (n,):
            _fail("learnable_sink", _shape(sink), f"must have shape (num_query_heads,) = ({n},)")
    v1 = {
        name: p.default
        for name, p in _signature(fused_infer_attention_score.reference).parameters.items()
    }
    v1.update({name: a[name] for name in _V2_SHARED})
    v1.update({old: a[new] for new, old in _V2_RENAMES.items()})
    return v1


def _validate_v2(*args: Any, **kwargs: Any) -> None:
    a = _bind(fused_infer_attention_score_v2, args, kwargs)
    if a["input_layout"] in _V2_ONLY_LAYOUTS:
        # Documented v2 layouts the plan does not model: check what does not depend on them.
        rope = a["query_rope"] is not None
        check_head_counts(a["num_query_heads"], a["num_key_value_heads"], mla=rope)
        check_sparse_mode(a["sparse_mode"], rope=rope, version=2)
        return
    _plan_v1(_v2_to_v1(a, reference=False), reference=False, version=2)


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
    defaults ("not supported by the reference"); the ``*_NBSD``/``NTD`` layouts are not modelled.
    """
    a = dict(locals())
    return _run_v1(_v2_to_v1(a, reference=True), sink=learnable_sink, version=2)
