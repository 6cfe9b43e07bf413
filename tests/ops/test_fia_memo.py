"""FIA validates once per geometry: every layer of a batch makes the same call, so only the first
runs the validator; any change to what the validator reads makes the next call validate fully.

Counts come from ``ops.validation_counts()`` (full validator runs); ``reset_validation_counts()``
also forgets the remembered call, so each test starts cold.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch

from sglang_ascend_fia import ops

# The torch_npu branch of npu_op is reached by patching the module attribute it calls: no public
# seam chooses the branch (a tensor's device does, and CPU tests have no NPU tensor).
from sglang_ascend_fia.ops import _dispatch

OP = "fused_infer_attention_score"


pytestmark = pytest.mark.usefixtures("cold_counters")


def decode_call(**over: Any) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    """A valid BSND paged decode, with fresh query and caches (as each layer has its own)."""
    kw: dict[str, Any] = {
        "num_heads": 8,
        "num_key_value_heads": 2,
        "input_layout": "BSND",
        "block_table": TABLE,
        "block_size": 128,
        "actual_seq_lengths_kv": LENS,
        "scale": 0.25,
    }
    kw.update(over)
    dtype = kw.pop("dtype", torch.float32)
    blocks = kw.pop("blocks", 6)
    args = (
        torch.randn(2, 1, 8, 16, dtype=dtype),
        torch.randn(blocks, 128, 2 * 16, dtype=dtype),
        torch.randn(blocks, 128, 2 * 16, dtype=dtype),
    )
    return args, kw


TABLE = torch.tensor([[0, 1, 5], [2, 3, 4]], dtype=torch.int32)
LENS = [200, 300]


def validations() -> int:
    return ops.validation_counts().get(OP, 0)


def test_same_geometry_validates_once_and_launches_every_time() -> None:
    lens, table = list(LENS), TABLE.clone()
    for _ in range(8):  # eight layers: new query and caches, the batch's own lists and table
        args, kw = decode_call(actual_seq_lengths_kv=lens, block_table=table)
        out, _ = ops.fused_infer_attention_score(*args, **kw)
        assert out.shape == (2, 1, 8, 16)
    assert validations() == 1
    assert ops.launch_counts()[OP] == 8


def _in_place_lengths(kw: dict[str, Any]) -> None:
    kw["actual_seq_lengths_kv"][1] = 301


def _in_place_table(kw: dict[str, Any]) -> None:
    kw["block_table"][0, 2] = 1


CHANGES: list[tuple[str, Callable[[dict[str, Any]], None] | dict[str, Any]]] = [
    ("cache shape", {"blocks": 7}),
    ("dtype", {"dtype": torch.bfloat16}),
    ("float scalar", {"scale": 0.5}),
    ("int scalar", {"inner_precise": 1}),
    ("new lengths list", {"actual_seq_lengths_kv": [200, 301]}),
    ("lengths list changed in place", _in_place_lengths),
    ("new table, same ids", {"block_table": TABLE.clone()}),
    ("table changed in place", _in_place_table),
    ("lengths as a tensor", {"actual_seq_lengths_kv": torch.tensor(LENS)}),
]


@pytest.mark.parametrize(("what", "change"), CHANGES, ids=[c[0] for c in CHANGES])
def test_each_kind_of_change_revalidates(
    what: str, change: Callable[[dict[str, Any]], None] | dict[str, Any]
) -> None:
    lens, table = list(LENS), TABLE.clone()
    args, kw = decode_call(actual_seq_lengths_kv=lens, block_table=table)
    ops.fused_infer_attention_score(*args, **kw)
    ops.fused_infer_attention_score(
        *decode_call(actual_seq_lengths_kv=lens, block_table=table)[0], **kw
    )
    assert validations() == 1
    if callable(change):
        change(kw)
    else:
        args, kw = decode_call(**{"actual_seq_lengths_kv": lens, "block_table": table, **change})
    ops.fused_infer_attention_score(*args, **kw)
    assert validations() == 2, what


BAD_SECOND_CALLS: list[tuple[str, dict[str, Any], str]] = [
    (
        "lengths past the table",
        {"actual_seq_lengths_kv": [200, 999]},
        r"actual_seq_lengths_kv=\[200, 999\] is not allowed: each length must be <= 384",
    ),
    (
        "float lengths equal to the accepted ints",
        {"actual_seq_lengths_kv": [200.0, 300.0]},
        r"actual_seq_lengths_kv=\[200.0, 300.0\] is not allowed: must be a list of ints",
    ),
    (
        "int64 table",
        {"block_table": TABLE.to(torch.int64)},
        r"block_table=.*int64.* is not allowed: must be a 2-D int32 tensor",
    ),
    ("bool head count", {"num_heads": True}, r"num_heads"),
]


@pytest.mark.parametrize(
    ("what", "change", "message"), BAD_SECOND_CALLS, ids=[c[0] for c in BAD_SECOND_CALLS]
)
def test_a_bad_call_after_an_accepted_one_is_still_refused(
    what: str, change: dict[str, Any], message: str
) -> None:
    ops.fused_infer_attention_score(*decode_call()[0], **decode_call()[1])
    args, kw = decode_call(**change)
    with pytest.raises(ValueError, match=message):
        ops.fused_infer_attention_score(*args, **kw)
    assert ops.launch_counts()[OP] == 1


def test_a_non_contiguous_query_of_the_same_shape_is_refused() -> None:
    args, kw = decode_call()
    ops.fused_infer_attention_score(*args, **kw)
    view = torch.randn(2, 1, 8, 32)[..., :16]  # same shape, other strides
    with pytest.raises(ValueError, match="non-contiguous"):
        ops.fused_infer_attention_score(view, *args[1:], **kw)


def test_an_in_place_update_to_a_bad_length_is_refused() -> None:
    lens = list(LENS)
    args, kw = decode_call(actual_seq_lengths_kv=lens)
    ops.fused_infer_attention_score(*args, **kw)
    lens[0] = 10_000  # graph mode rebinds the same list in place
    with pytest.raises(ValueError, match="each length must be <= 384"):
        ops.fused_infer_attention_score(*args, **kw)


def test_v2_is_memoised_too() -> None:
    for _ in range(3):
        args, kw = decode_call()
        kw["num_query_heads"] = kw.pop("num_heads")
        kw["softmax_scale"] = kw.pop("scale")
        kw["actual_seq_kvlen"] = kw.pop("actual_seq_lengths_kv")
        ops.fused_infer_attention_score_v2(*args, **kw)
    assert ops.validation_counts()[OP + "_v2"] == 1


def test_npu_dispatch_path_validates_once_and_refuses_a_bad_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The torch_npu branch of ``npu_op``, with a zero-cost kernel stand-in (test-only)."""
    launched: list[int] = []
    out = (torch.zeros(2, 1, 8, 16, dtype=torch.bfloat16), torch.zeros(1))

    def kernel(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        launched.append(1)
        return out

    fake = types.ModuleType("torch_npu")
    fake.npu_fused_infer_attention_score = kernel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_npu", fake)
    monkeypatch.setattr(_dispatch, "is_npu", lambda tensor: True)
    lens, table = list(LENS), TABLE.clone()
    for _ in range(5):
        args, kw = decode_call(actual_seq_lengths_kv=lens, block_table=table, dtype=torch.bfloat16)
        assert ops.fused_infer_attention_score(*args, **kw) is out
    assert (validations(), len(launched)) == (1, 5)
    lens[1] = 999
    with pytest.raises(ValueError, match="each length must be <= 384"):
        ops.fused_infer_attention_score(*args, **kw)
    assert (validations(), len(launched)) == (2, 5)


def test_an_argument_the_memo_cannot_key_is_validated_on_every_call() -> None:
    # A range is a legal length sequence (validated as a list of ints) but not a keyable one.
    for _ in range(3):
        args, kw = decode_call(actual_seq_lengths_kv=range(200, 301, 100))
        ops.fused_infer_attention_score(*args, **kw)
    assert validations() == 3
