"""Every rank of a model takes the same attention-backend decision.

The hand-off rules run in each sglang scheduler rank on what that rank sees: its sglang install
(a patch target missing on one node of two), its environment, its share of the heads. If one rank
handed off while another served FIA, their KV pools and forward steps would differ under one
model and the first collective would hang or mix results. So after each rank checks, the ranks of
the TP group (every attention and MoE rank of the model: TP, data-parallel attention and expert
parallel ranks alike, over one node or several) exchange their verdicts once, over sglang's own
CPU group (``GroupCoordinator.all_gather_object``, ``distributed/parallel_state.py:1607-1610``),
and a hand-off on any rank is the hand-off on all, with that rank named.
"""

from __future__ import annotations

from typing import Any


def agreed_reason(reason: str | None) -> str | None:
    """The verdict every rank of this model's TP group acts on: None (all serve FIA) when no
    rank hands off, else the first handing-off rank's reason, prefixed with its rank."""
    from sglang.srt.runtime_context import get_parallel

    group: Any = get_parallel().tp_group
    if group.world_size == 1:
        return reason
    reasons: list[str | None] = group.all_gather_object(reason)
    return agreement(reasons)


def agreement(reasons: list[str | None]) -> str | None:
    """What ``agreed_reason`` returns for the ranks' own ``reasons``, in TP rank order."""
    handing_off = [(rank, r) for rank, r in enumerate(reasons) if r is not None]
    if not handing_off:
        return None
    if len(handing_off) == len(reasons) and len(set(reasons)) == 1:
        return handing_off[0][1]  # every rank found the same: no rank to single out
    rank, why = handing_off[0]
    return f"tp rank {rank} of {len(reasons)} hands off ({why}), so every rank does"
