"""TEST-ONLY stand-in for ``torch_npu``: lets sglang's own in-tree Ascend backend run on CPU.

It sits in ``tests/support/npu_standin/``, which is put on ``PYTHONPATH`` only for the runs that
compare the plugin with sglang 0.5.23's in-tree Ascend path (``tests/upstream``, ``make demo``,
``make bench``). It is never in the wheel and never on a user's path.

What it provides, and how:

- ``npu_fused_infer_attention_score`` (also as ``torch.ops.npu.npu_fused_infer_attention_score``),
  ``npu_fused_infer_attention_score_v2``, ``npu_scatter_nd_update_`` and
  ``npu_scatter_pa_kv_cache`` are handed to the plugin's
  public ``sglang_ascend_fia.ops`` functions unchanged, so the documented-constraint validator
  runs on upstream's calls exactly as on the plugin's. The one conversion is torch's own binding
  behaviour for ``int[]`` arguments: a tensor or numpy array of ints arrives as a list of ints
  (see :func:`torch_npu.standin.int_array`).
- The MoE kernels sglang's NPU MoE path calls (``npu_moe_gating_top_k(_softmax)``,
  ``npu_moe_init_routing_v2``, ``npu_grouped_matmul``, ``npu_swiglu``,
  ``npu_moe_finalize_routing``; :mod:`torch_npu.moe`) are handed to ``ops`` the same way.
- ``_npu_reshape_and_cache``, ``_npu_flash_attention_qlens`` and ``_npu_paged_attention`` have
  brute-force references in :mod:`torch_npu.references`, each citing the public source it follows.
- Any other public name resolves to a function that raises ``NotImplementedError`` when called,
  so a path this stand-in does not cover fails loudly instead of returning something.
- Every call is counted (:func:`standin_call_counts`), so launches per layer can be measured.
- ``NPU_STANDIN_ZERO_COST=1``: every implemented function returns a preallocated output and does
  no tensor work and no validation, so a benchmark times only the caller's Python host work.
- ``NPU_STANDIN_LACKS=name[,name...]``: those kernels do not exist (an ``AttributeError``, here
  and on ``torch.ops.npu``), as on an older torch_npu; the plugin's start-up kernel check is
  tested with it.

It deliberately does **not** create ``torch.npu``: sglang's ``is_npu()`` (``utils/common.py:189``)
tests ``hasattr(torch, "npu")``, so everything else in sglang keeps its CPU behaviour.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from torch_npu import moe, references, standin
from torch_npu.standin import (
    reset_standin_call_counts,
    standin_call_counts,
    zero_cost_enabled,
)

__version__ = "0.0.0+standin"

npu_fused_infer_attention_score = standin.counted(
    "npu_fused_infer_attention_score", references.fused_infer_attention_score
)
npu_fused_infer_attention_score_v2 = standin.counted(
    "npu_fused_infer_attention_score_v2", references.fused_infer_attention_score_v2
)
npu_scatter_nd_update_ = standin.counted("npu_scatter_nd_update_", references.scatter_nd_update_)
npu_scatter_pa_kv_cache = standin.counted("npu_scatter_pa_kv_cache", references.scatter_pa_kv_cache)
_npu_reshape_and_cache = standin.counted("_npu_reshape_and_cache", references.reshape_and_cache)
_npu_flash_attention_qlens = standin.counted(
    "_npu_flash_attention_qlens", references.flash_attention_qlens
)
_npu_paged_attention = standin.counted("_npu_paged_attention", references.paged_attention)

# sglang calls some kernels through the dispatcher namespace (``ascend_backend.py:3245`` decode,
# ``:3523`` mixed; the whole MoE path, ``hardware_backend/npu/moe/``). ``torch.ops.npu`` is a
# lazily created namespace object; an attribute set on it is found before its ``__getattr__``
# looks the op up in the dispatcher.
torch.ops.npu.npu_fused_infer_attention_score = npu_fused_infer_attention_score
globals().update(moe.FUNCTIONS)
for _name, _function in moe.FUNCTIONS.items():
    setattr(torch.ops.npu, _name, _function)

LACKS_ENV = "NPU_STANDIN_LACKS"
LACKING = frozenset(n for n in os.environ.get(LACKS_ENV, "").split(",") if n)
for _name in LACKING:
    globals().pop(_name, None)
    if _name in vars(torch.ops.npu):
        delattr(torch.ops.npu, _name)

__all__ = [
    "npu_fused_infer_attention_score",
    "npu_fused_infer_attention_score_v2",
    "npu_scatter_nd_update_",
    "npu_scatter_pa_kv_cache",
    "reset_standin_call_counts",
    "standin_call_counts",
    "zero_cost_enabled",
]


def __getattr__(name: str) -> Any:
    # Dunder and module-machinery lookups (``__path__``, ``__spec__``...) must stay attribute
    # errors; any other name is a kernel this stand-in does not implement.
    if name.startswith("__") or name in LACKING:
        raise AttributeError(name)
    return standin.unimplemented(f"torch_npu.{name}")
