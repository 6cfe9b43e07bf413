"""The MoE, grouped-matmul and quantisation verify-ops cases compare only defined entries.

Determinism and finiteness of every case are checked in ``test_verify_ops.py``; argument coverage
in ``test_verify_coverage.py``.
"""

from __future__ import annotations

import pytest
import torch

from sglang_ascend_fia.verify.cases import gating, gmm, moe, quant

CASES = [*gating.CASES, *moe.CASES, *gmm.CASES, *quant.CASES]
OPS = (
    "moe_gating_top_k_softmax",
    "moe_gating_top_k",
    "moe_init_routing_v2",
    "grouped_matmul",
    "moe_finalize_routing",
    "swiglu",
    "dynamic_quant",
    "quantize",
    "quant_matmul",
    "dequant_swiglu_quant",
)


def test_case_names_are_unique_and_start_with_their_op() -> None:
    names = [case()[0] for case in CASES]
    assert len(names) == len(set(names)) == len(CASES)
    assert all(name.split(" ")[0] in OPS for name in names), names


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_index_outputs_hold_no_undefined_entries(case: object) -> None:
    assert callable(case)
    _, run, dtype = case()
    assert dtype.is_floating_point
    for out in run("cpu"):
        if out.dtype not in (torch.int32, torch.int64):
            continue  # float results and int8 data rows; index/count outputs are int32/int64
        # Undefined tails are cut off: no value below the gather index's documented -1 for
        # unrouted pairs, and the key_value count keeps only its pairs and the terminator.
        assert out.numel() == 0 or int(out.min()) >= -1
        if out.dim() == 2 and out.size(1) == 2 and out.dtype == torch.int64:
            assert int((out.sum(dim=1) == 0).sum()) <= 1, "key_value rows past the terminator"
