"""Query-head padding for the FIA MLA calls, in buffers kept across layers and batches.

FIA's TND prefill without paging takes N in (8, 16, 32, 64, 128) with Q_N = K_N = V_N, and
sglang pads the MLA decode query to a power of two because "the FIA kernel only supports head
counts that are powers of 2" (``ascend_backend.py:3017-3028, 3412-3425``; the power-of-two rule
for decode is inferred from that comment, the doc lists 32/64/128). A model whose heads per rank
are not such a count (V2-Lite's 16 heads at TP 4 give 4) is padded with zero heads here: the
padded heads score 0 against zero keys and are sliced off the output. The zero buffers are
allocated on first use and grown only when a larger batch arrives, never per layer; a layer
copies its real heads into the leading slice.
"""

from __future__ import annotations

import torch

from sglang_ascend_fia.ops.fia.rules import TND_HEADS


def next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def prefill_head_count(heads: int) -> int:
    """The smallest head count TND prefill without paging accepts that holds ``heads``."""
    for legal in TND_HEADS:
        if legal >= heads:
            return legal
    raise ValueError(
        f"{heads} query heads per rank exceed what FIA's TND prefill takes "
        f"(at most {TND_HEADS[-1]})"
    )


def decode_head_count(heads: int) -> int:
    return next_power_of_two(heads)


class HeadPadder:
    """Zero-padded ``[rows, padded_heads, D]`` buffers, one per named operand."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def reserve(
        self,
        name: str,
        rows: int,
        heads: int,
        dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        """Allocate ``name``'s buffer for up to ``rows`` rows now (graph mode: before capture)."""
        self._buffers[name] = torch.zeros((max(rows, 1), heads, dim), dtype=dtype, device=device)

    def pad(self, name: str, x: torch.Tensor, heads: int) -> torch.Tensor:
        """``x`` ``[rows, h, D]`` as ``[rows, heads, D]``: itself when ``h == heads``."""
        rows, real, dim = x.shape
        if real == heads:
            return x
        buffer = self._buffers.get(name)
        if (
            buffer is None
            or buffer.shape[0] < rows
            or buffer.shape[1:] != (heads, dim)
            or buffer.dtype != x.dtype
        ):
            buffer = torch.zeros((max(rows, 1), heads, dim), dtype=x.dtype, device=x.device)
            self._buffers[name] = buffer
        view = buffer[:rows]
        view[:, :real].copy_(x)
        return view
