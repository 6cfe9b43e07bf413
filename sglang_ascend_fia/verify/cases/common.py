"""Building blocks shared by the ``verify-ops`` case modules (this package).

A case is a function returning ``(name, run, dtype)``. ``run(device)`` builds seeded inputs on the
CPU, moves them to ``device``, calls the facade op (torch_npu on an NPU, the reference elsewhere)
and returns CPU tensors; ``dtype`` picks the float tolerance. Every case must be legal for the
real kernel (torch_npu 2.14 ``_op_plugin_docs.py``): verify-ops runs it on an NPU, where only
fp16/bf16 reach the attention kernels (fp32 is a reference-only extension there).

Outputs are restricted to what the docs define, so a case never compares undefined entries:
query rows past a request's length, routed rows past ``avail``, rows past a ``group_index``
sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia.verify.case import Outputs

BF16 = torch.bfloat16
FP16 = torch.float16
FP32 = torch.float32

# sparse_mode 2/3/4 take this 2048x2048 template; its contents are not the mask (doc).
TEMPLATE = ~torch.tril(torch.ones(2048, 2048, dtype=torch.bool))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cpu(*tensors: torch.Tensor) -> Outputs:
    return tuple(t.cpu() for t in tensors)


def on(device: str, value: Any) -> Any:
    """``value`` with every tensor (also inside lists) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [on(device, v) for v in value]
    return value


def call(op: Any, device: str, *args: Any, **kwargs: Any) -> Any:
    """``op(*args, **kwargs)`` with every tensor argument moved to ``device`` first."""
    return op(*on(device, list(args)), **{k: on(device, v) for k, v in kwargs.items()})


def cumsum(lens: list[int]) -> list[int]:
    return torch.tensor(lens).cumsum(0).tolist()


@dataclass(frozen=True)
class PagedKV:
    """A paged key/value cache: what an FIA call passes with it, and its key heads and head dim."""

    key: torch.Tensor
    value: torch.Tensor
    table: torch.Tensor
    block_size: int
    kv_lens: list[int]
    heads: int
    dim: int


def paged_kv(
    kv_lens: list[int],
    heads: int,
    dim: int,
    block_size: int,
    g: torch.Generator,
    *,
    dtype: torch.dtype = BF16,
    nd4: bool = False,
    value_is_key: bool = False,
) -> PagedKV:
    """Key and value caches with shuffled blocks and a -1-padded int32 block table (one spare
    column); ``value_is_key`` passes the key as the value too (MLA's latent cache).

    A cache is ``(blocks, block_size, heads*dim)``, or ``(blocks, heads, block_size, dim)``
    with ``nd4``; it holds two blocks more than the lengths need, so unused blocks exist.
    """
    needed = [-(-n // block_size) for n in kv_lens]
    blocks = sum(needed) + 2
    order = torch.randperm(blocks, generator=g)
    table = torch.full((len(kv_lens), max(needed) + 1), -1, dtype=torch.int32)
    cursor = 0
    for b, count in enumerate(needed):
        table[b, :count] = order[cursor : cursor + count].int()
        cursor += count
    shape = (blocks, heads, block_size, dim) if nd4 else (blocks, block_size, heads * dim)
    key = torch.randn(*shape, generator=g).to(dtype)
    value = key if value_is_key else torch.randn(shape, generator=g).to(dtype)
    return PagedKV(key, value, table, block_size, kv_lens, heads, dim)


# ---- FIA calls -------------------------------------------------------------------------------
# The ops are looked up at call time, so a test can record the calls by patching ``ops``.

FiaOut = tuple[torch.Tensor, torch.Tensor]


def fia(device: str, *args: Any, **kwargs: Any) -> FiaOut:
    out: FiaOut = call(ops.fused_infer_attention_score, device, *args, **kwargs)
    return out


def fia_v2(device: str, *args: Any, **kwargs: Any) -> FiaOut:
    out: FiaOut = call(ops.fused_infer_attention_score_v2, device, *args, **kwargs)
    return out


def fia_paged(
    device: str,
    q: torch.Tensor,
    kv: PagedKV,
    layout: str,
    n: int,
    *,
    scale: float | None = None,
    **extra: Any,
) -> FiaOut:
    """FIA v1 with ``n`` query heads on the paged ``kv``: fills in its key heads, the paging, the
    KV lengths and (unless given) the scale 1/sqrt(head dim)."""
    return fia(
        device,
        q,
        kv.key,
        kv.value,
        num_heads=n,
        num_key_value_heads=kv.heads,
        input_layout=layout,
        scale=kv.dim**-0.5 if scale is None else scale,
        block_table=kv.table,
        block_size=kv.block_size,
        actual_seq_lengths_kv=kv.kv_lens,
        **extra,
    )


def fia_v2_paged(
    device: str,
    q: torch.Tensor,
    kv: PagedKV,
    layout: str,
    n: int,
    *,
    scale: float | None = None,
    pass_kv_heads: bool = True,
    **extra: Any,
) -> FiaOut:
    """:func:`fia_paged` in v2's argument names; ``pass_kv_heads=False`` leaves
    ``num_key_value_heads`` at its default 0 (as many as the query heads)."""
    if pass_kv_heads:
        extra["num_key_value_heads"] = kv.heads
    return fia_v2(
        device,
        q,
        kv.key,
        kv.value,
        num_query_heads=n,
        input_layout=layout,
        softmax_scale=kv.dim**-0.5 if scale is None else scale,
        block_table=kv.table,
        block_size=kv.block_size,
        actual_seq_kvlen=kv.kv_lens,
        **extra,
    )


def rows_within(out: torch.Tensor, s_axis: int, q_lens: list[int]) -> Outputs:
    """Per request, the output rows inside its query length (the rest are undefined on the NPU).

    ``out`` is batch-first with the query S on ``s_axis`` (1 for BSH/BSND, 2 for BNSD and LSE).
    """
    return tuple(out[b].narrow(s_axis - 1, 0, n) for b, n in enumerate(q_lens))


def visible_mask(shape: tuple[int, ...], g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """A random explicit mask (True/1 = masked) whose last-axis column 0 stays visible.

    Every query row then sees at least one key, so no output depends on what the doc leaves
    unspecified for fully masked rows.
    """
    mask = torch.rand(shape, generator=g) < 0.4
    mask[..., 0] = False
    return mask.to(dtype)


def dequantised(y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 ``y`` times its per-row scale: a one-step rounding difference stays a float error."""
    return y.float() * scale.float().unsqueeze(-1)
