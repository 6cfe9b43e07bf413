"""Per-batch metadata of the FIA MLA backend: built once per forward, read by every layer."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class PrefillLaunch:
    """One TND prefill launch over a run of consecutive requests of the batch.

    ``q_rows`` / ``kv_rows`` select the launch's query tokens and KV tokens (in the batch's
    request-major order); the cumulative lengths restart at 0 for the launch.
    """

    q_rows: slice
    kv_rows: slice
    cum_q_lens: list[int]
    cum_kv_lens: list[int]


def plan_prefill_launches(
    q_lens: list[int], kv_lens: list[int], max_tokens: int, max_requests: int
) -> list[PrefillLaunch]:
    """Split a prefill batch into runs of requests whose KV tokens fit one TND launch.

    One launch when the whole batch fits (the normal case); otherwise as few runs of
    consecutive requests as the greedy cut gives, each at most ``max_tokens`` KV tokens (query
    tokens never exceed KV tokens) and ``max_requests`` requests. The number of launches is
    bounded by the batch's KV tokens over the limit, not by its request count.
    """
    launches: list[PrefillLaunch] = []
    first = q_start = kv_start = 0
    tokens = 0
    for i, kv in enumerate(kv_lens):
        if kv > max_tokens:
            raise ValueError(
                f"sglang-ascend-fia: request {i} attends {kv} KV tokens, more than one FIA TND "
                f"launch takes ({max_tokens}); the start-up check should have handed this "
                "model to sglang's own backend"
            )
        if i > first and (tokens + kv > max_tokens or i - first == max_requests):
            launch = _launch(q_lens[first:i], kv_lens[first:i], q_start, kv_start)
            launches.append(launch)
            q_start, kv_start = launch.q_rows.stop, launch.kv_rows.stop
            first, tokens = i, 0
        tokens += kv
    launches.append(_launch(q_lens[first:], kv_lens[first:], q_start, kv_start))
    return launches


def _launch(q_lens: list[int], kv_lens: list[int], q_start: int, kv_start: int) -> PrefillLaunch:
    cum_q = list(itertools.accumulate(q_lens))
    cum_kv = list(itertools.accumulate(kv_lens))
    return PrefillLaunch(
        q_rows=slice(q_start, q_start + (cum_q[-1] if cum_q else 0)),
        kv_rows=slice(kv_start, kv_start + (cum_kv[-1] if cum_kv else 0)),
        cum_q_lens=cum_q,
        cum_kv_lens=cum_kv,
    )


@dataclass
class MLAMetadata:
    """What ``init_forward_metadata`` hands to every MLA layer of one forward."""

    # int32 [batch, >= max blocks per request]: page ids into the split pool viewed as
    # (blocks, page_size, D). Read by the paged decode call. In graph mode a row-slice of a
    # static buffer.
    block_table: torch.Tensor
    # Full KV length of each request (cached prefix + this step's tokens). In graph mode this
    # exact list object is the one bound at capture, and NPUGraphRunner rebinds it on replay.
    kv_lens: list[int]
    # Query rows that belong to real requests; rows past it are padding.
    num_tokens: int
    # Extend only: the TND launches (one unless the batch's KV tokens exceed one launch).
    launches: list[PrefillLaunch] = field(default_factory=list)
    # Extend with any cached prefix (radix hit, later chunk, mixed-in decode rows): the slot of
    # every KV token of the batch, request by request. The prefill then attends the whole
    # context re-expanded from the latent cache.
    kv_slots: torch.Tensor | None = None
    # True when the tensors above are views of the capture-time buffers.
    graph_mode: bool = False
    # The batch's ops calls with these per-batch arguments bound (``ops.PreparedCall``), made by
    # the first layer that needs each one; dropped when graph mode refreshes the fields above.
    prepared: dict[object, Any] = field(default_factory=dict)

    @property
    def attends_cached_prefix(self) -> bool:
        return self.kv_slots is not None
