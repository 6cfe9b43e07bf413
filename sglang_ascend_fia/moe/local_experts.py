"""Expert parallelism in the routed-expert chain: each rank runs its own experts only.

With ``--ep-size N`` a rank holds ``E / N`` routed experts (``FusedMoE.num_local_experts``) and
sglang's combine sums the ranks' partial outputs (the MoE all-reduce). A token's top-k slots that
name another rank's expert must then contribute nothing here. The two dispatchers present them
differently:

- ``StandardDispatcher`` (sglang without an NPU kernel, e.g. this CPU test bed) maps ids to
  local ones and marks every other rank's expert, and every DP-padding row it masks, with ``-1``
  (``token_dispatcher/standard.py:95-103, 225-270``);
- ``AscendTPDispatcher`` (sglang on an NPU) passes global ids and ``expert_num=E``
  (``token_dispatcher/ascend_tp.py:97-113``), with ``active_expert_range=[0, E]``
  (``hardware_backend/npu/moe/init_routing.py:101-111``): the counts it returns then cover all E
  experts against the rank's ``E / N`` weights (inferred: the grouped matmul takes one count per
  weight, so stock 0.5.23 cannot run EP on that dispatcher).

Both go through ``npu_moe_init_routing_v2``'s ``active_expert_range`` as torch_npu documents it:
only pairs whose expert lies in ``[start, end)`` are routed; the first ``avail`` rows of
``expanded_x`` hold them, sorted by expert, and the counts cover ``end - start`` experts, so
``avail`` is the counts' total. The grouped matmuls then compute the first ``avail`` rows only.
The other rows, and ``expanded_row_idx`` of the unrouted pairs, are undefined ("其余由row_idx_type
决定"), so the combine must not read them: :func:`zero_uncomputed` zeroes the rows past ``avail``
and :func:`combinable_row_idx` points every index outside the rows at the last row, which is past
``avail`` whenever a pair is unrouted. An unrouted pair's index, whatever the kernel leaves there,
cannot fall below ``avail``: the routed pairs fill ``[0, avail)`` one to one. Elementwise device
ops only, no host sync.
"""

from __future__ import annotations

import torch


def standard_local_ids(
    topk_ids: torch.Tensor, num_local: int
) -> tuple[torch.Tensor, int, list[int]]:
    """``(ids, expert_num, active_expert_range)`` for the StandardDispatcher's local ids.

    ``-1`` (another rank's expert, or a masked DP-padding row) becomes ``num_local``, one slot past
    the local experts, and the routing's range ``[0, num_local)`` leaves it unrouted: torch_npu
    requires every id to be below ``expert_num``, so ``-1`` cannot be passed as it is.
    """
    ids = topk_ids.to(torch.int32)
    ids = torch.where(ids < 0, torch.full_like(ids, num_local), ids)
    return ids, num_local + 1, [0, num_local]


def expert_parallel() -> tuple[int, int]:
    """``(moe_ep_rank, moe_ep_size)`` of this sglang rank (``runtime_context.py:114-154``)."""
    from sglang.srt.runtime_context import get_parallel

    parallel = get_parallel()
    return int(parallel.moe_ep_rank), int(parallel.moe_ep_size)


def ascend_tp_active_range(num_experts: int, ep_rank: int, ep_size: int) -> list[int]:
    """``[start, end)`` of this EP rank's experts among the ``AscendTPDispatcher``'s global ids:
    ``FusedMoE`` gives rank ``r`` the experts ``[r * E / N, (r + 1) * E / N)``, the same split
    ``StandardDispatcher`` maps from (``standard.py:230-241``)."""
    if num_experts % ep_size:
        raise ValueError(
            f"sglang-ascend-fia: {num_experts} routed experts cannot be split over --ep-size "
            f"{ep_size}; accepted: an ep size that divides the expert count"
        )
    local = num_experts // ep_size
    return [ep_rank * local, (ep_rank + 1) * local]


def zero_uncomputed(
    down: torch.Tensor, expert_tokens: torch.Tensor, group_list_type: int = 1
) -> torch.Tensor:
    """``down`` with the rows past the groups' total (``avail``, never computed) set to zero;
    ``expert_tokens`` are counts (``group_list_type`` 1) or their running sum (0)."""
    avail = expert_tokens.sum() if group_list_type == 1 else expert_tokens[-1]
    computed = torch.arange(down.shape[0], device=down.device) < avail
    return torch.where(computed.unsqueeze(-1), down, torch.zeros_like(down))


def combinable_row_idx(expanded_row_idx: torch.Tensor, rows: int) -> torch.Tensor:
    """``expanded_row_idx`` with every index outside ``[0, rows)`` (``-1`` for an unrouted pair in
    the reference) pointing at row ``rows - 1``, a zeroed row whenever a pair is unrouted."""
    inside = (expanded_row_idx >= 0) & (expanded_row_idx < rows)
    return torch.where(inside, expanded_row_idx, torch.full_like(expanded_row_idx, rows - 1))
