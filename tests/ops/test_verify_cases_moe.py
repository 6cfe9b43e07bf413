"""The MoE/quantisation verify-ops cases run on the reference, deterministically, on the CPU."""

from __future__ import annotations

import pytest
import torch

from sglang_ascend_fia.verify_cases_moe import CASES


def test_case_names_are_unique() -> None:
    names = [case()[0] for case in CASES]
    assert len(names) == len(set(names)) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_case_runs_on_the_reference_and_is_deterministic(case: object) -> None:
    assert callable(case)
    name, run, dtype = case()
    assert isinstance(name, str) and dtype.is_floating_point
    first, second = run("cpu"), run("cpu")
    assert len(first) == len(second) > 0
    for a, b in zip(first, second, strict=True):
        assert a.device.type == "cpu"
        assert torch.equal(a, b)
        if a.is_floating_point():
            assert bool(torch.isfinite(a).all())
        else:
            # Undefined entries are cut off: no -1 "invalid" markers reach the comparison
            # except the gather index's documented -1 for unrouted pairs.
            assert a.numel() == 0 or int(a.min()) >= -1
