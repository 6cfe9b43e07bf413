"""The FIA reference with ``query_rope``/``key_rope`` (MLA) against the brute force: paged decode
and MTP, the DeepSeek-V3 decode shape, the TND extend.
"""

from __future__ import annotations

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
    pack_query,
    unpack_lse,
    unpack_output,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_ascend_fia import ops

# ---------------------------------------------------------------------------------------------
# MLA: query_rope / key_rope
# ---------------------------------------------------------------------------------------------


def _mla_requests(
    q_lens: list[int],
    kv_lens: list[int],
    n: int,
    latent: int,
    rope: int,
    dtype: torch.dtype,
    gen: torch.Generator,
) -> list[Request]:
    reqs = []
    for q_len, kv_len in zip(q_lens, kv_lens, strict=True):
        latent_kv = torch.randn(kv_len, 1, latent, generator=gen).to(dtype)
        reqs.append(
            Request(
                q=torch.randn(q_len, n, latent, generator=gen).to(dtype),
                k=latent_kv,
                v=latent_kv,  # key = value = the compressed latent
                q_rope=torch.randn(q_len, n, rope, generator=gen).to(dtype),
                k_rope=torch.randn(kv_len, 1, rope, generator=gen).to(dtype),
            )
        )
    return reqs


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(
    batch=st.integers(1, 3),
    n=st.sampled_from([1, 4, 8, 16]),  # v1's "N 32/64/128" is not enforced (sglang uses 8-16)
    latent=st.just(512),  # the doc fixes MLA at latent D 512, rope D 64, one key head
    rope=st.just(64),
    block_size=st.sampled_from([16, 128]),
    q_s=st.sampled_from([1, 1, 2, 4]),
    layout=st.sampled_from(["BSND", "BNSD", "BSH"]),
    cache_4d=st.booleans(),
    kv=st.lists(st.sampled_from([1, 15, 16, 17, 127, 128, 129, 200]), min_size=3, max_size=3),
    seed=st.integers(0, 1000),
)
def test_mla_paged_decode_and_mtp(
    batch: int,
    n: int,
    latent: int,
    rope: int,
    block_size: int,
    q_s: int,
    layout: str,
    cache_4d: bool,
    kv: list[int],
    seed: int,
) -> None:
    """MLA decode (sparse 0) and multi-token verify (sparse 3) over a shared latent cache."""
    gen = torch.Generator().manual_seed(seed)
    cache_4d = cache_4d and layout == "BNSD"
    kv_lens = [max(k, q_s) for k in kv[:batch]]
    reqs = _mla_requests([q_s] * batch, kv_lens, n, latent, rope, torch.float32, gen)
    table, ids, blocks = make_block_table(kv_lens, block_size, True, 1, gen)
    latent_cache = pack_paged(reqs, "k", ids, blocks, block_size, cache_4d, gen)
    rope_cache = pack_paged(reqs, "k_rope", ids, blocks, block_size, cache_4d, gen)
    extra: dict[str, object] = {}
    if q_s > 1:
        extra = {"sparse_mode": 3, "atten_mask": TEMPLATE}
    out, lse = ops.fused_infer_attention_score(
        pack_query(reqs, layout, "q", gen),
        latent_cache,
        latent_cache,
        query_rope=pack_query(reqs, layout, "q_rope", gen),
        key_rope=rope_cache,
        block_table=table,
        block_size=block_size,
        actual_seq_lengths_kv=kv_lens,
        num_heads=n,
        num_key_value_heads=1,
        scale=0.1,
        input_layout=layout,
        softmax_lse_flag=True,
        **extra,
    )
    rule = Rule("right_down") if q_s > 1 else Rule("none")
    _check(reqs, rule, unpack_output(out, layout, [q_s] * batch, n), 0.1, torch.float32)
    _, want_lse = brute_force(reqs, rule, 0.1)
    for b, got in enumerate(unpack_lse(lse, layout, [q_s] * batch)):
        assert_close(got, want_lse[b], torch.float32, "lse")


def test_mla_deepseek_v3_shape_decode() -> None:
    """The real DeepSeek-V3 MLA decode shape: kv_lora 512 + rope 64, 16 heads/rank, page 128."""
    gen = torch.Generator().manual_seed(7)
    n, latent, rope, bs = 16, 512, 64, 128
    kv_lens = [3, 200]
    reqs = _mla_requests([1, 1], kv_lens, n, latent, rope, torch.bfloat16, gen)
    table, ids, blocks = make_block_table(kv_lens, bs, True, 1, gen)
    latent_cache = pack_paged(reqs, "k", ids, blocks, bs, False, gen)
    out, _ = ops.fused_infer_attention_score(
        pack_query(reqs, "BSND", "q", gen),
        latent_cache,
        latent_cache,
        query_rope=pack_query(reqs, "BSND", "q_rope", gen),
        key_rope=pack_paged(reqs, "k_rope", ids, blocks, bs, False, gen),
        block_table=table,
        block_size=bs,
        actual_seq_lengths_kv=kv_lens,
        num_heads=n,
        num_key_value_heads=1,
        scale=(128 + 64) ** -0.5,
        input_layout="BSND",
    )
    assert out.shape == (2, 1, n, latent)
    _check(reqs, Rule("none"), unpack_output(out, "BSND", [1, 1], n), (192) ** -0.5, torch.bfloat16)


def test_mla_tnd_extend_with_rope() -> None:
    """0.5.23 MLA extend: TND, dense q_nope/k_nope/v plus rope, cumulative lengths, sparse 3.

    The doc's TND-with-rope shape: Q_D = K_D = V_D = 128, rope D 64.
    """
    gen = torch.Generator().manual_seed(8)
    n, nope, rope, dv = 8, 128, 64, 128
    q_lens = [3, 7, 1]
    reqs = [
        Request(
            q=torch.randn(s, n, nope, generator=gen),
            k=torch.randn(s, n, nope, generator=gen),
            v=torch.randn(s, n, dv, generator=gen),
            q_rope=torch.randn(s, n, rope, generator=gen),
            k_rope=torch.randn(s, n, rope, generator=gen),
        )
        for s in q_lens
    ]
    cum = torch.tensor(q_lens).cumsum(0).tolist()
    out, lse = ops.fused_infer_attention_score_v2(
        torch.cat([r.q for r in reqs]),
        torch.cat([r.k for r in reqs]),
        torch.cat([r.v for r in reqs]),
        query_rope=torch.cat([r.q_rope for r in reqs]),  # type: ignore[misc]
        key_rope=torch.cat([r.k_rope for r in reqs]),  # type: ignore[misc]
        num_query_heads=n,
        input_layout="TND",
        actual_seq_qlen=cum,
        actual_seq_kvlen=cum,
        atten_mask=TEMPLATE,
        sparse_mode=3,
        next_tokens=0,
        softmax_scale=0.2,
        return_softmax_lse=True,
    )
    assert lse.shape == (sum(q_lens), n, 1)
    _check(reqs, Rule("right_down"), unpack_output(out, "TND", q_lens, n), 0.2, torch.float32)
