"""Per-batch metadata of the FIA backend: everything a layer needs, built once per forward.

Every field is either a device tensor a kernel reads or a Python list FIA takes as a host
``IntArray``. Layers read these and do no host work of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class FIAMetadata:
    """What ``init_forward_metadata`` hands to every layer of one forward."""

    # int32 [batch, >= max blocks per request]: block ids into the pool viewed as
    # (blocks, page_size, heads * head_dim). In graph mode a row-slice of a static buffer.
    block_table: torch.Tensor
    # Full KV length of each request (cached prefix + this step's tokens): FIA's
    # ``actual_seq_lengths_kv`` for paged KV. In graph mode this exact list object is the one
    # bound at capture, and NPUGraphRunner rebinds it on replay.
    kv_lens: list[int]
    # Cumulative new-token counts per request: FIA's TND ``actual_seq_lengths``. None on decode.
    cum_q_lens: list[int] | None
    # Query rows that belong to real requests; rows past it are padding.
    num_tokens: int
    # True when the tensors above are views of the capture-time buffers.
    graph_mode: bool = False
    # New tokens per request (extend only): BSND ``actual_seq_lengths`` for the padded form.
    q_lens: list[int] | None = None
    # Padded BSND extend only (head dims TND + paged is not used at): the longest request's new
    # tokens, and each query token's row in the ``[batch * max_q_len]`` padded layout.
    max_q_len: int = 0
    padded_rows: torch.Tensor | None = None
    # The batch's ops calls with these per-batch arguments bound (``ops.PreparedCall``), made by
    # the first layer that needs each one; dropped when graph mode refreshes the fields above.
    prepared: dict[object, Any] = field(default_factory=dict)


def padded_rows(q_lens: list[int], max_q: int) -> torch.Tensor:
    """Row of each query token in a ``[batch * max_q]`` padded layout (request-major), on the
    host; built once per batch for the padded BSND prefill."""
    lens = torch.tensor(q_lens, dtype=torch.long)
    starts = torch.arange(len(q_lens), dtype=torch.long) * max_q
    first_token = torch.cumsum(lens, 0) - lens
    within = torch.arange(sum(q_lens), dtype=torch.long) - torch.repeat_interleave(
        first_token, lens
    )
    return torch.repeat_interleave(starts, lens) + within
