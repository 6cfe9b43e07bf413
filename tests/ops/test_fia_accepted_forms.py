"""Documented FIA forms the validator must let through (edges of the rules of the other
``test_fia_*`` validation modules).
"""

from __future__ import annotations

import pytest
import torch
from fia_baselines import (
    dense_prefill,
    kv,
    mla_band,
    mla_decode,
    paged_decode,
    tnd_dense,
    tnd_prefill,
)

from sglang_ascend_fia import ops

ACCEPTED: list[tuple[str, dict[str, object]]] = [
    # sglang's radix cache: requests share prefix blocks, so their blocks sum past the cache's
    # block count (5 > 4 here); the doc's "block count >= sum" rule is not enforced.
    (
        "shared prefix blocks beyond the block count",
        paged_decode(
            key=torch.randn(4, 128, 32),
            value=torch.randn(4, 128, 32),
            block_table=torch.tensor([[0, 1, -1], [0, 1, 3]], dtype=torch.int32),
        ),
    ),
    (
        "TND paged at D 256",
        tnd_prefill(
            query=torch.randn(7, 4, 256),
            key=torch.randn(4, 128, 2 * 256),
            value=torch.randn(4, 128, 2 * 256),
        ),
    ),
    # v1's "N为32、64、128" is a documentation gap sglang 0.5.23 relies on (8-16 heads).
    (
        "MLA decode with 8 query heads",
        mla_decode(
            query=torch.randn(2, 1, 8, 512), num_heads=8, query_rope=torch.randn(2, 1, 8, 64)
        ),
    ),
    # MLA takes one key head for up to 128 query heads: the GQA ratio limit is not applied.
    (
        "MLA decode with 128 query heads",
        mla_decode(
            query=torch.randn(1, 1, 128, 512),
            query_rope=torch.randn(1, 1, 128, 64),
            num_heads=128,
            block_table=torch.tensor([[0, 1]], dtype=torch.int32),
            actual_seq_lengths_kv=[140],
        ),
    ),
    ("MLA sparse 4 (band) decode, 128 heads", mla_band()),
    (
        "MLA NZ cache, BSND",
        mla_decode(
            **kv(4, 1, 32, 128, 16),
            key_rope=torch.randn(4, 1, 4, 128, 16),
        ),
    ),
    # sglang 0.5.23's MLA extend: TND, dense, nope 128 + rope 64, sparse 3, equal lengths.
    (
        "TND MLA extend",
        tnd_dense(
            query=torch.randn(7, 8, 128),
            **kv(7, 8, 128),
            query_rope=torch.randn(7, 8, 64),
            key_rope=torch.randn(7, 8, 64),
        ),
    ),
    (
        "TND dense bf16, V_D 192",
        tnd_dense(
            query=torch.randn(7, 8, 192).bfloat16(),
            key=torch.randn(7, 8, 192).bfloat16(),
            value=torch.randn(7, 8, 192).bfloat16(),
        ),
    ),
    (
        "TND dense sparse 4, band at its limits",
        tnd_dense(sparse_mode=4, pre_tokens=-3, next_tokens=3),
    ),
    ("TND dense sparse 0 without a mask", tnd_dense(sparse_mode=0, atten_mask=None)),
    # N*D < 65535 binds BSH/BSND only.
    (
        "BNSD prompt with N*D = 65536",
        dense_prefill(
            query=torch.randn(1, 128, 2, 512),
            **kv(1, 128, 2, 512),
            num_heads=128,
            input_layout="BNSD",
            atten_mask=None,
        ),
    ),
    (
        "int8 KV decode at block 32",
        paged_decode(
            key=torch.zeros(20, 32, 32, dtype=torch.int8),
            value=torch.zeros(20, 32, 32, dtype=torch.int8),
            block_size=32,
            block_table=torch.zeros(2, 10, dtype=torch.int32),
        ),
    ),
    (
        "paged decode mask as wide as the table",
        paged_decode(atten_mask=torch.zeros(2, 384, dtype=torch.bool)),
    ),
    ("lengths as an int tensor", paged_decode(actual_seq_lengths_kv=torch.tensor([200, 300]))),
]


@pytest.mark.parametrize(("what", "kw"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_validator_accepts_documented_forms(what: str, kw: dict[str, object]) -> None:
    args = dict(kw)
    q, k, v = args.pop("query"), args.pop("key"), args.pop("value")
    ops.fused_infer_attention_score.validate(q, k, v, **args)
