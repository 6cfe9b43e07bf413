"""Expert compute: ``npu_grouped_matmul`` (row-grouped matmul) and ``npu_swiglu``.

Sources: torch_npu 2.14 (op-schema yaml, ``_op_plugin_docs.py``) and ``aclnnGroupedMatmulV4``;
see the package docstring of :mod:`sglang_ascend_fia.ops.moe`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from sglang_ascend_fia.ops._checks import (
    FLOAT_DTYPES,
    absent,
    check_shape,
    check_tensor,
    fail,
    not_implemented,
    require,
)
from sglang_ascend_fia.ops._dispatch import npu_op

# ---------------------------------------------------------------------------------------------
# npu_grouped_matmul
# ---------------------------------------------------------------------------------------------

_GMM = "grouped_matmul"
_GMM_INNER_LIMIT = 65536
# A2/A3 dtype table (torch_npu doc, group_list as Tensor; aclnnGroupedMatmulV4): the bias dtype
# of the non-quantised form, and the (scale dtype -> output dtype) pairs of the quantised form.
_GMM_FLOAT_BIAS = {
    torch.float16: torch.float16,
    torch.bfloat16: torch.float32,
    torch.float32: torch.float32,
}
_GMM_SCALE_TO_OUT = {
    torch.int64: torch.int8,
    torch.bfloat16: torch.bfloat16,
    torch.float32: torch.float16,
}


def _gmm_weight_is_transposed(w: torch.Tensor) -> bool:
    # "Transposed" per the doc: the last two axes are a transposed view of a contiguous [.., N, K].
    return w.dim() >= 2 and w.stride(-2) == 1 and w.stride(-1) != 1


def _validate_grouped_matmul(a: Mapping[str, Any]) -> None:
    x = a["x"]
    weight = a["weight"]
    bias = a["bias"]
    scale = a["scale"]
    offset = a["offset"]
    per_token_scale = a["per_token_scale"]
    group_list = a["group_list"]
    activation_input = a["activation_input"]
    activation_quant_scale = a["activation_quant_scale"]
    activation_quant_offset = a["activation_quant_offset"]
    split_item = a["split_item"]
    group_type = a["group_type"]
    group_list_type = a["group_list_type"]
    act_type = a["act_type"]
    output_dtype = a["output_dtype"]
    op = _GMM
    for name, value in (
        ("offset", offset),
        ("activation_input", activation_input),
        ("activation_quant_scale", activation_quant_scale),
        ("activation_quant_offset", activation_quant_offset),
    ):
        if not absent(value):
            fail(op, name, value, "must be None (doc: 'currently only None')")
    require(
        split_item in (0, 1, 2, 3),
        op,
        "split_item",
        split_item,
        "must be 0/1 (one output per weight) or 2/3 (one output)",
    )
    require(
        group_list_type in (0, 1),
        op,
        "group_list_type",
        group_list_type,
        "must be 0 (cumulative ends) or 1 (per-group counts)",
    )
    require(
        act_type in (0, 1, 2, 4, 5),
        op,
        "act_type",
        act_type,
        "must be 0 (none), 1 (relu), 2 (gelu_tanh), 4 (fast_gelu) or 5 (silu)",
    )
    for name, tensors in (("x", x), ("weight", weight)):
        if not isinstance(tensors, list | tuple) or not 1 <= len(tensors) <= 128:
            fail(op, name, tensors, "must be a list of 1 to 128 tensors")
    if split_item not in (2, 3) or group_type != 0 or len(x) != 1:
        return  # the kernel checks the other scenarios; the reference refuses them
    xs = check_tensor(op, "x[0]", x[0], dims={2}, dtypes=(*FLOAT_DTYPES, torch.int8))
    k_dim = xs.shape[1]
    require(k_dim < _GMM_INNER_LIMIT, op, "x[0]", xs, f"must have K < {_GMM_INNER_LIMIT}")
    if len(weight) == 1:
        check_tensor(op, "weight[0]", weight[0], dims={3})
        groups, n_dim = weight[0].shape[0], weight[0].shape[2]
        max_groups = 1024
    else:
        for i, w in enumerate(weight):
            check_tensor(op, f"weight[{i}]", w, dims={2})
        groups, n_dim = len(weight), weight[0].shape[1]
        max_groups = 128
    require(groups <= max_groups, op, "weight", weight, f"must hold at most {max_groups} groups")
    for i, w in enumerate(weight):
        require(w.dtype == xs.dtype, op, f"weight[{i}]", w, f"must have x's dtype {xs.dtype}")
        require(
            w.shape[-2] == k_dim and w.shape[-1] == n_dim,
            op,
            f"weight[{i}]",
            w,
            f"must be [K={k_dim}, N={n_dim}] per group (the op takes weight as [E, K, N])",
        )
        inner = k_dim if _gmm_weight_is_transposed(w) else n_dim
        require(
            inner < _GMM_INNER_LIMIT,
            op,
            f"weight[{i}]",
            w,
            f"must have its innermost axis < {_GMM_INNER_LIMIT}",
        )
    per_group_shape = (groups, n_dim) if len(weight) == 1 else (n_dim,)
    if group_list is None:
        fail(op, "group_list", group_list, "group_type=0 needs a group_list")
    check_tensor(op, "group_list", group_list, dims={1}, dtypes={torch.int64})
    check_shape(op, "group_list", group_list, (groups,), "one entry per weight group")
    quantised = xs.dtype == torch.int8
    if not absent(bias):
        assert bias is not None
        require(len(bias) == len(weight), op, "bias", bias, "must have one tensor per weight")
        want = torch.int32 if quantised else _GMM_FLOAT_BIAS[xs.dtype]
        for i, b in enumerate(bias):
            check_tensor(op, f"bias[{i}]", b, dtypes={want})
            check_shape(op, f"bias[{i}]", b, per_group_shape, "one row of N per group")
    if not quantised:
        if not absent(scale) or not absent(per_token_scale):
            fail(op, "scale", scale, "must be None for float x (scales are for int8 x)")
        require(
            output_dtype in (None, xs.dtype),
            op,
            "output_dtype",
            output_dtype,
            f"must be None or x's dtype {xs.dtype} for float x",
        )
        return
    # int8 x, A2/A3 table: no scale -> int32 out; int64 (packed) -> int8; bf16 -> bf16;
    # float32 -> float16. Only the bf16/float32 rows take a per_token_scale.
    if absent(scale):
        require(
            output_dtype == torch.int32,
            op,
            "output_dtype",
            output_dtype,
            "must be torch.int32 for int8 x without a scale",
        )
        if not absent(per_token_scale):
            fail(op, "per_token_scale", per_token_scale, "it needs a bfloat16/float32 scale")
        return
    assert scale is not None
    require(len(scale) == len(weight), op, "scale", scale, "must have one tensor per weight")
    for i, s in enumerate(scale):
        check_tensor(op, f"scale[{i}]", s, dtypes=_GMM_SCALE_TO_OUT)
        check_shape(op, f"scale[{i}]", s, per_group_shape, "per-channel: one row of N per group")
    want_out = _GMM_SCALE_TO_OUT[scale[0].dtype]
    allowed_out = (None, want_out) if want_out == torch.int8 else (want_out,)
    require(
        output_dtype in allowed_out,
        op,
        "output_dtype",
        output_dtype,
        f"must be {want_out} with a {scale[0].dtype} scale (A2/A3 dtype table)",
    )
    if not absent(per_token_scale):
        assert per_token_scale is not None
        if scale[0].dtype == torch.int64:
            fail(op, "per_token_scale", per_token_scale, "it needs a bfloat16/float32 scale")
        require(
            len(per_token_scale) == 1,
            op,
            "per_token_scale",
            per_token_scale,
            "must be a list of one tensor (x is a single tensor)",
        )
        pts = check_tensor(
            op, "per_token_scale[0]", per_token_scale[0], dims={1}, dtypes={torch.float32}
        )
        check_shape(op, "per_token_scale[0]", pts, (xs.shape[0],), "one scale per row of x")


def _gmm_reference_limits(
    x: list[torch.Tensor],
    split_item: int,
    group_type: int | None,
    act_type: int,
    scale: list[torch.Tensor] | None,
    unsupported: dict[str, object],
) -> None:
    """What the kernel supports but the reference does not (checked in the reference only)."""
    op = _GMM
    if split_item != 2 or group_type != 0 or len(x) != 1:
        not_implemented(
            op,
            "split_item/group_type",
            (split_item, group_type),
            "split_item=2, group_type=0: one 2-D x split into row groups by group_list",
        )
    if act_type != 0:
        not_implemented(op, "act_type", act_type, "act_type=0 (no fused activation)")
    for name, value in unsupported.items():
        if not absent(value):
            not_implemented(op, name, value, f"{name}=None")
    if x[0].dtype == torch.int8:
        if absent(scale):
            not_implemented(op, "scale", scale, "int8 x with a bfloat16/float32 scale")
        assert scale is not None
        if scale[0].dtype == torch.int64:
            not_implemented(
                op, "scale[0]", scale[0], "bfloat16/float32 scales (int64 packed scales are not)"
            )


def _gmm_counts(group_list: torch.Tensor, group_list_type: int, rows: int) -> list[int]:
    values = [int(v) for v in group_list.tolist()]
    if group_list_type == 0:
        if any(v < 0 for v in values) or any(b < a for a, b in itertools.pairwise(values)):
            fail(_GMM, "group_list", values, "must be non-negative and non-decreasing")
        if values[-1] > rows:
            fail(_GMM, "group_list", values, f"must end at most at x's row count {rows}")
        return [b - a for a, b in zip([0, *values[:-1]], values, strict=True)]
    if any(v < 0 for v in values):
        fail(_GMM, "group_list", values, "must be non-negative (counts)")
    if sum(values) > rows:
        fail(_GMM, "group_list", values, f"must sum to at most x's row count {rows}")
    return values


@npu_op("npu_grouped_matmul", validate=_validate_grouped_matmul)
def grouped_matmul(
    x: list[torch.Tensor],
    weight: list[torch.Tensor],
    *,
    bias: list[torch.Tensor] | None = None,
    scale: list[torch.Tensor] | None = None,
    offset: list[torch.Tensor] | None = None,
    antiquant_scale: list[torch.Tensor] | None = None,
    antiquant_offset: list[torch.Tensor] | None = None,
    per_token_scale: list[torch.Tensor] | None = None,
    group_list: torch.Tensor | None = None,
    activation_input: list[torch.Tensor] | None = None,
    activation_quant_scale: list[torch.Tensor] | None = None,
    activation_quant_offset: list[torch.Tensor] | None = None,
    split_item: int = 0,
    group_type: int | None = None,
    group_list_type: int = 0,
    act_type: int = 0,
    tuning_config: list[int] | None = None,
    output_dtype: torch.dtype | None = None,
    x_dtype: torch.dtype | None = None,
    weight_dtype: torch.dtype | None = None,
    scale_dtype: torch.dtype | None = None,
    per_token_scale_dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """Row-grouped matmul: rows of ``x[0]`` in group g times ``W_g`` (``[K, N]``), one output.

    ``group_list`` gives the row groups: cumulative ends (group_list_type 0) or counts (1).
    They may cover fewer rows than ``x[0]`` has: the rows past their total are left undefined
    (NaN here). (Inferred: torch_npu's doc describes the groups as "group_list[0]=10: the first
    10 rows take part in group 0" and states no equality with M; vllm-ascend's all-gather
    expert-parallel dispatcher runs the grouped matmul on all of ``npu_moe_init_routing_v2``'s
    rows with the counts of the local ``active_expert_range`` only, whose total is smaller.)
    ``weight`` is ``[W]`` with ``W`` of shape ``[E, K, N]`` or a list of E ``[K, N]`` tensors;
    either may be a transposed (non-contiguous) view, which the doc allows and sglang's BF16 path
    uses (``[w.transpose(1, 2)]`` of a stored ``[E, N, K]``).

    * float x: ``y_g = x_g @ W_g + b_g``, output in x's dtype.
    * int8 x (doc formula 3, aclnnGroupedMatmulV4): ``y_g = (x_g @ W_g + b_g) * scale_g *
      per_token_scale`` with int32 bias ``b_g`` added to the exact integer accumulator, per-channel
      ``scale_g`` (``[E, N]``) and per-row ``per_token_scale`` (``[M]``, optional).

    ``tuning_config`` is a kernel tiling hint with no effect on the result, so it is accepted.
    """
    _gmm_reference_limits(
        x,
        split_item,
        group_type,
        act_type,
        scale,
        {
            "antiquant_scale": antiquant_scale,
            "antiquant_offset": antiquant_offset,
            "x_dtype": x_dtype,
            "weight_dtype": weight_dtype,
            "scale_dtype": scale_dtype,
            "per_token_scale_dtype": per_token_scale_dtype,
        },
    )
    xs = x[0]
    rows = xs.shape[0]
    assert group_list is not None
    counts = _gmm_counts(group_list, group_list_type, rows)
    weights = list(weight[0]) if len(weight) == 1 else list(weight)
    quantised = xs.dtype == torch.int8
    biases = None
    if not absent(bias):
        assert bias is not None
        biases = list(bias[0]) if len(weight) == 1 else list(bias)
    scales = None
    if quantised:
        assert scale is not None
        scales = list(scale[0]) if len(weight) == 1 else list(scale)
    n_dim = weights[0].shape[-1]
    out_dtype = output_dtype if output_dtype is not None else xs.dtype
    # Rows past the groups' total are not computed: undefined, NaN here (or the integer minimum)
    # so that a caller that reads them is caught.
    fill = float("nan") if out_dtype.is_floating_point else torch.iinfo(out_dtype).min
    out = torch.full((rows, n_dim), fill, dtype=out_dtype, device=xs.device)
    begin = 0
    for g, count in enumerate(counts):
        rows_g = slice(begin, begin + count)
        begin += count
        if quantised:
            assert scales is not None
            # float64 holds every int8 x int8 dot product exactly, like the int32 accumulator.
            acc = xs[rows_g].double() @ weights[g].double()
            if biases is not None:
                acc = acc + biases[g].double()
            y = acc.float() * scales[g].float()
            if not absent(per_token_scale):
                assert per_token_scale is not None
                y = y * per_token_scale[0][rows_g].float().unsqueeze(-1)
        else:
            y = xs[rows_g].float() @ weights[g].float()
            if biases is not None:
                y = y + biases[g].float()
        out[rows_g] = y.to(out_dtype)
    return [out]


# ---------------------------------------------------------------------------------------------
# npu_swiglu
# ---------------------------------------------------------------------------------------------

_SWIGLU = "swiglu"


# ``self`` is the schema's name for the input (``npu_swiglu(Tensor self, int dim=-1)``); keeping
# it lets keyword callers reach torch_npu unchanged.
def _validate_swiglu(a: Mapping[str, Any]) -> None:
    x = a["self"]
    dim = a["dim"]
    op = _SWIGLU
    check_tensor(op, "self", x, dims=set(range(1, 9)), dtypes=FLOAT_DTYPES)
    require(-x.dim() <= dim < x.dim(), op, "dim", dim, f"must index one of {x.dim()} axes")
    require(
        x.shape[dim] % 2 == 0,
        op,
        "self",
        x,
        f"must have an even size along dim={dim} (it is split into A, B)",
    )


@npu_op("npu_swiglu", validate=_validate_swiglu)
def swiglu(self: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``silu(A) * B`` with ``A, B = split(self, 2, dim)`` (A the first half), in self's dtype."""
    a, b = self.float().chunk(2, dim=dim)
    return (F.silu(a) * b).to(self.dtype)
