"""FIA TND without page attention (v1 doc): dtypes, T, heads, head dims, sparse modes and masks,
with their messages.

The validator runs through the dispatch decorator before either implementation, so each case also
proves that a rejected call counts no launch.
"""

from __future__ import annotations

import pytest
import torch
from fia_baselines import kv, meta, run, tnd_dense

from sglang_ascend_fia import ops

# TND without page attention (v1 doc).
CASES: list[tuple[str, dict[str, object], str]] = [
    (
        "TND dense fp16",
        tnd_dense(
            query=torch.randn(7, 8, 192).half(),
            key=torch.randn(7, 8, 192).half(),
            value=torch.randn(7, 8, 128).half(),
        ),
        r"query=torch.float16 .*TND without page attention takes bfloat16 only",
    ),
    (
        "TND dense T above 65536",
        tnd_dense(
            query=meta(65537, 8, 192),
            key=meta(65537, 8, 192),
            value=meta(65537, 8, 128),
            actual_seq_lengths=[65537],
            actual_seq_lengths_kv=[65537],
        ),
        r"query='T=65537' .*TND without page attention needs T <= 65536",
    ),
    (
        "TND dense 4 heads",
        tnd_dense(
            query=torch.randn(7, 4, 192),
            key=torch.randn(7, 4, 192),
            value=torch.randn(7, 4, 128),
            num_heads=4,
        ),
        r"num_heads/num_key_value_heads=\(4, 4\) .*N in \(8, 16, 32, 64, 128\) with "
        r"Q_N = K_N = V_N",
    ),
    (
        "TND dense GQA",
        tnd_dense(key=torch.randn(7, 2, 192), value=torch.randn(7, 2, 128), num_key_value_heads=2),
        r"num_heads/num_key_value_heads=\(8, 2\) .*Q_N = K_N = V_N",
    ),
    (
        "TND dense D 128",
        tnd_dense(
            query=torch.randn(7, 8, 128), key=torch.randn(7, 8, 128), value=torch.randn(7, 8, 128)
        ),
        r"query/key/value D=\(128, 128, 128\) .*needs one of \[\(192, 192, 128\), "
        r"\(192, 192, 192\)\]",
    ),
    (
        "TND dense sparse 2",
        tnd_dense(sparse_mode=2),
        r"sparse_mode=2 .*TND without page attention takes 0, 3 or 4",
    ),
    (
        "TND dense sparse 0 with a mask",
        tnd_dense(sparse_mode=0),
        r"atten_mask=\(2048, 2048\) .*TND without page attention with sparse_mode=0 takes no mask",
    ),
    (
        "TND dense sparse 3 without a mask",
        tnd_dense(atten_mask=None),
        r"atten_mask=None .*TND without page attention with sparse_mode=3 needs a mask",
    ),
    (
        "TND dense sparse 3 query longer than KV",
        tnd_dense(
            key=torch.randn(6, 8, 192), value=torch.randn(6, 8, 128), actual_seq_lengths_kv=[2, 6]
        ),
        r"actual_seq_lengths='request 0: 3 > kv 2' .*sparse_mode=3 needs each request's query "
        r"length <= its KV",
    ),
    (
        "TND dense sparse 4 pre_tokens below -q_len",
        tnd_dense(sparse_mode=4, pre_tokens=-4, next_tokens=10),
        r"pre_tokens/next_tokens=\(-4, 10\) .*pre_tokens >= -q_len and next_tokens >= -kv_len",
    ),
    (
        "TND dense sparse 4 empty band",
        tnd_dense(sparse_mode=4, pre_tokens=-2, next_tokens=1),
        r"pre_tokens/next_tokens=\(-2, 1\) .*pre_tokens \+ next_tokens >= 0",
    ),
    (
        "TND MLA rope D",
        tnd_dense(
            query=torch.randn(7, 8, 128),
            **kv(7, 8, 128),
            query_rope=torch.randn(7, 8, 32),
            key_rope=torch.randn(7, 8, 32),
        ),
        r"query/key/value D, rope D=\(128, 128, 128, 32\) .*Q_D = K_D = V_D = 128 and rope D 64",
    ),
]


@pytest.mark.parametrize(("what", "kw", "message"), CASES, ids=[c[0] for c in CASES])
def test_validation_message(what: str, kw: dict[str, object], message: str) -> None:
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=message):
        run(kw)
    assert ops.launch_counts() == {}, "a rejected call must not count a launch"
