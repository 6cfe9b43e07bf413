"""Helpers shared by the quantisation op tests (``test_dynamic_quant.py``, ``test_quant_matmul.py``,
``test_dequant_swiglu_quant.py``, ``test_w8a8_moe_chain.py``): seeded generators, the int8
round-trip check and its slack, per-channel weight quantisation, and the bf16 input that the
refusal tables and the launch counter share.
"""

from __future__ import annotations

import torch
from hypothesis import settings

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)
# The quotient x / scale (at most 127) carries one float32 rounding, up to 127 * 2^-24 < 2^-17
# of a step, so a value within that of a half step may round the other way: the documented
# |x - y*scale| <= scale/2 holds up to a relative 2^-16.
ROUND_SLACK = 1 + 2.0**-16
# Unit roundoff of the output dtypes, doubled to cover the float32 steps before the final cast.
OUT_RTOL = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_round_trip(target: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> None:
    """|target - y*scale| <= scale/2 per element, and each row's max maps to +-127."""
    s = scale.double().unsqueeze(-1)
    err = (target.double() - y.double() * s).abs()
    assert bool((err <= s / 2 * ROUND_SLACK).all()), float((err - s / 2).max())
    nonzero = scale > 0
    assert bool((y.abs().amax(-1)[nonzero] == 127).all())
    torch.testing.assert_close(scale, target.float().abs().amax(-1) / 127, rtol=0, atol=0)


def _per_channel_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel weight quantisation of w [..., K, N]: (int8, scale [..., N])."""
    scale = w.abs().amax(-2) / 127
    return torch.round(w / scale.unsqueeze(-2)).to(torch.int8), scale


_BF = torch.ones(2, 8, dtype=torch.bfloat16)
