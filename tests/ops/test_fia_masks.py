"""FIA sparse-mode and mask rules with their messages: sparse modes, template and explicit masks,
mask dtypes and widths, inner_precise.

The validator runs through the dispatch decorator before either implementation, so each case also
proves that a rejected call counts no launch.
"""

from __future__ import annotations

import pytest
import torch
from fia_baselines import TEMPLATE, dense_prefill, paged_decode, run, tnd_prefill

from sglang_ascend_fia import ops

# Sparse modes and masks.
CASES: list[tuple[str, dict[str, object], str]] = [
    (
        "sparse mode 5",
        tnd_prefill(sparse_mode=5),
        r"sparse_mode=5 .*must be one of \(0, 1, 2, 3, 4, 9\) \(9 with query_rope/key_rope only\)",
    ),
    (
        "sparse 3 without template",
        tnd_prefill(atten_mask=None),
        r"atten_mask=None .*sparse_mode=3 needs the 2048x2048 lower-triangular template",
    ),
    (
        "sparse 3 with a small mask",
        tnd_prefill(atten_mask=torch.ones(7, 130, dtype=torch.bool)),
        r"atten_mask=\(7, 130\) .*2048x2048",
    ),
    (
        "sparse 1 without mask",
        tnd_prefill(sparse_mode=1, atten_mask=None),
        r"atten_mask=None .*sparse_mode=1 \(allMask\) needs a full mask",
    ),
    (
        "mask dtype",
        tnd_prefill(atten_mask=TEMPLATE.float()),
        r"atten_mask=torch.float32 .*dtype must be one of",
    ),
    (
        "explicit mask too small",
        tnd_prefill(sparse_mode=0, atten_mask=torch.zeros(1, 3, 130, dtype=torch.bool)),
        r"atten_mask=\(1, 3, 130\) .*must cover Q_S=4 query rows and KV_S=130",
    ),
    (
        "explicit mask shape",
        tnd_prefill(sparse_mode=0, atten_mask=torch.zeros(3, 4, 130, dtype=torch.bool)),
        r"atten_mask=\(3, 4, 130\) .*needs \(1,Q_S,KV_S\)",
    ),
    (
        "inner_precise range",
        paged_decode(inner_precise=4),
        r"inner_precise=4 .*must be 0, 1, 2 or 3",
    ),
    (
        "inner_precise at decode",
        paged_decode(inner_precise=2),
        r"inner_precise=2 .*Q_S=1 only supports 0 and 1",
    ),
]


# Masks.
CASES += [
    (
        "2-D mask with TND",
        tnd_prefill(sparse_mode=0, atten_mask=torch.zeros(4, 256, dtype=torch.bool)),
        r"atten_mask=\(4, 256\) .*the 2-D \(Q_S,KV_S\)/\(B,KV_S\) form needs BSH/BSND/BNSD",
    ),
    (
        "paged decode mask narrower than the table",
        paged_decode(atten_mask=torch.zeros(2, 300, dtype=torch.bool)),
        r"atten_mask=\(2, 300\) .*page attention its last dim must be >= 3 blocks \* "
        r"block_size 128 = 384",
    ),
    (
        "paged prefill mask narrower than the longest request's blocks",
        tnd_prefill(sparse_mode=0, atten_mask=torch.zeros(1, 4, 200, dtype=torch.bool)),
        r"atten_mask=\(1, 4, 200\) .*last dim must be >= 2 blocks \* block_size 128 = 256",
    ),
    (
        "non-contiguous mask",
        dense_prefill(atten_mask=torch.zeros(2, 1, 5, 3, dtype=torch.bool).transpose(2, 3)),
        r"atten_mask=\(2, 1, 3, 5\) .*non-contiguous",
    ),
]


@pytest.mark.parametrize(("what", "kw", "message"), CASES, ids=[c[0] for c in CASES])
def test_validation_message(what: str, kw: dict[str, object], message: str) -> None:
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=message):
        run(kw)
    assert ops.launch_counts() == {}, "a rejected call must not count a launch"
