"""FIA v2: its validation messages, the reference-only gaps it lets through, and the rules where
its doc differs from v1's (MLA and TND sections).
"""

from __future__ import annotations

import pytest
import torch
from fia_baselines import MLA_Q2, kv, meta, mla_band, mla_decode, paged_decode, run, tnd_dense, v2

from sglang_ascend_fia import ops


@pytest.mark.parametrize(
    ("kw", "message", "kernel_accepts"),
    [
        (
            {"dequant_scale_key": torch.ones(1)},
            r"_v2: dequant_scale_key=\(1,\) is not implemented",
            True,
        ),
        ({"key_quant_mode": 1}, r"_v2: key_quant_mode=1 is not implemented", True),
        ({"out_dtype": 1}, r"_v2: out_dtype=1 is not implemented", True),
        ({"query_dtype": 27}, r"_v2: query_dtype=27 is not implemented", True),
        ({"input_layout": "BSND_NBSD"}, r"input_layout='BSND_NBSD' is not implemented", True),
        (
            {"learnable_sink": torch.zeros(3)},
            r"learnable_sink=\(3,\) .*shape \(num_query_heads,\) = \(8,\)",
            False,
        ),
        ({"num_query_heads": 3}, r"num_key_value_heads=2 .*num_heads=3 must be divisible", False),
        ({"block_size": 24}, r"block_size=24 .*multiple of 16", False),
    ],
)
def test_v2_validation(kw: dict[str, object], message: str, kernel_accepts: bool) -> None:
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=message):
        v2(**kw)
    # Reference-only gaps pass the validator (and count the launch); kernel rules stop it first.
    assert ops.launch_counts() == ({"fused_infer_attention_score_v2": 1} if kernel_accepts else {})


def test_v2_valid_baseline_runs() -> None:
    out, lse = v2(return_softmax_lse=True, learnable_sink=torch.zeros(8))
    assert out.shape == (2, 1, 8, 16) and lse.shape == (2, 8, 1, 1)


# ---------------------------------------------------------------------------------------------
# v2: where its doc differs from v1's (MLA and TND sections)
# ---------------------------------------------------------------------------------------------


_V2_NAMES = {
    "num_heads": "num_query_heads",
    "actual_seq_lengths": "actual_seq_qlen",
    "actual_seq_lengths_kv": "actual_seq_kvlen",
    "scale": "softmax_scale",
}


def run_v2(kw: dict[str, object]) -> tuple[torch.Tensor, torch.Tensor]:
    args = {_V2_NAMES.get(k, k): v for k, v in kw.items()}
    return ops.fused_infer_attention_score_v2(
        args.pop("query"), args.pop("key"), args.pop("value"), **args
    )


V2_CASES: list[tuple[str, dict[str, object], str]] = [
    (
        "v2 TND dense D 160",
        tnd_dense(
            query=torch.randn(7, 8, 160), key=torch.randn(7, 8, 160), value=torch.randn(7, 8, 160)
        ),
        r"query/key/value D=\(160, 160, 160\) .*\(192, 192, 128\), \(192, 192, 192\), "
        r"\(128, 128, 128\)\]",
    ),
    (
        "v2 TND dense above 1M tokens",
        tnd_dense(
            query=meta(1048577, 8, 128),
            key=meta(1048577, 8, 128),
            value=meta(1048577, 8, 128),
            actual_seq_lengths=[1048577],
            actual_seq_lengths_kv=[1048577],
        ),
        r"query='T=1048577' .*TND without page attention needs T <= 1048576",
    ),
    (
        "v2 TND dense 4097 requests",
        tnd_dense(
            query=meta(4097, 8, 128),
            key=meta(4097, 8, 128),
            value=meta(4097, 8, 128),
            actual_seq_lengths=list(range(1, 4098)),
            actual_seq_lengths_kv=list(range(1, 4098)),
        ),
        r"actual_seq_qlen='4097 entries' .*at most 4096 \(v2\)",
    ),
    (
        "v2 MLA query D 128 with page attention",
        mla_decode(
            query=torch.randn(2, 1, 4, 128),
            **kv(4, 128, 128),
        ),
        r"query='D=128' .*MLA with a query D of 128 needs TND without page attention",
    ),
    ("v2 MLA sparse 4", mla_band(), r"sparse_mode=4 .*v2 MLA with Q_S=1 takes 0"),
    (
        "v2 MLA 3 heads",
        mla_decode(
            query=torch.randn(2, 1, 3, 512), query_rope=torch.randn(2, 1, 3, 64), num_heads=3
        ),
        r"num_heads=3 .*v2 MLA needs N in \(1, 2, 4, 8, 16, 32, 64, 128\)",
    ),
    (
        "v2 sparse 9",
        mla_decode(**MLA_Q2, sparse_mode=9, atten_mask=torch.zeros(2, 2, 256, dtype=torch.bool)),
        r"sparse_mode=9 .*the v2 op takes one of \(0, 1, 2, 3, 4\)",
    ),
    (
        "v2-only layout, sparse 9",
        paged_decode(input_layout="BSND_NBSD", sparse_mode=9),
        r"sparse_mode=9 .*the v2 op takes one of \(0, 1, 2, 3, 4\)",
    ),
]


@pytest.mark.parametrize(("what", "kw", "message"), V2_CASES, ids=[c[0] for c in V2_CASES])
def test_v2_doc_rules(what: str, kw: dict[str, object], message: str) -> None:
    ops.reset_launch_counts()
    with pytest.raises(ValueError, match=message):
        run_v2(kw)
    assert ops.launch_counts() == {}


def test_v2_accepts_tnd_gqa_d128_and_tnd_paged_mla() -> None:
    """v2 documents GQA and D 128 for TND without paging, and TND for paged MLA at D 512."""
    gqa = tnd_dense(
        query=torch.randn(7, 8, 128),
        **kv(7, 2, 128),
        num_key_value_heads=2,
    )
    out, _ = run_v2(gqa)
    assert out.shape == (7, 8, 128) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"num_heads/num_key_value_heads=\(8, 2\)"):
        run(gqa)  # v1's doc requires Q_N = K_N = V_N
    mla_tnd = mla_decode(
        query=torch.randn(2, 4, 512),
        query_rope=torch.randn(2, 4, 64),
        input_layout="TND",
        actual_seq_lengths=[1, 2],
    )
    out, _ = run_v2(mla_tnd)
    assert out.shape == (2, 4, 512)
    with pytest.raises(
        ValueError, match=r"input_layout='TND' .*MLA takes \('BSH', 'BSND', 'BNSD'\)"
    ):
        run(mla_tnd)
