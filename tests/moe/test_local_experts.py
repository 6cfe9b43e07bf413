"""Expert parallel in the plugin's MoE chain, against a brute-force loop over every expert.

With ``--ep-size 2`` each rank holds half of the experts and sglang's combine sums the ranks'
outputs. Both dispatcher forms are run rank by rank and summed:

- the StandardDispatcher's local ids (``-1`` for another rank's expert), built by sglang's own
  ``_map_topk_ids_to_local_experts`` with the mapping its dispatcher builds;
- the ascend_tp dispatcher's global ids, through the plugin's NPU hooks (init routing with the
  rank's ``active_expert_range``, the expert MLP, the combine) under each rank's EP place.

A token whose every slot names the other rank's experts gets exactly zero from this rank, also
when no pair at all is local (nothing computed: every expert row is undefined).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from sglang_ascend_fia import ops
from sglang_ascend_fia.moe.experts import routed_experts

EXPERTS, HIDDEN, INTER, TOP_K, EP = 8, 16, 12, 3, 2
LOCAL = EXPERTS // EP


def _brute_force(
    x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor
) -> torch.Tensor:
    """Token by token, slot by slot, in float64; ``-1`` slots contribute nothing."""
    out = torch.zeros(x.shape[0], HIDDEN, dtype=torch.float64)
    for t in range(x.shape[0]):
        for k in range(ids.shape[1]):
            e = int(ids[t, k])
            if e < 0:
                continue
            gate_up = w13[e].double() @ x[t].double()
            hidden = F.silu(gate_up[:INTER]) * gate_up[INTER:]
            out[t] += float(weights[t, k]) * (w2[e].double() @ hidden)
    return out


def _case(tokens: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, HIDDEN, generator=gen)
    w13 = torch.randn(EXPERTS, 2 * INTER, HIDDEN, generator=gen) * 0.3
    w2 = torch.randn(EXPERTS, HIDDEN, INTER, generator=gen) * 0.3
    ids = torch.stack([torch.randperm(EXPERTS, generator=gen)[:TOP_K] for _ in range(tokens)])
    weights = torch.rand(tokens, TOP_K, generator=gen)
    return x, weights, ids.to(torch.int32), w13, w2


def _standard_local_ids(ids: torch.Tensor, rank: int) -> torch.Tensor:
    """What sglang's StandardDispatcher gives rank ``rank`` (standard.py:225-270)."""
    from sglang.srt.layers.moe.token_dispatcher.standard import _map_topk_ids_to_local_experts

    mapping = torch.full((EXPERTS,), -1, dtype=torch.int32)
    mapping[rank * LOCAL : (rank + 1) * LOCAL] = torch.arange(LOCAL, dtype=torch.int32)
    local: torch.Tensor = _map_topk_ids_to_local_experts(ids, mapping)
    return local


@pytest.mark.parametrize("tokens", [1, 7, 32])
def test_standard_dispatch_ranks_sum_to_every_expert(tokens: int) -> None:
    x, weights, ids, w13, w2 = _case(tokens)
    expected = _brute_force(x, weights, ids, w13, w2)
    total = torch.zeros_like(expected)
    for rank in range(EP):
        local = _standard_local_ids(ids, rank)
        part = slice(rank * LOCAL, (rank + 1) * LOCAL)
        ops.reset_launch_counts()
        out = routed_experts(x, weights, local, w13[part], w2[part])
        counts = ops.launch_counts()
        assert counts["moe_init_routing_v2"] == 1 and counts["grouped_matmul"] == 2, counts
        assert torch.isfinite(out).all()
        total += out.double()
    torch.testing.assert_close(total, expected, rtol=1e-4, atol=1e-4)


def test_a_rank_with_no_local_pair_adds_exact_zeros() -> None:
    """Every pair names rank 1's experts: rank 0 routes nothing, computes nothing (its expert
    rows are all undefined, NaN in the reference) and must still add zeros, not NaN."""
    x, weights, _, w13, w2 = _case(5)
    ids = torch.tensor([[4, 5, 6]] * 5, dtype=torch.int32)
    rank0 = routed_experts(x, weights, _standard_local_ids(ids, 0), w13[:LOCAL], w2[:LOCAL])
    assert torch.equal(rank0, torch.zeros_like(rank0))
    rank1 = routed_experts(x, weights, _standard_local_ids(ids, 1), w13[LOCAL:], w2[LOCAL:])
    expected = _brute_force(x, weights, ids, w13, w2)
    torch.testing.assert_close(rank1.double(), expected, rtol=1e-4, atol=1e-4)


def test_masked_dp_padding_rows_add_zeros() -> None:
    """sglang masks DP-padding rows with ``-1`` in every slot (``mask_dp_pad_moe_topk_ids``):
    they get zeros, the real rows their experts' sum, at EP=1 too."""
    x, weights, ids, w13, w2 = _case(6)
    ids[4:] = -1
    out = routed_experts(x, weights, ids, w13, w2)
    assert torch.equal(out[4:], torch.zeros_like(out[4:]))
    torch.testing.assert_close(
        out.double(), _brute_force(x, weights, ids, w13, w2), rtol=1e-4, atol=1e-4
    )


