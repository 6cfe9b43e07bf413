"""``swiglu``: the reference against ``silu(A) * B``, and every documented rule with its message."""

from __future__ import annotations

import pytest
import torch
from moe_cases import _gen
from op_refusals import REFUSAL_FIELDS, assert_validator_rejects, refusal_params

from sglang_ascend_fia import ops

# ---------------------------------------------------------------------------------------------
# swiglu
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_swiglu_is_silu_of_first_half_times_second(dtype: torch.dtype, dim: int) -> None:
    x = torch.randn(4, 6, 8, generator=_gen(1)).to(dtype)
    a, b = x.double().chunk(2, dim=dim)
    ref = a * torch.sigmoid(a) * b
    out = ops.swiglu(x, dim)
    assert out.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(out.double(), ref, **tol)


# ---------------------------------------------------------------------------------------------
# Validation: every documented rule, with its message
# ---------------------------------------------------------------------------------------------


VALIDATION_CASES = [
    (
        "swiglu dtype",
        ops.swiglu,
        (torch.ones(2, 4, dtype=torch.int32),),
        {},
        r"swiglu: self=.*must have dtype in",
    ),
    (
        "swiglu dims",
        ops.swiglu,
        (torch.ones(()),),
        {},
        r"swiglu: self=.*must have 1 to 8 dimensions",
    ),
    (
        "swiglu dim",
        ops.swiglu,
        (torch.ones(2, 4), 2),
        {},
        r"dim=2 is not allowed: must index one of 2 axes",
    ),
    (
        "swiglu odd",
        ops.swiglu,
        (torch.ones(2, 5),),
        {},
        r"self=.*must have an even size along dim=-1",
    ),
]


@pytest.mark.parametrize(REFUSAL_FIELDS, refusal_params(VALIDATION_CASES))
def test_validator_rejects_with_a_message_naming_argument_value_and_rule(
    op: object, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    assert_validator_rejects(op, args, kwargs, match)
