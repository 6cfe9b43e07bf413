"""TEST-ONLY: the attention-sink kernels sglang imports by name (``ascend_backend.py:8-11``).

Both are reached only by models with attention sinks or sliding windows on the non-FIA path;
they raise when called.
"""

from __future__ import annotations

from torch_npu.standin import unimplemented

attention_sinks_prefill_triton = unimplemented(
    "sgl_kernel_npu.attention.sinks_attention.attention_sinks_prefill_triton"
)
attention_sinks_triton = unimplemented(
    "sgl_kernel_npu.attention.sinks_attention.attention_sinks_triton"
)
