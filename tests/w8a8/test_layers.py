"""The W8A8 hooks' compute against brute force: dense layers and the routed-expert chain.

The brute-force side quantises activations per token itself (``round(x / s)``, ``s = rowmax|x|
/ 127``, in float32 like the documented kernel: at an exact .5 tie float64 could round the
other way), multiplies by the dequantised weights in float64, rounds to bfloat16 where the
chain's ops output bfloat16, and loops over tokens and experts; the hooks run the ``ops`` chain
sglang's NPU methods run. Both see the same int8 weights.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from sglang_ascend_fia.w8a8 import experts as experts_w8a8
from sglang_ascend_fia.w8a8 import linear
from sglang_ascend_fia.w8a8.convert import quantize_weight
from sglang_ascend_fia.w8a8.experts import routed_experts_w8a8, scale_dtype_for

# The hook module subclasses sglang's methods: importing it imports sglang (a few seconds).
methods = pytest.importorskip("sglang_ascend_fia.w8a8.methods")


def _fake_quant(x: torch.Tensor) -> torch.Tensor:
    """Per-row symmetric int8 round trip: what the int8 activations stand for (float64 out)."""
    x = x.float()
    scale = x.abs().amax(dim=-1, keepdim=True) / 127
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(x / safe).clamp(-127, 127).double() * scale.double()


def _int8_weight(out_dim: int, in_dim: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    q, scale = quantize_weight(torch.randn(out_dim, in_dim, generator=gen) * 0.1)
    return q, scale, q.double() * scale.double()  # int8 [out, in], fp32 [out, 1], dequantised


def _linear_layer(q: torch.Tensor, scale: torch.Tensor) -> SimpleNamespace:
    return SimpleNamespace(
        weight=torch.nn.Parameter(q.clone(), requires_grad=False),
        weight_scale=torch.nn.Parameter(scale.clone(), requires_grad=False),
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_dense_layer_equals_quantised_activations_times_dequantised_weights(
    dtype: torch.dtype, with_bias: bool
) -> None:
    gen = torch.Generator().manual_seed(1)
    q, scale, w = _int8_weight(24, 40, gen)
    layer = _linear_layer(q, scale)
    linear.lay_out_weights(layer)
    assert layer.weight.shape == (40, 24) and layer.weight.is_contiguous()
    assert layer.weight_scale.shape == (24,)
    x = torch.randn(2, 5, 40, generator=gen).to(dtype)
    x[1, 2] = 0  # an all-zero token quantises to zeros with scale 0
    bias = (torch.randn(24, generator=gen) * 0.1).to(dtype) if with_bias else None
    out = linear.quant_linear(x, layer.weight, layer.weight_scale, bias)
    expected = _fake_quant(x.reshape(-1, 40)) @ w.T
    if bias is not None:
        expected = expected + bias.double()
    assert out.dtype == dtype and out.shape == (2, 5, 24)
    # One rounding to the output dtype apart: half an ulp, 2^-9 (bf16) or 2^-12 (fp16) relative.
    ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    torch.testing.assert_close(out.reshape(-1, 24).double(), expected, rtol=ulp, atol=1e-6)
    # The int8 path is near the float layer: activation rounding is its only extra error.
    float_out = x.reshape(-1, 40).double() @ w.T + (0 if bias is None else bias.double())
    assert (out.reshape(-1, 24).double() - float_out).abs().max() < 0.05


def test_sglang_linear_layer_runs_the_int8_pair_through_the_hooked_method() -> None:
    """A real sglang ``ReplicatedLinear`` built under ``W8A8Int8Config``: the hook swaps in the
    plugin's method, which lays out the int8 weights sglang created and runs the ops pair."""
    from sglang.srt.layers.linear import ReplicatedLinear
    from sglang.srt.layers.quantization.unquant import UnquantizedLinearMethod
    from sglang.srt.layers.quantization.w8a8_int8 import W8A8Int8Config, W8A8Int8LinearMethod

    from sglang_ascend_fia import ops

    config = W8A8Int8Config({"quant_method": "w8a8_int8", "ignore": ["lm_head"]})
    prefix = "model.layers.0.mlp.down_proj"
    layer = ReplicatedLinear(
        40, 24, bias=False, quant_config=config, prefix=prefix, params_dtype=torch.bfloat16
    )
    assert type(layer.quant_method) is W8A8Int8LinearMethod  # what stock sglang hands out
    method = methods.get_quant_method(config.get_quant_method, config, (layer, prefix), {})
    assert isinstance(method, methods.FIAW8A8Int8LinearMethod)
    ignored = methods.get_quant_method(config.get_quant_method, config, (layer, "lm_head"), {})
    assert type(ignored) is UnquantizedLinearMethod
    gen = torch.Generator().manual_seed(4)
    q, scale, w = _int8_weight(24, 40, gen)
    layer.weight.data.copy_(q)  # sglang created int8 [out, in] and fp32 [out, 1]
    layer.weight_scale.data.copy_(scale)
    layer.quant_method = method
    method.process_weights_after_loading(layer)
    x = torch.randn(6, 40, generator=gen).to(torch.bfloat16)
    ops.reset_launch_counts()
    out, _ = layer(x)
    assert ops.launch_counts() == {"dynamic_quant": 1, "quant_matmul": 1}
    expected = _fake_quant(x) @ w.T
    torch.testing.assert_close(out.double(), expected, rtol=2.0**-8, atol=1e-6)


