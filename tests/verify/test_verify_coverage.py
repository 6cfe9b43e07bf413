"""verify-ops covers every supported argument value of every op: a recorded-call audit.

Every verify-ops case runs once on the CPU with each facade op wrapped to record its arguments.
Each recorded call is reduced to labelled features (argument -> value) by a per-op extractor, and
``REQUIRED`` lists, per op, the values each feature must show in at least one call. A case edit
that drops a combination, or a new op without cases, fails here.

The required values are the ones the op's docstring/validator documents *and* the reference
implements (a case must run on both sides), restricted to calls legal on the kernel. Left out on
purpose, with the reason:

- FIA: fp32 (the kernel takes fp16/bf16; fp32 is reference-only), int8/quantised and NZ inputs,
  the v2 ``*_NBSD``/``NTD`` layouts, pse/prefix/left padding and sparse_mode 9 (not implemented
  by the reference); TND with rope in v1 (documented in v2 only).
- grouped_matmul split_item 0/1/3, group_type -1, act_type != 0, antiquant and int64 scales;
  moe_init_routing_v2 drop_pad_mode 1 and quant modes other than -1/1; moe_finalize_routing
  drop_pad_mode 1/3; quant_matmul int8/int32 output and int4; dequant_swiglu_quant quant_mode 0,
  swiglu_mode 1, bias and quant_offset; dynamic_quant int4; quantize div_mode True, quint4x2 and
  axis -2: the reference refuses them.
- dequant_swiglu_quant fp16 x: the doc's dtype list names int32 and bf16 only.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from sglang_ascend_fia import ops
from sglang_ascend_fia import verify as verify_ops

Args = dict[str, Any]
Features = dict[str, object]


class Recorded(dict[str, list[tuple[str, Args]]]):
    """case name -> [(op name, bound arguments)]; a short repr keeps failure reports readable."""

    def __repr__(self) -> str:
        return f"<calls of {len(self)} verify-ops cases>"


_SHORT = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.bool: "bool",
}


def _dt(t: torch.Tensor | torch.dtype | None) -> str:
    """A tensor's (or a dtype's) short name; "none" for None."""
    if t is None:
        return "none"
    dtype = t.dtype if isinstance(t, torch.Tensor) else t
    return _SHORT.get(dtype, str(dtype))


def _given(value: object) -> str:
    return "none" if value is None else "given"


# ---- FIA -------------------------------------------------------------------------------------

_V2_TO_V1 = {
    "num_query_heads": "num_heads",
    "softmax_scale": "scale",
    "actual_seq_qlen": "actual_seq_lengths",
    "actual_seq_kvlen": "actual_seq_lengths_kv",
    "return_softmax_lse": "softmax_lse_flag",
}


def _cumulative_lens(cum: list[int]) -> list[int]:
    return [b - a for a, b in zip([0, *cum], cum, strict=False)]


def _fia_common(a: Args) -> Features:
    """Features of an FIA call in v1 argument names (a v2 call is renamed first)."""
    q, k, mask = a["query"], a["key"], a["atten_mask"]
    layout, sparse, n = a["input_layout"], a["sparse_mode"], a["num_heads"]
    if layout == "TND":
        batch = len(a["actual_seq_lengths"])
        q_s = max(_cumulative_lens(list(a["actual_seq_lengths"])))
    else:
        batch = q.size(0)
        q_s = q.size(1) if layout in ("BSH", "BSND") else q.size(2)
    phase = "decode" if q_s == 1 else "prompt"
    paged = a["block_table"] is not None
    storage = ("paged-4d" if k.dim() == 4 else "paged-3d") if paged else "dense"
    nkv = a["num_key_value_heads"]
    rope = a["query_rope"] is not None
    sparse_used = rope or phase == "prompt"  # Q_S=1 without rope ignores sparse_mode (doc)
    if mask is None:
        mask_kind = "none"
    elif sparse in (2, 3, 4):
        mask_kind = f"template {tuple(mask.shape)}"
    elif mask.dim() == 4:
        mask_kind = "(1,1,Q_S,KV_S)" if mask.size(0) == 1 and batch > 1 else "(B,1,Q_S,KV_S)"
    elif mask.dim() == 3:
        mask_kind = "(1,Q_S,KV_S)"
    else:
        mask_kind = "(Q_S,KV_S)" if phase == "prompt" else "(B,KV_S)"
    q_lens, kv_lens = a["actual_seq_lengths"], a["actual_seq_lengths_kv"]
    if layout == "TND":
        q_label = "cumulative (TND)"
    elif q_lens is None:
        q_label = "none"
    elif phase == "decode":
        q_label = "ignored (Q_S=1)"
    else:
        q_label = "broadcast" if len(q_lens) == 1 < batch else "per request"
    if paged:
        kv_label = "per request (paged)"
    elif layout == "TND":
        kv_label = "cumulative (dense TND)"
    elif kv_lens is None:
        kv_label = "none"
    else:
        kv_label = "broadcast" if len(kv_lens) == 1 < batch else "per request (dense)"
    features: Features = {
        "dtype": _dt(q),
        "input_layout/phase": f"{layout}/{phase}",
        "kv storage/phase": f"{storage}/{phase}",
        "heads/kv/phase": (
            f"{'mha' if nkv in (0, n) else 'gqa'}/{'paged' if paged else 'dense'}/{phase}"
        ),
        "num_key_value_heads": "0" if nkv == 0 else ("num_heads" if nkv == n else "divisor"),
        "sparse_mode": sparse if sparse_used else "ignored (Q_S=1)",
        "atten_mask": mask_kind,
        "inner_precise": a["inner_precise"],
        "softmax_lse_flag": bool(a["softmax_lse_flag"]),
        "actual_seq_lengths": q_label,
        "actual_seq_lengths_kv": kv_label,
        "query_rope/key_rope": f"mla D {q.size(-1) // (n if layout == 'BSH' else 1)}"
        if rope
        else "none",
        "pre_tokens/next_tokens": (
            "default" if (a["pre_tokens"], a["next_tokens"]) == (2**31 - 1, 2**31 - 1) else "set"
        ),
    }
    if mask is not None and mask_kind.startswith("("):
        features["atten_mask dtype"] = _dt(mask)
    if paged:
        features["block_size"] = f"{'mla' if rope else phase}:{a['block_size']}"
    if rope:
        features["mla input_layout/phase"] = f"{layout}/{phase}"
        features["mla kv storage"] = storage
        features["mla sparse_mode/phase"] = f"{sparse}/{phase}"
    return features


def _fia_v1(a: Args) -> Features:
    return _fia_common(a)


def _fia_v2(a: Args) -> Features:
    v1 = dict(a)
    for new, old in _V2_TO_V1.items():
        v1[old] = v1.pop(new)
    common = _fia_common(v1)
    sink = a["learnable_sink"]
    return {
        "dtype": common["dtype"],
        "input_layout/phase": common["input_layout/phase"],
        "kv storage": common["kv storage/phase"].split("/")[0],
        "num_query_heads/num_key_value_heads": common["heads/kv/phase"].split("/")[0],
        "sparse_mode": common["sparse_mode"],
        "actual_seq_qlen": common["actual_seq_lengths"],
        "actual_seq_kvlen": common["actual_seq_lengths_kv"],
        "softmax_scale": "default" if a["softmax_scale"] == 1.0 else "set",
        "return_softmax_lse": common["softmax_lse_flag"],
        "learnable_sink": "none" if sink is None else a["input_layout"],
        "query_rope/key_rope": common["query_rope/key_rope"],
    }


# ---- KV cache --------------------------------------------------------------------------------


def _scatter_nd_update(a: Args) -> Features:
    dest, indices = list(a.values())[:2]  # positional: the first parameter's name varies
    return {"dtype": _dt(dest), "indices dtype": _dt(indices), "index depth": indices.size(-1)}


def _scatter_pa_kv_cache(a: Args) -> Features:
    return {
        "dtype": _dt(a["key"]),
        "cache_mode": str(a["cache_mode"]),
        "slot_mapping dtype": _dt(a["slot_mapping"]),
        "K/V head size": "equal" if a["key"].size(-1) == a["value"].size(-1) else "different",
    }


# ---- MoE -------------------------------------------------------------------------------------


def _gating_softmax(a: Args) -> Features:
    return {
        "dtype": _dt(a["x"]),
        "x rank": a["x"].dim(),
        "finished": _given(a["finished"]),
        "k": "1" if a["k"] == 1 else ">1",
    }


def _gating(a: Args) -> Features:
    grouped = a["group_count"] > 1
    features: Features = {
        "dtype": _dt(a["x"]),
        "norm_type": a["norm_type"],
        "bias": _given(a["bias"]),
        "group_count": ">1" if grouped else "1",
        "renorm": a["renorm"],
        "out_flag": bool(a["out_flag"]),
        "routed_scaling_factor": "1.0" if a["routed_scaling_factor"] == 1.0 else "other",
    }
    if grouped:
        features["group_select_mode"] = a["group_select_mode"]
    return features


def _init_routing(a: Args) -> Features:
    num_rows, top_k = a["expert_idx"].shape
    start, end = (list(a["active_expert_range"]) or [0, a["expert_num"]])[:2]
    scale = a["scale"]
    if scale is None:
        scale_label = "none"
    else:
        scale_label = "per row" if scale.dim() == 1 else "smooth per expert"
    active = a["active_num"]
    return {
        "x dtype": _dt(a["x"]),
        "quant_mode": a["quant_mode"],
        "expert_tokens_num_type": a["expert_tokens_num_type"],
        "row_idx_type": a["row_idx_type"],
        "active_expert_range": "all" if (start, end) == (0, a["expert_num"]) else "sub-range",
        "scale": scale_label,
        "active_num": "NUM_ROWS*K" if active == num_rows * top_k else str(active),
    }


def _is_transposed(w: torch.Tensor) -> bool:
    return w.stride(-2) == 1 and w.stride(-1) != 1


def _grouped_matmul(a: Args) -> Features:
    x, weights = a["x"][0], a["weight"]
    form = "one [E,K,N]" if len(weights) == 1 else "list of [K,N]"
    features: Features = {
        "x dtype": _dt(x),
        "weight": form + (" transposed" if _is_transposed(weights[0]) else ""),
        "group_list_type": a["group_list_type"],
        "bias": _dt(a["bias"][0]) if a["bias"] else "none",
        "output_dtype": _dt(a["output_dtype"]),
    }
    if x.dtype == torch.int8:
        features["scale dtype"] = _dt(a["scale"][0])
        features["per_token_scale"] = "given" if a["per_token_scale"] else "none"
    return features


def _finalize(a: Args) -> Features:
    rows, scales = a["expanded_permuted_rows"], a["scales"]
    if scales is None:
        scales_label = "none (k)"
    else:
        scales_label = "rows' dtype" if scales.dtype == rows.dtype else f"{_dt(scales)}"
    return {
        "dtype": _dt(rows),
        "drop_pad_mode": a["drop_pad_mode"],
        "scales": scales_label,
        "skip1/skip2": "both" if a["skip2"] is not None else _given(a["skip1"]),
        "bias": _given(a["bias"]),
    }


def _swiglu(a: Args) -> Features:
    x, dim = a["self"], a["dim"]
    return {
        "dtype": _dt(x),
        "dim": "last" if dim % x.dim() == x.dim() - 1 else "other",
        "rank": x.dim(),
    }


# ---- quantisation ----------------------------------------------------------------------------


def _dynamic_quant(a: Args) -> Features:
    smooth, group_index = a["smooth_scales"], a["group_index"]
    if smooth is None:
        smooth_label = "none"
    else:
        smooth_label = "one row" if group_index is None else "per group (group_index)"
    return {
        "dtype": _dt(a["input"]),
        "rank": a["input"].dim(),
        "smooth_scales": smooth_label,
        "dst_type": _dt(a["dst_type"]),
    }


def _quantize(a: Args) -> Features:
    x, scales, axis = a["self"], a["scales"], a["axis"]
    scale_shape = "(1,)" if scales.numel() == 1 else "(K,)"
    return {
        "dtype": _dt(x),
        "rank": x.dim(),
        "scales": "(1, K)" if scales.dim() > 1 else scale_shape,
        "scales dtype": "self's" if scales.dtype == x.dtype else _dt(scales),
        "zero_points": _given(a["zero_points"]),
        "dtype argument": str(a["dtype"]),
        "axis": str(axis),
        "div_mode": bool(a["div_mode"]),
    }


def _quant_matmul(a: Args) -> Features:
    scale = a["scale"]
    return {
        "output_dtype": _dt(a["output_dtype"]),
        "scale dtype": _dt(scale),
        "scale shape": "(1,)" if scale.numel() == 1 else "(N,)",
        "pertoken_scale": _given(a["pertoken_scale"]),
        "bias": _dt(a["bias"]),
        "x1 rank": a["x1"].dim(),
    }


def _dequant_swiglu_quant(a: Args) -> Features:
    x, group_index = a["x"], a["group_index"]
    if group_index is None:
        groups = "none"
    else:
        groups = "all rows" if int(group_index.sum()) == x.size(0) else "fewer rows"
    features: Features = {
        "x dtype": _dt(x),
        "activate_left": bool(a["activate_left"]),
        "group_index": groups,
        "quant_scale": _dt(a["quant_scale"]),
    }
    if x.dtype == torch.int32:
        features["activation_scale shape"] = "(T,)" if a["activation_scale"].dim() == 1 else "(T,1)"
    return features


EXTRACTORS: dict[str, Callable[[Args], Features]] = {
    "fused_infer_attention_score": _fia_v1,
    "fused_infer_attention_score_v2": _fia_v2,
    "scatter_nd_update_": _scatter_nd_update,
    "scatter_pa_kv_cache": _scatter_pa_kv_cache,
    "moe_gating_top_k_softmax": _gating_softmax,
    "moe_gating_top_k": _gating,
    "moe_init_routing_v2": _init_routing,
    "grouped_matmul": _grouped_matmul,
    "moe_finalize_routing": _finalize,
    "swiglu": _swiglu,
    "dynamic_quant": _dynamic_quant,
    "quantize": _quantize,
    "quant_matmul": _quant_matmul,
    "dequant_swiglu_quant": _dequant_swiglu_quant,
}

HALF = {"fp16", "bf16"}
FLOATS = {"fp16", "bf16", "fp32"}

REQUIRED: dict[str, dict[str, set[object]]] = {
    "fused_infer_attention_score": {
        "dtype": HALF,
        "input_layout/phase": {
            "BSH/decode",
            "BSH/prompt",
            "BSND/decode",
            "BSND/prompt",
            "BNSD/decode",
            "BNSD/prompt",
            "BNSD_BSND/prompt",
            "TND/prompt",
        },
        "kv storage/phase": {
            "dense/decode",
            "dense/prompt",
            "paged-3d/decode",
            "paged-3d/prompt",
            "paged-4d/decode",
            "paged-4d/prompt",
        },
        "heads/kv/phase": {
            "mha/dense/decode",
            "mha/dense/prompt",
            "gqa/dense/prompt",
            "gqa/paged/decode",
            "gqa/paged/prompt",
        },
        "num_key_value_heads": {"0", "num_heads", "divisor"},
        "sparse_mode": {0, 1, 2, 3, 4},
        "atten_mask": {
            "none",
            "(1,Q_S,KV_S)",
            "(B,1,Q_S,KV_S)",
            "(1,1,Q_S,KV_S)",
            "(Q_S,KV_S)",
            "(B,KV_S)",
            "template (2048, 2048)",
            "template (1, 2048, 2048)",
            "template (1, 1, 2048, 2048)",
        },
        "atten_mask dtype": {"bool", "int8", "uint8"},
        "inner_precise": {0, 1, 2, 3},
        "softmax_lse_flag": {False, True},
        "block_size": {
            "decode:16",
            "decode:128",
            "decode:512",
            "prompt:128",
            "prompt:256",
            "prompt:512",
            "mla:16",
            "mla:64",
            "mla:128",
        },
        "actual_seq_lengths": {"none", "broadcast", "per request", "cumulative (TND)"},
        "actual_seq_lengths_kv": {
            "none",
            "broadcast",
            "per request (dense)",
            "cumulative (dense TND)",
            "per request (paged)",
        },
        "query_rope/key_rope": {"none", "mla D 512"},
        "pre_tokens/next_tokens": {"default", "set"},
        "mla input_layout/phase": {"BSH/prompt", "BSND/decode", "BSND/prompt", "BNSD/decode"},
        "mla kv storage": {"paged-3d", "paged-4d"},
        "mla sparse_mode/phase": {"0/decode", "3/prompt", "4/decode", "4/prompt"},
    },
    "fused_infer_attention_score_v2": {
        "dtype": HALF,
        "input_layout/phase": {
            "BSND/decode",
            "BSND/prompt",
            "BNSD/decode",
            "BNSD/prompt",
            "TND/prompt",
        },
        "kv storage": {"dense", "paged-3d", "paged-4d"},
        "num_query_heads/num_key_value_heads": {"mha", "gqa"},
        "sparse_mode": {0, 3, 4},
        "actual_seq_qlen": {"none", "per request", "cumulative (TND)"},
        "actual_seq_kvlen": {"per request (paged)", "cumulative (dense TND)"},
        "softmax_scale": {"set"},
        "return_softmax_lse": {False, True},
        "learnable_sink": {"none", "TND", "BSND"},
        "query_rope/key_rope": {"none", "mla D 512", "mla D 128"},
    },
    "scatter_nd_update_": {
        "dtype": {"fp16", "bf16", "fp32", "int8", "int64", "bool"},
        "indices dtype": {"int32", "int64"},
        "index depth": {1, 2},
    },
    "scatter_pa_kv_cache": {
        "dtype": {"fp16", "bf16", "int8"},
        "cache_mode": {"None", "Norm", "PA_NZ"},
        "slot_mapping dtype": {"int32", "int64"},
        "K/V head size": {"equal", "different"},
    },
    "moe_gating_top_k_softmax": {
        "dtype": FLOATS,
        "x rank": {2, 3},
        "finished": {"none", "given"},
        "k": {"1", ">1"},
    },
    "moe_gating_top_k": {
        "dtype": FLOATS,
        "norm_type": {0, 1},
        "bias": {"none", "given"},
        "group_count": {"1", ">1"},
        "group_select_mode": {0, 1},
        "renorm": {0, 1},
        "out_flag": {False, True},
        "routed_scaling_factor": {"1.0", "other"},
    },
    "moe_init_routing_v2": {
        "x dtype": {"fp16", "bf16", "fp32", "int8"},
        "quant_mode": {-1, 1},
        "expert_tokens_num_type": {0, 1, 2},
        "row_idx_type": {0, 1},
        "active_expert_range": {"all", "sub-range"},
        "scale": {"none", "per row", "smooth per expert"},
        "active_num": {"-1", "0", "NUM_ROWS*K"},
    },
    "grouped_matmul": {
        "x dtype": {"fp16", "bf16", "fp32", "int8"},
        "weight": {
            "one [E,K,N]",
            "one [E,K,N] transposed",
            "list of [K,N]",
            "list of [K,N] transposed",
        },
        "group_list_type": {0, 1},
        "bias": {"none", "fp16", "fp32", "int32"},
        "output_dtype": {"none", "fp16", "bf16", "fp32"},
        "scale dtype": {"bf16", "fp32"},
        "per_token_scale": {"none", "given"},
    },
    "moe_finalize_routing": {
        "dtype": FLOATS,
        "drop_pad_mode": {0, 2},
        "scales": {"none (k)", "rows' dtype", "fp32"},
        "skip1/skip2": {"none", "both"},
        "bias": {"none", "given"},
    },
    "swiglu": {"dtype": FLOATS, "dim": {"last", "other"}, "rank": {2, 3}},
    "dynamic_quant": {
        "dtype": HALF,
        "rank": {2, 3},
        "smooth_scales": {"none", "one row", "per group (group_index)"},
        "dst_type": {"none", "int8"},
    },
    "quantize": {
        "dtype": FLOATS,
        "rank": {1, 2, 3},
        "scales": {"(1,)", "(K,)", "(1, K)"},
        "scales dtype": {"self's", "bf16"},
        "zero_points": {"none", "given"},
        "dtype argument": {"torch.qint8", "torch.int8"},
        "axis": {"-1", "1"},
        "div_mode": {False},
    },
    "quant_matmul": {
        "output_dtype": HALF,
        "scale dtype": {"fp32", "bf16"},
        "scale shape": {"(1,)", "(N,)"},
        "pertoken_scale": {"none", "given"},
        "bias": {"none", "int32", "bf16", "fp16", "fp32"},
        "x1 rank": {2, 3},
    },
    "dequant_swiglu_quant": {
        "x dtype": {"bf16", "int32"},
        "activate_left": {True, False},
        "group_index": {"none", "all rows", "fewer rows"},
        "quant_scale": {"none", "fp32", "fp16", "bf16"},
        "activation_scale shape": {"(T,)", "(T,1)"},
    },
}

# Float ops whose kernel documents only one of fp16/bf16 (every other float op needs both).
SINGLE_HALF_DTYPE = {"dequant_swiglu_quant": "the doc's x dtypes are int32 and bfloat16 only"}


def _facade_ops() -> dict[str, Any]:
    return {
        name: getattr(ops, name) for name in ops.__all__ if hasattr(getattr(ops, name), "reference")
    }


@pytest.fixture(scope="module")
def recorded() -> Iterator[Recorded]:
    """The calls of one CPU run of every case."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    calls: list[tuple[str, Args]] = []
    patch = pytest.MonkeyPatch()

    def recorder(name: str, op: Any) -> Callable[..., Any]:
        signature = inspect.signature(op.reference)

        def record(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            calls.append((name, dict(bound.arguments)))
            return op(*args, **kwargs)

        return record

    for name, op in _facade_ops().items():
        patch.setattr(ops, name, recorder(name, op))
    per_case = Recorded()
    try:
        for make in verify_ops.all_cases():
            case_name, run, _ = make()
            calls.clear()
            run("cpu")
            per_case[case_name] = list(calls)
    finally:
        patch.undo()
        torch.set_num_threads(before)
    yield per_case


def _covered(recorded: Recorded) -> dict[str, dict[str, set[object]]]:
    covered: dict[str, dict[str, set[object]]] = defaultdict(lambda: defaultdict(set))
    for calls in recorded.values():
        for op_name, args in calls:
            for feature, value in EXTRACTORS[op_name](args).items():
                covered[op_name][feature].add(value)
    return covered


def test_every_facade_op_has_a_coverage_table() -> None:
    facade = set(_facade_ops())
    assert facade == set(EXTRACTORS) == set(REQUIRED), (
        "ops without a verify-ops coverage table (add cases and a REQUIRED entry): "
        f"{sorted(facade ^ set(REQUIRED))}"
    )


def test_every_float_op_requires_fp16_and_bf16() -> None:
    for op_name, table in REQUIRED.items():
        dtypes = next((v for k, v in table.items() if "dtype" in k), set())
        if dtypes & HALF and op_name not in SINGLE_HALF_DTYPE:
            assert dtypes >= HALF, f"{op_name}: fp16 and bf16 must both be required"


def test_every_case_calls_an_op(recorded: Recorded) -> None:
    idle = [name for name, calls in recorded.items() if not calls]
    assert not idle, f"cases that call no facade op: {idle}"


def test_required_argument_values_are_covered(
    recorded: Recorded,
) -> None:
    covered = _covered(recorded)
    missing = [
        f"{op_name}: {feature} = {value!r}"
        for op_name, table in REQUIRED.items()
        for feature, values in table.items()
        for value in sorted(values - covered[op_name][feature], key=repr)
    ]
    assert not missing, "verify-ops cases no longer cover:\n" + "\n".join(missing)


def test_the_audit_sees_a_dropped_combination(
    recorded: Recorded,
) -> None:
    """Removing the only case with a value makes the check report exactly that value."""
    only_sparse_1 = [
        name
        for name, calls in recorded.items()
        if any(
            op == "fused_infer_attention_score" and _fia_v1(a)["sparse_mode"] == 1
            for op, a in calls
        )
    ]
    assert len(only_sparse_1) == 1
    without = Recorded({k: v for k, v in recorded.items() if k != only_sparse_1[0]})
    assert 1 not in _covered(without)["fused_infer_attention_score"]["sparse_mode"]
