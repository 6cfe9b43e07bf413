"""The modelslim static W8A8 hook (``w8a8.modelslim``) against brute force.

Brute force: the activation quantised per tensor by hand (``round(x / s + o)``, saturated,
float32 as the documented kernel computes it), the int8 product summed in int64, the int32
``quant_bias`` added, times ``deq_scale``: what ``NPUW8A8Int8LinearMethod`` asks of
``npu_quantize`` -> ``npu_quant_matmul`` (``linear_method_npu.py:89-120``). The hook lays the
layer out as sglang does at load and runs the two ops through ``ops``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.w8a8.convert import quantize_weight

# The hook module imports sglang's linear layers when it runs (a few seconds).
modelslim = pytest.importorskip("sglang_ascend_fia.w8a8.modelslim")


def _param(t: torch.Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(t.clone(), requires_grad=False)


def _static_layer(
    gen: torch.Generator, out_dim: int, in_dim: int, offset: float, dtype: torch.dtype
) -> SimpleNamespace:
    """A loaded ``ModelSlimW8A8Int8`` static layer: the tensors ``create_weights`` registers."""
    q, scale = quantize_weight(torch.randn(out_dim, in_dim, generator=gen) * 0.1)
    input_scale = torch.tensor([0.02], dtype=dtype)
    deq = (input_scale.float() * scale.float().flatten()).float()
    return SimpleNamespace(
        weight=_param(q),
        weight_scale=_param(scale.to(dtype)),
        weight_offset=_param(torch.zeros(out_dim, 1, dtype=dtype)),
        input_scale=_param(input_scale),
        input_offset=_param(torch.tensor([offset], dtype=dtype)),
        quant_bias=_param(torch.randint(-500, 500, (out_dim,), generator=gen, dtype=torch.int32)),
        deq_scale=_param(deq if dtype == torch.bfloat16 else deq.view(torch.int32).to(torch.int64)),
    )


def _brute_force(layer: Any, q: torch.Tensor, x: torch.Tensor, bias: bool) -> torch.Tensor:
    s = float(layer.input_scale.float())
    o = float(layer.input_offset.float())
    xq = torch.round(x.float() * torch.tensor(1 / s).to(x.dtype).float() + o).clamp(-128, 127)
    acc = xq.to(torch.int64) @ q.to(torch.int64).t()
    if bias:
        acc = acc + layer.quant_bias.to(torch.int64)
    return (acc.double() * layer.deq_scale.double()).to(x.dtype)


@pytest.mark.parametrize("offset", [0.0, 3.0])
def test_static_layer_equals_brute_force(offset: float) -> None:
    gen = torch.Generator().manual_seed(3)
    layer = _static_layer(gen, 24, 40, offset, torch.bfloat16)
    q = layer.weight.data.clone()
    modelslim.lay_out_static(layer)
    assert layer.weight.shape == (40, 24)
    assert layer.aclnn_input_scale_reciprocal.shape == (40,)
    x = (torch.randn(2, 5, 40, generator=gen) * 2).to(torch.bfloat16)
    ops.reset_launch_counts()
    got = modelslim.static_linear(layer, x)
    assert ops.launch_counts() == {"quantize": 1, "quant_matmul": 1}
    want = _brute_force(layer, q, x.reshape(-1, 40), bias=True).reshape(2, 5, 24)
    torch.testing.assert_close(got, want, atol=0, rtol=1e-2)


def test_row_parallel_ranks_above_zero_leave_the_bias_to_rank_zero() -> None:
    from sglang.srt.layers.linear import ColumnParallelLinear, RowParallelLinear

    gen = torch.Generator().manual_seed(4)
    for cls, rank, adds_bias in (
        (RowParallelLinear, 0, True),
        (RowParallelLinear, 1, False),
        (ColumnParallelLinear, 1, True),
    ):
        layer = cls.__new__(cls)  # no process group needed: only the rank is read
        torch.nn.Module.__init__(layer)
        for name, value in vars(_static_layer(gen, 8, 16, 0.0, torch.bfloat16)).items():
            setattr(layer, name, value)
        layer.tp_group = SimpleNamespace(rank_in_group=rank)
        q = layer.weight.data.clone()
        modelslim.lay_out_static(layer)
        x = torch.randn(3, 16, generator=gen).to(torch.bfloat16)
        want = _brute_force(layer, q, x, bias=adds_bias)
        got = modelslim.static_linear(layer, x)
        torch.testing.assert_close(got, want, atol=0, rtol=1e-2, msg=f"{cls.__name__} {rank}")


def test_a_float16_models_packed_deq_scale_is_refused_at_load_off_an_npu() -> None:
    layer = _static_layer(torch.Generator().manual_seed(5), 8, 16, 0.0, torch.float16)
    with pytest.raises(ValueError) as caught:
        modelslim.lay_out_static(layer)
    message = str(caught.value)
    assert "deq_scale dtype int64" in message and "--dtype bfloat16" in message, message
