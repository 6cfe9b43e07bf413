"""What the FIA kernel accepts but the reference does not model: the validator (which also runs
in front of torch_npu) lets it through, and the reference refuses it by name.
"""

from __future__ import annotations

import pytest
import torch
from fia_baselines import MLA_Q2, dense_prefill, mla_decode, paged_decode, run, tnd_prefill

from sglang_ascend_fia import ops

# What the kernel accepts but the reference does not model: the validator (which also runs in
# front of torch_npu) lets it through, and the reference refuses it by name.
REFERENCE_ONLY: list[tuple[str, dict[str, object], str]] = [
    (
        "NZ cache",
        paged_decode(key=torch.randn(6, 2, 1, 128, 16), value=torch.randn(6, 2, 1, 128, 16)),
        r"key=\(6, 2, 1, 128, 16\) is not implemented by the reference \(it supports ND caches",
    ),
    (
        "int8 query and key (prompt, dense)",
        dense_prefill(
            query=torch.zeros(1, 2, 2, 32, dtype=torch.int8),
            key=torch.zeros(1, 4, 2, 32, dtype=torch.int8),
            value=torch.zeros(1, 4, 2, 32, dtype=torch.int8),
            num_heads=2,
            atten_mask=None,
        ),
        r"query/key dtype=\(torch.int8, torch.int8\) is not implemented by the reference",
    ),
    (
        "int8 cache (antiquant)",
        paged_decode(
            key=torch.zeros(6, 128, 32, dtype=torch.int8),
            value=torch.zeros(6, 128, 32, dtype=torch.int8),
            antiquant_scale=torch.ones(2, 32),
        ),
        r"antiquant_scale=\(2, 32\) is not implemented by the reference",
    ),
    (
        "-1 inside a request",
        paged_decode(block_table=torch.tensor([[0, -1, -1], [2, 3, 4]], dtype=torch.int32)),
        r"block_table='\[0, 1\] = -1' .*request 0 needs block slot 1 for its 200 tokens",
    ),
    (
        "block id past the cache",
        paged_decode(block_table=torch.tensor([[0, 9, -1], [2, 3, 4]], dtype=torch.int32)),
        r"block_table='\[0, 1\] = 9' .*ids must be in \[0, 6\)",
    ),
    (
        "tokens with an explicit mask",
        tnd_prefill(
            sparse_mode=0, pre_tokens=5, atten_mask=torch.zeros(1, 4, 256, dtype=torch.bool)
        ),
        r"pre_tokens/next_tokens=\(5, 2147483647\) is not implemented by the reference",
    ),
    (
        "pse_shift",
        paged_decode(pse_shift=torch.zeros(2, 8, 1, 384)),
        r"pse_shift=\(2, 8, 1, 384\) is not implemented by the reference",
    ),
    (
        "antiquant_mode",
        paged_decode(antiquant_mode=1),
        r"antiquant_mode=1 is not implemented by the reference",
    ),
    (
        "quant_scale2",
        paged_decode(quant_scale2=torch.ones(1)),
        r"quant_scale2=\(1,\) is not implemented by the reference",
    ),
    (
        "shared prefix",
        paged_decode(actual_shared_prefix_len=[3]),
        r"actual_shared_prefix_len=\[3\] is not implemented by the reference",
    ),
    (
        "tree mask (sparse_mode 9, MLA)",
        mla_decode(**MLA_Q2, sparse_mode=9, atten_mask=torch.zeros(2, 2, 256, dtype=torch.bool)),
        r"sparse_mode=9 is not implemented by the reference \(.* treeMask layout is undocumented",
    ),
]


@pytest.mark.parametrize(
    ("what", "kw", "message"), REFERENCE_ONLY, ids=[c[0] for c in REFERENCE_ONLY]
)
def test_reference_refuses_what_only_it_lacks(
    what: str, kw: dict[str, object], message: str
) -> None:
    args = dict(kw)
    q, k, v = args.pop("query"), args.pop("key"), args.pop("value")
    ops.fused_infer_attention_score.validate(q, k, v, **args)  # an NPU call would go through
    with pytest.raises(ValueError, match=message):
        run(kw)