def test_dense_layout_refuses_a_float_weight() -> None:
    gen = torch.Generator().manual_seed(2)
    q, scale, _ = _int8_weight(8, 16, gen)
    with pytest.raises(ValueError, match=r"dtype torch.float32 .* accepted: int8 \[out, in\]"):
        linear.lay_out_weights(_linear_layer(q.float(), scale))


def _experts(
    num_experts: int, hidden: int, inter: int, gen: torch.Generator, dtype: torch.dtype
) -> dict[str, Any]:
    w13 = [_int8_weight(2 * inter, hidden, gen) for _ in range(num_experts)]
    w2 = [_int8_weight(hidden, inter, gen) for _ in range(num_experts)]
    return {
        "w13": torch.stack([q for q, _, _ in w13]),
        "w13_scale": torch.stack([s for _, s, _ in w13]),  # [E, 2I, 1] as sglang loads it
        "w2": torch.stack([q for q, _, _ in w2]),
        "w2_scale": torch.stack([s for _, s, _ in w2]),
        # The chain multiplies by bfloat16 expert scales in a bfloat16 model (as
        # NPUW8A8Int8MoEMethod stores them) and float32 ones in a float16 model; the loop
        # dequantises with the same scales.
        "w13_deq": [q.double() * _round(s, scale_dtype_for(dtype)) for q, s, _ in w13],
        "w2_deq": [q.double() * _round(s, scale_dtype_for(dtype)) for q, s, _ in w2],
    }


def _round(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype).double()


def _dense_loop(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, e: dict) -> torch.Tensor:
    """Per token, per chosen expert: int8 round trips where the NPU chain quantises."""
    out = torch.zeros(x.shape, dtype=torch.float64)
    for t in range(x.shape[0]):
        xq = _fake_quant(x[t : t + 1])
        for k in range(ids.shape[1]):
            expert = int(ids[t, k])
            gate_up = _round(xq @ e["w13_deq"][expert].T, x.dtype).float()  # the gmm's output
            gate, up = gate_up.chunk(2, dim=-1)
            h = _fake_quant(F.silu(gate) * up)
            down = _round(h @ e["w2_deq"][expert].T, x.dtype)[0]
            out[t] += _round(weights[t, k], x.dtype) * down
    return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens", [1, 64])
