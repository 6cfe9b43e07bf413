"""The FIA v1 reference against the brute force on focused cases: the sglang 0.5.23 call shapes
(shared prefix blocks, cached prefixes, TND dense prefill, GQA head groups, decode vs prefill
sparse modes, a real Qwen decode shape) and the empty query.
"""

from __future__ import annotations

import pytest
import torch
from fia_brute_force import (
    TEMPLATE,
    Request,
    Rule,
    _check,
    assert_close,
    brute_force,
    make_block_table,
    pack_paged,
    unpack_lse,
    unpack_output,
)

from sglang_ascend_fia import ops

# ---------------------------------------------------------------------------------------------
# Focused cases: the sglang 0.5.23 call shapes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["BSND", "TND"])
def test_shared_prefix_blocks_beyond_the_pool(layout: str) -> None:
    """sglang's radix cache: every request reads the same two prefix blocks, so the requests'
    blocks sum to 12 in a cache of 6 (the doc's "blocks >= sum" rule is not enforced)."""
    gen = torch.Generator().manual_seed(5)
    n, nkv, d, bs, batch = 4, 2, 128, 128, 4
    prefix_k = torch.randn(2 * bs, nkv, d, generator=gen)
    prefix_v = torch.randn(2 * bs, nkv, d, generator=gen)
    tails = [1 + 37 * b for b in range(batch)]
    q_lens = [1] * batch if layout == "BSND" else [1, 3, 2, 5]
    reqs = [
        Request(
            torch.randn(q, n, d, generator=gen),
            torch.cat([prefix_k, torch.randn(t, nkv, d, generator=gen)]),
            torch.cat([prefix_v, torch.randn(t, nkv, d, generator=gen)]),
        )
        for q, t in zip(q_lens, tails, strict=True)
    ]
    ids = [[4, 1, private] for private in (0, 2, 3, 5)]  # the prefix is blocks 4 and 1
    table = torch.tensor(ids, dtype=torch.int32)
    kv_lens = [r.k.size(0) for r in reqs]
    assert sum(-(-k // bs) for k in kv_lens) > 6
    kwargs: dict[str, object] = {}
    if layout == "BSND":
        query = torch.stack([r.q for r in reqs])
    else:
        query = torch.cat([r.q for r in reqs])
        kwargs = {
            "atten_mask": TEMPLATE,
            "actual_seq_lengths": torch.tensor(q_lens).cumsum(0).tolist(),
            "sparse_mode": 3,
        }
    out, _ = ops.fused_infer_attention_score(
        query,
        pack_paged(reqs, "k", ids, 6, bs, False, gen),
        pack_paged(reqs, "v", ids, 6, bs, False, gen),
        block_table=table,
        block_size=bs,
        input_layout=layout,
        actual_seq_lengths_kv=kv_lens,
        num_heads=n,
        num_key_value_heads=nkv,
        scale=d**-0.5,
        **kwargs,  # type: ignore[arg-type]
    )
    got = unpack_output(out, layout, q_lens, n)
    _check(reqs, Rule("right_down"), got, d**-0.5, torch.float32)


def test_tnd_paged_prefill_with_cached_prefix() -> None:
    """0.5.23's one-launch GQA extend: TND query, paged cache, per-request kv, sparse_mode=3."""
    gen = torch.Generator().manual_seed(1)
    n, nkv, d, bs = 8, 2, 128, 128
    q_lens, prefix = [5, 1, 130], [0, 300, 127]
    kv_lens = [p + q for p, q in zip(prefix, q_lens, strict=True)]
    reqs = [
        Request(
            torch.randn(q, n, d, generator=gen),
            torch.randn(k, nkv, d, generator=gen),
            torch.randn(k, nkv, d, generator=gen),
        )
        for q, k in zip(q_lens, kv_lens, strict=True)
    ]
    table, ids, blocks = make_block_table(kv_lens, bs, True, 2, gen)
    out, _ = ops.fused_infer_attention_score(
        torch.cat([r.q for r in reqs]),
        pack_paged(reqs, "k", ids, blocks, bs, False, gen),
        pack_paged(reqs, "v", ids, blocks, bs, False, gen),
        atten_mask=TEMPLATE,
        block_table=table,
        block_size=bs,
        input_layout="TND",
        actual_seq_lengths=torch.tensor(q_lens).cumsum(0).tolist(),
        actual_seq_lengths_kv=kv_lens,
        num_heads=n,
        num_key_value_heads=nkv,
        scale=d**-0.5,
        sparse_mode=3,
        next_tokens=0,
    )
    _check(reqs, Rule("right_down"), unpack_output(out, "TND", q_lens, n), d**-0.5, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sparse", [0, 3, 4])
def test_tnd_dense_prefill(dtype: torch.dtype, sparse: int) -> None:
    """TND without page attention at its documented shape: N 8, Q_D = K_D = 192, V_D 128."""
    gen = torch.Generator().manual_seed(12 + sparse)
    n, d, dv = 8, 192, 128
    q_lens, kv_lens = [5, 1, 9], [5, 4, 12]  # sparse 3 needs q_len <= kv_len per request
    reqs = [
        Request(
            torch.randn(q, n, d, generator=gen).to(dtype),
            torch.randn(k, n, d, generator=gen).to(dtype),
            torch.randn(k, n, dv, generator=gen).to(dtype),
        )
        for q, k in zip(q_lens, kv_lens, strict=True)
    ]
    extra: dict[str, object] = {}
    rule = Rule("none")
    if sparse:
        extra = {"sparse_mode": sparse, "atten_mask": TEMPLATE, "pre_tokens": 2, "next_tokens": 1}
        rule = Rule("right_down") if sparse == 3 else Rule("band", 2, 1)
    out, lse = ops.fused_infer_attention_score(
        torch.cat([r.q for r in reqs]),
        torch.cat([r.k for r in reqs]),
        torch.cat([r.v for r in reqs]),
        input_layout="TND",
        actual_seq_lengths=torch.tensor(q_lens).cumsum(0).tolist(),
        actual_seq_lengths_kv=torch.tensor(kv_lens).cumsum(0).tolist(),
        num_heads=n,
        scale=d**-0.5,
        softmax_lse_flag=True,
        **extra,
    )
    assert out.shape == (sum(q_lens), n, dv) and out.dtype == dtype
    _check(reqs, rule, unpack_output(out, "TND", q_lens, n), d**-0.5, dtype)
    _, want_lse = brute_force(reqs, rule, d**-0.5)
    for b, got in enumerate(unpack_lse(lse, "TND", q_lens)):
        assert_close(got, want_lse[b], torch.float32, f"request {b} lse")


def test_gqa_uses_contiguous_head_groups() -> None:
    """Head h reads KV head h // (N/Nkv); h % Nkv would fail this check."""
    n, nkv, d = 4, 2, 4
    q = torch.zeros(1, 1, n, d)
    q[..., 0] = 1.0
    k = torch.zeros(1, 2, nkv, d)
    k[0, 0, :, 0] = 5.0  # every query prefers token 0
    v = torch.zeros(1, 2, nkv, d)
    v[0, 0, 0, 0], v[0, 0, 1, 0] = 10.0, 20.0  # token 0 values identify the KV head
    out, _ = ops.fused_infer_attention_score(
        q, k, v, num_heads=n, num_key_value_heads=nkv, input_layout="BSND", scale=10.0
    )
    assert out[0, 0, :, 0].round().tolist() == [10.0, 10.0, 20.0, 20.0]


def test_decode_ignores_sparse_mode_but_prefill_does_not() -> None:
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 1, 2, 16, generator=gen)
    k = torch.randn(1, 6, 2, 16, generator=gen)
    v = torch.randn(1, 6, 2, 16, generator=gen)
    plain, _ = ops.fused_infer_attention_score(q, k, v, num_heads=2, input_layout="BSND")
    band, _ = ops.fused_infer_attention_score(
        q,
        k,
        v,
        num_heads=2,
        input_layout="BSND",
        sparse_mode=4,
        atten_mask=TEMPLATE,
        pre_tokens=1,
        next_tokens=0,
    )
    torch.testing.assert_close(plain, band)
    q2 = torch.randn(1, 2, 2, 16, generator=gen)
    plain2, _ = ops.fused_infer_attention_score(q2, k, v, num_heads=2, input_layout="BSND")
    band2, _ = ops.fused_infer_attention_score(
        q2,
        k,
        v,
        num_heads=2,
        input_layout="BSND",
        sparse_mode=4,
        atten_mask=TEMPLATE,
        pre_tokens=1,
        next_tokens=0,
    )
    assert not torch.allclose(plain2, band2)


def test_real_qwen_decode_shape_bf16() -> None:
    """Qwen2.5-7B TP2 shapes: 14 q heads, 2 kv heads, head_dim 128, page 128, bf16 cache."""
    gen = torch.Generator().manual_seed(4)
    n, nkv, d, bs = 14, 2, 128, 128
    kv_lens = [1, 129, 300, 256]
    reqs = [
        Request(
            torch.randn(1, n, d, generator=gen).bfloat16(),
            torch.randn(k, nkv, d, generator=gen).bfloat16(),
            torch.randn(k, nkv, d, generator=gen).bfloat16(),
        )
        for k in kv_lens
    ]
    table, ids, blocks = make_block_table(kv_lens, bs, True, 1, gen)
    out, _ = ops.fused_infer_attention_score(
        torch.stack([r.q for r in reqs]).view(4, 1, n * d),
        pack_paged(reqs, "k", ids, blocks, bs, False, gen),
        pack_paged(reqs, "v", ids, blocks, bs, False, gen),
        block_table=table,
        block_size=bs,
        actual_seq_lengths_kv=kv_lens,
        num_heads=n,
        num_key_value_heads=nkv,
        scale=d**-0.5,
        input_layout="BSH",
    )
    _check(reqs, Rule("none"), unpack_output(out, "BSH", [1] * 4, n), d**-0.5, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------


def test_empty_query_returns_empty() -> None:
    q = torch.zeros(0, 8, 192)
    k = torch.zeros(0, 8, 192)
    v = torch.zeros(0, 8, 128)
    out, lse = ops.fused_infer_attention_score(
        q,
        k,
        v,
        num_heads=8,
        input_layout="TND",
        actual_seq_lengths=[0],
        actual_seq_lengths_kv=[0],
    )
    assert out.shape == (0, 8, 128) and lse.shape == (1,)
