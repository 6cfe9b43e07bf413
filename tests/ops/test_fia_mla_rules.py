"""FIA MLA rules (``query_rope``/``key_rope``, v1 doc) with their messages: rope dims, key heads,
sparse modes and masks, layouts, caches, the band mode and the tree mask.

The validator runs through the dispatch decorator before either implementation, so each case also
proves that a rejected call counts no launch.
"""

from __future__ import annotations

import pytest
import torch
from fia_baselines import MLA_Q2, TEMPLATE, kv, meta, mla_band, mla_decode, paged_decode, run

from sglang_ascend_fia import ops

# MLA.
CASES: list[tuple[str, dict[str, object], str]] = [
    (
        "rope without key_rope",
        mla_decode(key_rope=None),
        r"query_rope/key_rope='only one given' .*both or neither",
    ),
    (
        "rope dims",
        mla_decode(key_rope=torch.randn(4, 128, 16)),
        r"key_rope=\(4, 128, 16\) .*rope D must equal query_rope's \(64\)",
    ),
    (
        "rope sparse 2",
        mla_decode(sparse_mode=2, atten_mask=TEMPLATE),
        r"sparse_mode=2 .*with query_rope/key_rope and Q_S=1 only \(0, 4, 9\)",
    ),
    (
        "rope paged S > 16",
        mla_decode(
            query=torch.randn(2, 17, 4, 512),
            query_rope=torch.randn(2, 17, 4, 64),
            sparse_mode=3,
            atten_mask=TEMPLATE,
            actual_seq_lengths_kv=[20, 140],
        ),
        r"query='S=17' .*MLA page attention supports query S 1-16",
    ),
]


