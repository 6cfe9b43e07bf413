"""FIA layout and geometry rules with their messages: head counts, input layouts and ranks, dense
key/value shapes, and the query/key tensor forms.

The validator runs through the dispatch decorator before either implementation, so each case also
proves that a rejected call counts no launch.
"""

from __future__ import annotations

import pytest
import torch
from fia_baselines import dense_prefill, kv, paged_decode, run, tnd_dense

from sglang_ascend_fia import ops

# Heads.
CASES: list[tuple[str, dict[str, object], str]] = [
    (
        "heads not divisible",
        paged_decode(num_key_value_heads=3),
        r"num_key_value_heads=3 .*num_heads=8 must be divisible",
    ),
    (
        "ratio above 64",
        paged_decode(query=torch.randn(2, 1, 130, 16), num_heads=130, num_key_value_heads=2),
        r"num_key_value_heads=2 .*65 exceeds 64",
    ),
    (
        "num_heads vs query N",
        paged_decode(num_heads=4, num_key_value_heads=2),
        r"num_heads=4 .*must equal the query's N axis \(8\)",
    ),
    (
        "BSH H not divisible",
        paged_decode(query=torch.randn(2, 1, 100), input_layout="BSH"),
        r"num_heads=8 .*query H=100 must be divisible",
    ),
]


# Layouts and ranks.
CASES += [
    (
        "unknown layout",
        paged_decode(input_layout="SBH"),
        r"input_layout='SBH' .*must be one of \('BSH', 'BSND', 'BNSD', 'BNSD_BSND', 'TND'\)",
    ),
    (
        "rank mismatch",
        paged_decode(input_layout="BSH"),
        r"query=\(2, 1, 8, 16\) .*input_layout=BSH needs a 3-D query",
    ),
    (
        "BNSD_BSND decode",
        paged_decode(query=torch.randn(2, 8, 1, 16), input_layout="BNSD_BSND"),
        r"input_layout='BNSD_BSND' .*only supported for Q_S > 1",
    ),
    (
        "4-D cache with BSND",
        paged_decode(key=torch.randn(6, 2, 128, 16), value=torch.randn(6, 2, 128, 16)),
        r"key=\(6, 2, 128, 16\) .*BSND query only takes the \(blocks, block_size, H\) cache",
    ),
    (
        "dense key rank",
        {
            **paged_decode(block_table=None, block_size=0, actual_seq_lengths_kv=None),
            "key": torch.randn(2, 5, 32),
            "value": torch.randn(2, 5, 32),
        },
        r"key=\(2, 5, 32\) .*dense BSND key must have the query's rank",
    ),
]


# Tensors.
CASES += [
    (
        "non-contiguous query",
        paged_decode(query=torch.randn(2, 1, 16, 8).transpose(2, 3)),
        r"query=\(2, 1, 8, 16\) .*non-contiguous",
    ),
    (
        "key dtype",
        paged_decode(key=torch.randn(6, 128, 32).bfloat16()),
        r"key=torch.bfloat16 .*dtype must be one of \(torch.float32, torch.int8, torch.int32\)",
    ),
]


# Dense key/value geometry.
CASES += [
    (
        "dense BSH key H",
        dense_prefill(
            query=torch.randn(2, 3, 64),
            **kv(2, 5, 66),
            input_layout="BSH",
            atten_mask=None,
        ),
        r"key=\(2, 5, 66\) .*H must be divisible by num_key_value_heads=4",
    ),
    (
        "dense key N axis",
        dense_prefill(key=torch.randn(2, 5, 2, 16), value=torch.randn(2, 5, 2, 16)),
        r"key=\(2, 5, 2, 16\) .*its N axis must equal num_key_value_heads=4",
    ),
    (
        "dense key batch",
        dense_prefill(key=torch.randn(3, 5, 4, 16), value=torch.randn(3, 5, 4, 16)),
        r"key=\(3, 5, 4, 16\) .*its batch axis must equal the query's B=2",
    ),
    (
        "dense value S",
        dense_prefill(value=torch.randn(2, 6, 4, 16)),
        r"value=\(2, 6, 4, 16\) .*must match the key's shape \(2, 5, 4, 16\) but for D",
    ),
    (
        "dense key D",
        dense_prefill(key=torch.randn(2, 5, 4, 32)),
        r"key=\(2, 5, 4, 32\) .*its D \(32\) must equal the query's D \(16\)",
    ),
    (
        "dense TND without KV lengths",
        tnd_dense(actual_seq_lengths_kv=None),
        r"actual_seq_lengths_kv=None .*a dense TND key needs cumulative lengths",
    ),
    (
        "dense TND KV length count",
        tnd_dense(actual_seq_lengths_kv=[7]),
        r"actual_seq_lengths_kv=\[7\] .*needs one entry per request \(B=2",
    ),
]


@pytest.mark.parametrize(("what", "kw", "message"), CASES, ids=[c[0] for c in CASES])
def test_validation_message(what: str, kw: dict[str, object], message: str) -> None:
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=message):
        run(kw)
    assert ops.launch_counts() == {}, "a rejected call must not count a launch"
