"""FIA v2 specifics: v2 equals v1 on the drawn cases, and the learnable sink against the brute
force.
"""

from __future__ import annotations

import pytest
import torch
from fia_brute_force import (
    Request,
    Rule,
    _check,
    assert_close,
    brute_force,
    build,
    call,
    fia_cases,
    make_block_table,
    pack_paged,
    pack_query,
    unpack_lse,
    unpack_output,
)
from hypothesis import given, settings

from sglang_ascend_fia import ops

# ---------------------------------------------------------------------------------------------
# v2 specifics
# ---------------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(case=fia_cases())
def test_v2_equals_v1(case: dict[str, object]) -> None:
    _, _, packed, _ = build(case)
    v1 = call(packed, {**case, "v2": False}, lse=True)
    v2 = call(packed, {**case, "v2": True}, lse=True)
    torch.testing.assert_close(v1[0], v2[0], rtol=0, atol=0)
    torch.testing.assert_close(v1[1], v2[1], rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["TND", "BSND"])
def test_v2_learnable_sink(layout: str) -> None:
    gen = torch.Generator().manual_seed(11)
    n, nkv, d, bs = 4, 2, 128, 128
    q_lens = [3, 1] if layout == "TND" else [1, 1]
    kv_lens = [0, 140]
    reqs = [
        Request(
            torch.randn(q, n, d, generator=gen),
            torch.randn(k, nkv, d, generator=gen),
            torch.randn(k, nkv, d, generator=gen),
        )
        for q, k in zip(q_lens, kv_lens, strict=True)
    ]
    sink = torch.randn(n, generator=gen) * 2
    table, ids, blocks = make_block_table(kv_lens, bs, True, 0, gen)
    qlen_arg = torch.tensor(q_lens).cumsum(0).tolist() if layout == "TND" else [1, 1]
    out, lse = ops.fused_infer_attention_score_v2(
        pack_query(reqs, layout, "q", gen),
        pack_paged(reqs, "k", ids, blocks, bs, False, gen),
        pack_paged(reqs, "v", ids, blocks, bs, False, gen),
        block_table=table,
        block_size=bs,
        actual_seq_qlen=qlen_arg,
        actual_seq_kvlen=kv_lens,
        num_query_heads=n,
        num_key_value_heads=nkv,
        input_layout=layout,
        softmax_scale=0.3,
        learnable_sink=sink,
        return_softmax_lse=True,
    )
    _check(reqs, Rule("none"), unpack_output(out, layout, q_lens, n), 0.3, torch.float32, sink)
    _, want_lse = brute_force(reqs, Rule("none"), 0.3, sink)
    for b, got in enumerate(unpack_lse(lse, layout, q_lens)):
        assert_close(got[: q_lens[b]], want_lse[b], torch.float32, "lse with sink")