def test_routed_experts_equal_a_dense_loop_with_unbalanced_routing(
    tokens: int, dtype: torch.dtype
) -> None:
    gen = torch.Generator().manual_seed(3)
    num_experts, hidden, inter, top_k = 8, 64, 32, 3
    e = _experts(num_experts, hidden, inter, gen, dtype)
    x = torch.randn(tokens, hidden, generator=gen).to(dtype)
    # Experts 0-4 only, skewed to expert 1: experts 5-7 get no tokens at all.
    ids = torch.stack([torch.randperm(5, generator=gen)[:top_k] for _ in range(tokens)])
    ids[: tokens // 2, 0] = 1
    ids = torch.stack([row if len(set(row.tolist())) == top_k else row.roll(1) for row in ids])
    weights = torch.rand(tokens, top_k, generator=gen)
    layer = SimpleNamespace(
        w13_weight=e["w13"], w13_weight_scale=e["w13_scale"],
        w2_weight=e["w2"], w2_weight_scale=e["w2_scale"],
    )  # fmt: skip
    experts_w8a8.lay_out_weights(layer)  # [E, out, in] -> [E, in, out]; scales [E, out]
    assert layer.w13_weight.shape == (num_experts, hidden, 2 * inter)
    assert layer.w2_weight_scale.shape == (num_experts, hidden)
    out = routed_experts_w8a8(
        x, weights, ids, layer.w13_weight, layer.w13_weight_scale,
        layer.w2_weight, layer.w2_weight_scale,
    )  # fmt: skip
    assert out.dtype == dtype and out.shape == x.shape
    expected = _dense_loop(x, weights, ids, e)
    # One rounding of the weighted sum to the output dtype apart.
    ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    torch.testing.assert_close(out.double(), expected, rtol=ulp, atol=1e-6)


def test_scale_dtype_follows_the_grouped_matmul_dtype_table() -> None:
    assert scale_dtype_for(torch.bfloat16) == torch.bfloat16
    assert scale_dtype_for(torch.float16) == torch.float32
    with pytest.raises(ValueError, match=r"dtype=torch.float32; accepted: torch.bfloat16"):
        scale_dtype_for(torch.float32)


def test_moe_method_hands_unsupported_layers_to_sglang_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sglang.srt.layers.quantization.w8a8_int8 import W8A8Int8Config, W8A8Int8MoEMethod

    calls: list[Any] = []
    monkeypatch.setattr(W8A8Int8MoEMethod, "apply", lambda self, *args: calls.append(args))
    method = methods.FIAW8A8Int8MoEMethod(W8A8Int8Config({}))
    method.moe_runner_config = SimpleNamespace(
        activation="gelu", apply_router_weight_on_input=False, gemm1_alpha=None,
        gemm1_clamp_limit=None,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(5)
    e = _experts(2, 8, 4, gen, torch.bfloat16)
    layer = SimpleNamespace(
        w13_weight=e["w13"], w13_weight_scale=e["w13_scale"],
        w2_weight=e["w2"], w2_weight_scale=e["w2_scale"],
    )  # fmt: skip
    method.process_weights_after_loading(layer)
    assert layer.w13_weight.shape == (2, 8, 8)  # sglang's own layout kept: [E, 2I, H]
    with caplog.at_level(logging.INFO, logger="sglang_ascend_fia"):
        for _ in range(2):
            method.apply(layer, "dispatch")
    assert calls == [(layer, "dispatch")] * 2
    lines = [r.getMessage() for r in caplog.records if "w8a8_int8" in r.getMessage()]
    assert len(lines) == 1 and "activation='gelu'" in lines[0]


def test_routed_experts_split_over_two_ep_ranks_sum_to_the_dense_loop() -> None:
    """``--ep-size 2``: each rank holds 4 of the 8 experts and gets sglang's local ids (``-1``
    for the other rank's experts, token_dispatcher/standard.py:95-103); each rank's output is
    the dense loop over its own experts' slots (one rounding apart), so the ranks sum (sglang's
    all-reduce) to the loop over every expert."""
    from sglang.srt.layers.moe.token_dispatcher.standard import _map_topk_ids_to_local_experts

    gen = torch.Generator().manual_seed(7)
    num_experts, hidden, inter, top_k, dtype = 8, 64, 32, 3, torch.bfloat16
    e = _experts(num_experts, hidden, inter, gen, dtype)
    x = torch.randn(9, hidden, generator=gen).to(dtype)
    ids = torch.stack([torch.randperm(num_experts, generator=gen)[:top_k] for _ in range(9)])
    ids[0] = torch.tensor([5, 6, 7])  # a token wholly on rank 1
    weights = torch.rand(9, top_k, generator=gen)
    for rank in (0, 1):
        part = slice(4 * rank, 4 * rank + 4)
        layer = SimpleNamespace(
            w13_weight=e["w13"][part], w13_weight_scale=e["w13_scale"][part],
            w2_weight=e["w2"][part], w2_weight_scale=e["w2_scale"][part],
        )  # fmt: skip
        experts_w8a8.lay_out_weights(layer)
        mapping = torch.full((num_experts,), -1, dtype=torch.int32)
        mapping[part] = torch.arange(4, dtype=torch.int32)
        local = _map_topk_ids_to_local_experts(ids.to(torch.int32), mapping)
        out = routed_experts_w8a8(
            x, weights, local, layer.w13_weight, layer.w13_weight_scale,
            layer.w2_weight, layer.w2_weight_scale,
        )  # fmt: skip
        assert torch.isfinite(out).all()
        if rank == 0:
            assert torch.equal(out[0], torch.zeros_like(out[0]))
        own_slots = ((ids >= part.start) & (ids < part.stop)).to(weights.dtype)
        expected = _dense_loop(x, weights * own_slots, ids, e)
        torch.testing.assert_close(out.double(), expected, rtol=2.0**-8, atol=1e-6)