@pytest.fixture
def parallel() -> Any:
    """sglang's ``get_parallel``: each rank's EP place is stated with its ``override``."""
    from sglang.srt.runtime_context import get_parallel

    return get_parallel


def _ascend_tp_rank(
    x: torch.Tensor,
    weights: torch.Tensor,
    ids: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
) -> torch.Tensor:
    """One rank of sglang's AscendTPDispatcher flow (ascend_tp.py:97-143) through the plugin's
    hooks: init routing, the expert MLP hook, the finalize hook."""
    import sglang.srt.layers.quantization.unquant  # noqa: F401 - sglang's own import order
    from sglang.srt.hardware_backend.npu.moe.finalize_routing import NPUFinalizeRouting
    from sglang.srt.hardware_backend.npu.moe.init_routing import NPUMoEInitRouting_v2
    from sglang.srt.hardware_backend.npu.quantization.moe_methods import NPUUnquantMoEMethod
    from sglang.srt.layers.moe.token_dispatcher.ascend_tp import AscendTPDispatchOutput

    from sglang_ascend_fia.moe.experts import experts_forward_npu
    from sglang_ascend_fia.moe.npu_routing import finalize_routing_hook, init_routing_v2

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the plugin's chain handed the call back to sglang")

    permuted, row_idx, expert_tokens, _ = init_routing_v2(
        unreachable, NPUMoEInitRouting_v2(quant_mode=-1), (x, ids, EXPERTS, TOP_K), {}
    )
    assert expert_tokens.shape == (LOCAL,)
    kernel = NPUUnquantMoEMethod.__new__(NPUUnquantMoEMethod)
    layer = SimpleNamespace(w13_weight=w13, w2_weight=w2, w13_kernel=kernel, w2_kernel=kernel)
    dispatch = AscendTPDispatchOutput(
        hidden_states=permuted,
        hidden_states_scale=None,
        topk_weights=weights,
        topk_ids=ids,
        expanded_row_idx=row_idx,
        expert_tokens=expert_tokens,
        group_list_type=1,
    )
    config = SimpleNamespace(
        activation="silu",
        is_gated=True,
        apply_router_weight_on_input=False,
        gemm1_alpha=None,
        gemm1_clamp_limit=None,
    )
    combine = experts_forward_npu(
        unreachable, SimpleNamespace(moe_runner_config=config), (layer, dispatch), {}
    )
    out: torch.Tensor = finalize_routing_hook(
        unreachable,
        NPUFinalizeRouting(drop_pad_mode=2),
        (combine.hidden_states, weights, row_idx, ids),
        {},
    )
    return out


@pytest.mark.parametrize("tokens", [1, 9])
def test_ascend_tp_ranks_sum_to_every_expert(parallel: Any, tokens: int) -> None:
    x, weights, ids, w13, w2 = _case(tokens, seed=3)
    expected = _brute_force(x, weights, ids, w13, w2)
    total = torch.zeros_like(expected)
    for rank in range(EP):
        part = slice(rank * LOCAL, (rank + 1) * LOCAL)
        ops.reset_launch_counts()
        with parallel().override(moe_ep_rank=rank, moe_ep_size=EP):
            out = _ascend_tp_rank(x, weights, ids, w13[part], w2[part])
        counts = ops.launch_counts()
        assert counts == {
            "moe_init_routing_v2": 1,
            "grouped_matmul": 2,
            "swiglu": 1,
            "moe_finalize_routing": 1,
        }, counts
        assert torch.isfinite(out).all()
        total += out.double()
    torch.testing.assert_close(total, expected, rtol=1e-4, atol=1e-4)


def test_ascend_tp_rank_without_local_pairs_adds_zeros(parallel: Any) -> None:
    x, weights, _, w13, w2 = _case(4, seed=5)
    ids = torch.tensor([[0, 1, 2]] * 4, dtype=torch.int32)  # rank 0's experts only
    with parallel().override(moe_ep_rank=1, moe_ep_size=EP):
        out = _ascend_tp_rank(x, weights, ids, w13[LOCAL:], w2[LOCAL:])
    assert torch.equal(out, torch.zeros_like(out))


def test_an_expert_count_the_ep_size_does_not_divide_is_refused() -> None:
    from sglang_ascend_fia.moe.local_experts import ascend_tp_active_range

    assert ascend_tp_active_range(16, 1, 4) == [4, 8]
    with pytest.raises(ValueError, match="6 routed experts cannot be split over --ep-size 4"):
        ascend_tp_active_range(6, 0, 4)


def test_grouped_matmul_leaves_rows_past_the_groups_undefined() -> None:
    """Counts that cover fewer rows than x has (a routing with an active expert range): the
    covered rows are the per-group products, the rest NaN (undefined on the device)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=gen)
    w = torch.randn(2, 4, 3, generator=gen)
    out = ops.grouped_matmul(
        [x], [w], split_item=2, group_type=0, group_list_type=1, group_list=torch.tensor([1, 3])
    )[0]
    torch.testing.assert_close(out[:1], x[:1] @ w[0])
    torch.testing.assert_close(out[1:4], x[1:4] @ w[1])
    assert torch.isnan(out[4:]).all()
