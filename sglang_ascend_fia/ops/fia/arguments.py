"""FIA arguments outside the geometry: what the reference does not model (refused by name,
never ignored), what treeMask excludes, and v2's names mapped onto v1's.

Used by :mod:`sglang_ascend_fia.ops.fia` (the v2 op is planned as a v1 call) and :mod:`.plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sglang_ascend_fia.ops._checks import fail, not_implemented
from sglang_ascend_fia.ops.fia.geometry import shape_of
from sglang_ascend_fia.ops.fia.rules import (
    LAYOUTS,
    OP,
    V2_ONLY_LAYOUTS,
    check_head_counts,
    check_sparse_mode,
)

# Arguments the reference does not model; each must keep its default (None, or 0 for modes).
V1_UNMODELLED = (
    "pse_shift",
    "dequant_scale1",
    "quant_scale1",
    "dequant_scale2",
    "quant_scale2",
    "quant_offset2",
    "antiquant_scale",
    "antiquant_offset",
    "key_antiquant_scale",
    "key_antiquant_offset",
    "value_antiquant_scale",
    "value_antiquant_offset",
    "query_padding_size",
    "kv_padding_size",
    "key_shared_prefix",
    "value_shared_prefix",
    "actual_shared_prefix_len",
    "key_rope_antiquant_scale",
    "antiquant_mode",
    "key_antiquant_mode",
    "value_antiquant_mode",
)
V2_UNMODELLED = (
    "pse_shift",
    "dequant_scale_query",
    "dequant_scale_key",
    "dequant_offset_key",
    "dequant_scale_value",
    "dequant_offset_value",
    "dequant_scale_key_rope",
    "quant_scale_out",
    "quant_offset_out",
    "quant_scale_p",
    "query_quant_mode",
    "key_quant_mode",
    "value_quant_mode",
    "query_dtype",
    "key_dtype",
    "value_dtype",
    "query_rope_dtype",
    "key_rope_dtype",
    "key_shared_prefix_dtype",
    "value_shared_prefix_dtype",
    "dequant_scale_query_dtype",
    "dequant_scale_key_dtype",
    "dequant_scale_value_dtype",
    "dequant_scale_key_rope_dtype",
    "out_dtype",
)


def reject_unmodelled(op: str, a: Mapping[str, Any], names: tuple[str, ...]) -> None:
    """The reference refuses (never ignores) arguments it does not model."""
    for name in names:
        value = a[name]
        is_default = value is None if not name.endswith("_mode") else value == 0
        if not is_default:
            not_implemented(
                op,
                name,
                shape_of(value) if isinstance(value, torch.Tensor) else value,
                "float attention without quantisation, pse_shift, shared prefixes, left padding "
                "or dtype overrides",
            )


# What the doc excludes from sparse_mode=9 (treeMask): "不支持左padding、pse_shift、sharedPrefix,
# 输出dtype不支持int8" (an int8 output is what quant_scale2 asks for).
TREE_MASK_EXCLUDES = (
    "pse_shift",
    "query_padding_size",
    "kv_padding_size",
    "key_shared_prefix",
    "value_shared_prefix",
    "actual_shared_prefix_len",
    "quant_scale2",
)

# v2 name -> v1 name, for the arguments the two versions share under different names.
_V2_RENAMES = {
    "actual_seq_qlen": "actual_seq_lengths",
    "actual_seq_kvlen": "actual_seq_lengths_kv",
    "num_query_heads": "num_heads",
    "softmax_scale": "scale",
    "return_softmax_lse": "softmax_lse_flag",
}
_V2_SHARED = (
    "query",
    "key",
    "value",
    "query_rope",
    "key_rope",
    "atten_mask",
    "block_table",
    "num_key_value_heads",
    "pre_tokens",
    "next_tokens",
    "input_layout",
    "sparse_mode",
    "block_size",
    "inner_precise",
)


def v2_to_v1(
    a: Mapping[str, Any], v1_defaults: Mapping[str, Any], *, reference: bool
) -> dict[str, Any]:
    """Check the v2-only arguments, then express the call with v1's names and defaults."""
    if reference:
        reject_unmodelled(f"{OP}_v2", a, V2_UNMODELLED)
        if a["input_layout"] in V2_ONLY_LAYOUTS:
            not_implemented(
                OP, "input_layout", a["input_layout"], f"{tuple(LAYOUTS)}; not the N-first outputs"
            )
    sink = a["learnable_sink"]
    if sink is not None:
        n = a["num_query_heads"]
        if not isinstance(sink, torch.Tensor) or tuple(sink.shape) != (n,):
            fail(
                OP,
                "learnable_sink",
                shape_of(sink),
                f"must have shape (num_query_heads,) = ({n},)",
            )
    v1 = dict(v1_defaults)
    v1.update({name: a[name] for name in _V2_SHARED})
    v1.update({old: a[new] for new, old in _V2_RENAMES.items()})
    return v1


def validate_v2_only_layout(a: Mapping[str, Any]) -> None:
    """Documented v2 layouts the plan does not model: check what does not depend on them."""
    rope = a["query_rope"] is not None
    check_head_counts(a["num_query_heads"], a["num_key_value_heads"], mla=rope)
    check_sparse_mode(a["sparse_mode"], rope=rope, version=2)
