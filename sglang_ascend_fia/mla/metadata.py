"""Per-batch metadata of the FIA MLA backend: built once per forward, read by every layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MLAMetadata:
    """What ``init_forward_metadata`` hands to every MLA layer of one forward."""

    # int32 [batch, >= max blocks per request]: page ids into the split pool viewed as
    # (blocks, page_size, D). Read by the paged decode call.
    block_table: torch.Tensor
    # Full KV length of each request (cached prefix + this step's tokens).
    kv_lens: list[int]
    # Query rows that belong to real requests; rows past it are padding.
    num_tokens: int
    # Extend only: cumulative new-token counts per request (TND ``actual_seq_lengths``).
    cum_q_lens: list[int] | None = None
    # Extend with any cached prefix (radix hit, later chunk, mixed-in decode rows): the slot of
    # every KV token of the batch, request by request, and the cumulative KV lengths. The prefill
    # then attends the whole context re-expanded from the latent cache in one TND call.
    kv_slots: torch.Tensor | None = None
    cum_kv_lens: list[int] | None = None

    @property
    def attends_cached_prefix(self) -> bool:
        return self.kv_slots is not None