# MLA (v1 doc); the query head count is deliberately not checked (mla_decode has 4 heads).
CASES += [
    (
        "MLA D 256",
        mla_decode(
            query=torch.randn(2, 1, 4, 256),
            **kv(4, 128, 256),
        ),
        r"query/query_rope D=\(256, 64\) .*MLA needs D=512 and rope D=64",
    ),
    (
        "MLA two key heads",
        mla_decode(
            **kv(4, 128, 1024),
            key_rope=torch.randn(4, 128, 128),
            num_key_value_heads=2,
        ),
        r"num_key_value_heads=2 .*MLA needs one key head",
    ),
    (
        "MLA sparse 3 at Q_S=1",
        mla_decode(sparse_mode=3, atten_mask=TEMPLATE),
        r"sparse_mode=3 .*Q_S=1 only \(0, 4, 9\)",
    ),
    ("MLA sparse 0 at Q_S>1", mla_decode(**MLA_Q2), r"sparse_mode=0 .*Q_S>1 only \(3, 4, 9\)"),
    (
        "MLA sparse 0 with a mask",
        mla_decode(atten_mask=torch.zeros(2, 256, dtype=torch.bool)),
        r"atten_mask=\(2, 256\) .*MLA with sparse_mode=0 takes no mask",
    ),
    (
        "MLA sparse 3 without a mask",
        mla_decode(**MLA_Q2, sparse_mode=3),
        r"atten_mask=None .*MLA with sparse_mode=3 needs a mask",
    ),
    (
        "MLA without page attention",
        mla_decode(
            **kv(2, 140, 1, 512),
            key_rope=torch.randn(2, 140, 1, 64),
            block_table=None,
            block_size=0,
        ),
        r"block_table=None .*MLA with sparse_mode=0 needs page attention",
    ),
    (
        "MLA BNSD_BSND",
        mla_decode(
            query=torch.randn(2, 4, 2, 512),
            query_rope=torch.randn(2, 4, 2, 64),
            input_layout="BNSD_BSND",
            sparse_mode=3,
            atten_mask=TEMPLATE,
        ),
        r"input_layout='BNSD_BSND' .*MLA takes \('BSH', 'BSND', 'BNSD'\)",
    ),
    (
        "MLA NZ cache with BNSD",
        mla_decode(
            query=torch.randn(2, 4, 1, 512),
            query_rope=torch.randn(2, 4, 1, 64),
            input_layout="BNSD",
            **kv(4, 1, 32, 128, 16),
            key_rope=torch.randn(4, 1, 4, 128, 16),
        ),
        r"input_layout='BNSD' .*not BNSD with an NZ cache",
    ),
    (
        "MLA band BNSD",
        mla_band(
            query=torch.randn(1, 128, 1, 512),
            query_rope=torch.randn(1, 128, 1, 64),
            **kv(1, 1, 6, 512),
            key_rope=torch.randn(1, 1, 6, 64),
            input_layout="BNSD",
        ),
        r"input_layout/num_heads=\('BNSD', 128\) .*sparse_mode=4 needs BSND and N=128",
    ),
    (
        "MLA band 64 heads",
        mla_band(
            query=torch.randn(1, 1, 64, 512), query_rope=torch.randn(1, 1, 64, 64), num_heads=64
        ),
        r"input_layout/num_heads=\('BSND', 64\) .*sparse_mode=4 needs BSND and N=128",
    ),
    (
        "MLA band NZ cache",
        mla_band(
            **kv(1, 1, 32, 64, 16),
            key_rope=torch.randn(1, 1, 4, 64, 16),
            block_table=torch.zeros(1, 1, dtype=torch.int32),
            block_size=64,
            actual_seq_lengths_kv=[6],
        ),
        r"key='NZ cache' .*MLA with sparse_mode=4 takes only ND caches",
    ),
    (
        "MLA band key S",
        mla_band(
            key=meta(1, 131089, 1, 512),
            value=meta(1, 131089, 1, 512),
            key_rope=meta(1, 131089, 1, 64),
        ),
        r"actual_seq_lengths_kv=131089 .*<= 131088 \(sparse 4\)",
    ),
    (
        "MLA band query longer than key",
        mla_band(
            query=torch.randn(1, 2, 128, 512),
            query_rope=torch.randn(1, 2, 128, 64),
            actual_seq_lengths_kv=[1],
        ),
        r"actual_seq_lengths='request 0: 2 > kv 1' .*sparse_mode=4 needs each query S <= its key",
    ),
    (
        "sparse 9 without rope",
        paged_decode(sparse_mode=9),
        r"sparse_mode=9 .*9 \(treeMask\) needs query_rope/key_rope \(MLA only\)",
    ),
    (
        "sparse 9 without a mask",
        mla_decode(sparse_mode=9),
        r"atten_mask=None .*MLA with sparse_mode=9 needs a mask",
    ),
    (
        "tree mask query longer than KV",
        mla_decode(
            **MLA_Q2,
            sparse_mode=9,
            atten_mask=torch.zeros(2, 2, 256, dtype=torch.bool),
            actual_seq_lengths_kv=[1, 140],
        ),
        r"actual_seq_lengths='request 0: 2 > kv 1' .*sparse_mode=9 \(treeMask\) needs each",
    ),
    (
        "tree mask with pse_shift",
        mla_decode(
            **MLA_Q2,
            sparse_mode=9,
            atten_mask=torch.zeros(2, 2, 256, dtype=torch.bool),
            pse_shift=torch.zeros(1),
        ),
        r"pse_shift=\(1,\) .*sparse_mode=9 \(treeMask\) takes no left padding, pse_shift",
    ),
    (
        "query_rope shape",
        mla_decode(query_rope=torch.randn(2, 1, 3, 64)),
        r"query_rope=\(2, 1, 3, 64\) .*must match the query \(2, 1, 4, 512\) but D",
    ),
    (
        "BSH query_rope width",
        mla_decode(
            query=torch.randn(2, 1, 2048),
            query_rope=torch.randn(2, 1, 250),
            input_layout="BSH",
        ),
        r"query_rope=\(2, 1, 250\) .*must be \(B, S, N\*rope_D\)",
    ),
    (
        "key_rope shape",
        mla_decode(key_rope=torch.randn(4, 64, 64)),
        r"key_rope=\(4, 64, 64\) .*must match the key \(4, 128, 512\) but D",
    ),
]


@pytest.mark.parametrize(("what", "kw", "message"), CASES, ids=[c[0] for c in CASES])
def test_validation_message(what: str, kw: dict[str, object], message: str) -> None:
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=message):
        run(kw)
    assert ops.launch_counts() == {}, "a rejected call must not count a launch"
