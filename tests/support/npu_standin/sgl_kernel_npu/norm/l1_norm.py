"""TEST-ONLY: ``sgl_kernel_npu.norm.l1_norm``, which ``fused_topk_npu`` uses to renormalise
softmax top-k weights (``hardware_backend/npu/moe/topk.py:61-68``).

Written from sgl-kernel-npu's ``python/sgl_kernel_npu/sgl_kernel_npu/norm/l1_norm.py``: each row
divided by its sum (not its absolute sum), written as float32, for a 2-D input.
"""

from __future__ import annotations

import torch
from torch_npu.standin import counted


def _l1_norm(input: torch.Tensor) -> torch.Tensor:
    if input.dim() != 2:
        raise ValueError(f"l1_norm: input must be 2-D [batch, hidden], got shape {input.shape}")
    values = input.float()
    return values / values.sum(dim=-1, keepdim=True)


l1_norm = counted("sgl_kernel_npu.norm.l1_norm.l1_norm", _l1_norm)
