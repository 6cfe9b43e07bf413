"""FIA size limits of both branches (batch, heads, head dim, sequence lengths) and the prompt
branch's head-dim alignment rules, with their messages.

The validator runs through the dispatch decorator before either implementation, so each case also
proves that a rejected call counts no launch.
"""

from __future__ import annotations

import pytest
import torch
from fia_baselines import dense_prefill, kv, meta, run

from sglang_ascend_fia import ops

# Size limits of both branches; the prompt branch's head-dim rules.
CASES: list[tuple[str, dict[str, object], str]] = [
    (
        "batch above 65536",
        dense_prefill(
            query=meta(65537, 1, 1, 16),
            key=meta(65537, 4, 1, 16),
            value=meta(65537, 4, 1, 16),
            num_heads=1,
            atten_mask=None,
        ),
        r"query='B=65537' .*the batch must be <= 65536",
    ),
    (
        "heads above 256",
        dense_prefill(
            query=torch.randn(1, 1, 257, 16),
            **kv(1, 4, 257, 16),
            num_heads=257,
            atten_mask=None,
        ),
        r"num_heads=257 .*must be <= 256",
    ),
    (
        "head dim above 512",
        dense_prefill(
            query=torch.randn(1, 1, 1, 528),
            **kv(1, 4, 1, 528),
            num_heads=1,
            atten_mask=None,
        ),
        r"query='D=528' .*the head dim must be <= 512",
    ),
    (
        "decode KV S above 262144",
        dense_prefill(
            query=torch.randn(1, 1, 1, 16),
            key=meta(1, 262145, 1, 16),
            value=meta(1, 262145, 1, 16),
            num_heads=1,
            atten_mask=None,
        ),
        r"actual_seq_lengths_kv='max 262145' .*Q_S=1 supports KV S <= 262144",
    ),
    (
        "prompt S above 20M",
        dense_prefill(
            query=meta(1, 20971521, 1, 16),
            key=meta(1, 4, 1, 16),
            value=meta(1, 4, 1, 16),
            num_heads=1,
            atten_mask=None,
        ),
        r"query='S=20971521' .*Q_S>1 supports S <= 20971520",
    ),
    (
        "prompt head dim not 16-aligned",
        dense_prefill(
            query=torch.randn(2, 3, 4, 24),
            **kv(2, 5, 4, 24),
        ),
        r"query='D=24' .*Q_S>1 needs the head dim 16-aligned",
    ),
    (
        "prompt value dim not 16-aligned",
        dense_prefill(value=torch.randn(2, 5, 4, 8)),
        r"value='D=8' .*Q_S>1 needs the head dim 16-aligned",
    ),
    (
        "int8 prompt head dim not 32-aligned",
        dense_prefill(
            query=torch.zeros(1, 2, 2, 16, dtype=torch.int8),
            key=torch.zeros(1, 4, 2, 16, dtype=torch.int8),
            value=torch.zeros(1, 4, 2, 16, dtype=torch.int8),
            num_heads=2,
            atten_mask=None,
        ),
        r"query='D=16' .*Q_S>1 needs the head dim 32-aligned",
    ),
    (
        "prompt BSND N*D",
        dense_prefill(
            query=torch.randn(1, 2, 128, 512),
            **kv(1, 2, 128, 512),
            num_heads=128,
            atten_mask=None,
        ),
        r"query='N\*D=65536' .*Q_S>1 with input_layout=BSND needs N\*D < 65535",
    ),
]


@pytest.mark.parametrize(("what", "kw", "message"), CASES, ids=[c[0] for c in CASES])
def test_validation_message(what: str, kw: dict[str, object], message: str) -> None:
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=message):
        run(kw)
    assert ops.launch_counts() == {}, "a rejected call must not count a launch"
