"""``op.prepare(**fixed)``: the per-batch arguments bound once, each launch passing only the
tensors that change (``ops.PreparedCall``). The first launch of a geometry validates fully; a
later launch with new tensors of that geometry only launches; anything else validates again or
is refused, with the op's own message. Results equal the plain op's.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
import torch

from sglang_ascend_fia import ops

# The torch_npu branch of npu_op is reached by patching the module attribute it calls: no public
# seam chooses the branch (a tensor's device does, and CPU tests have no NPU tensor).
from sglang_ascend_fia.ops import _dispatch

FIA = "fused_infer_attention_score"
WRITE = "scatter_pa_kv_cache"
TABLE = torch.tensor([[0, 1, 5], [2, 3, 4]], dtype=torch.int32)


pytestmark = pytest.mark.usefixtures("cold_counters")


def decode_fixed(**over: Any) -> dict[str, Any]:
    """A BSND paged decode's per-batch arguments."""
    return {
        "actual_seq_lengths_kv": [200, 300],
        "block_table": TABLE.clone(),
        "num_heads": 8,
        "num_key_value_heads": 2,
        "scale": 0.25,
        "input_layout": "BSND",
        "block_size": 128,
        **over,
    }


def layer_tensors(
    dtype: torch.dtype = torch.float32, blocks: int = 6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's query and caches: new tensors of the batch's geometry."""
    return (
        torch.randn(2, 1, 8, 16, dtype=dtype),
        torch.randn(blocks, 128, 2 * 16, dtype=dtype),
        torch.randn(blocks, 128, 2 * 16, dtype=dtype),
    )


def test_every_layer_launches_and_only_the_first_validates() -> None:
    fixed = decode_fixed()
    call = ops.fused_infer_attention_score.prepare(**fixed)
    for _ in range(6):  # six layers, each with its own query and caches
        tensors = layer_tensors()
        out, _ = call(*tensors)
        expected, _ = ops.fused_infer_attention_score(*tensors, **fixed)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # The plain calls above validate every time; the prepared call once.
    assert ops.validation_counts()[FIA] == 6 + 1
    assert ops.launch_counts()[FIA] == 12


def test_a_new_geometry_validates_again() -> None:
    call = ops.fused_infer_attention_score.prepare(**decode_fixed())
    call(*layer_tensors())
    call(*layer_tensors(blocks=7))
    call(*layer_tensors(dtype=torch.bfloat16))
    call(*layer_tensors(dtype=torch.bfloat16))
    assert ops.validation_counts()[FIA] == 3


def test_a_view_of_another_stride_is_refused_after_an_accepted_launch() -> None:
    call = ops.fused_infer_attention_score.prepare(**decode_fixed())
    query, key, value = layer_tensors()
    call(query, key, value)
    view = torch.randn(2, 1, 8, 32)[..., :16]  # the accepted shape, other strides
    with pytest.raises(ValueError, match="non-contiguous"):
        call(view, key, value)
    assert ops.launch_counts()[FIA] == 1


def test_bad_fixed_arguments_are_refused_at_every_launch() -> None:
    call = ops.fused_infer_attention_score.prepare(**decode_fixed(actual_seq_lengths_kv=[200, 999]))
    for _ in range(2):  # a refused launch is never remembered
        with pytest.raises(ValueError, match=r"each length must be <= 384"):
            call(*layer_tensors())
    assert ops.validation_counts()[FIA] == 2
    assert ops.launch_counts().get(FIA, 0) == 0


def test_an_index_tensor_cannot_be_a_changing_tensor() -> None:
    # Validators read index values (slot and length tensors); those are bound with prepare().
    call = ops.scatter_pa_kv_cache.prepare(cache_mode="Norm")
    key = torch.randn(3, 2, 16)
    cache = torch.zeros(4, 128, 2, 16)
    with pytest.raises(TypeError, match=r"torch.int64 tensor \(changing tensor #4\)"):
        call(key, key.clone(), cache, cache.clone(), torch.tensor([0, 1, 2]))


def test_keyword_tensors_are_part_of_the_geometry() -> None:
    """MLA decode passes ``query_rope``/``key_rope`` per layer by keyword."""
    fixed = {
        "actual_seq_lengths_kv": [70, 129],
        "block_table": torch.tensor([[0, 2], [1, 3]], dtype=torch.int32),
        "num_heads": 16,
        "num_key_value_heads": 1,
        "scale": 0.1,
        "input_layout": "BSND",
        "sparse_mode": 0,
        "block_size": 128,
    }
    call = ops.fused_infer_attention_score.prepare(**fixed)

    def launch(rope_dim: int) -> torch.Tensor:
        latent = torch.randn(4, 128, 512)
        query = torch.randn(2, 1, 16, 512)
        rope = (torch.randn(2, 1, 16, rope_dim), torch.randn(4, 128, rope_dim))
        out, _ = call(query, latent, latent, query_rope=rope[0], key_rope=rope[1])
        expected, _ = ops.fused_infer_attention_score(
            query, latent, latent, query_rope=rope[0], key_rope=rope[1], **fixed
        )
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        return out

    launch(64)
    launch(64)
    assert ops.validation_counts()[FIA] == 1 + 2  # the prepared call's one, each plain call's
    with pytest.raises(ValueError, match="rope"):
        launch(32)  # another rope dim: validated, and FIA MLA takes only 64


def test_the_kv_write_writes_what_the_plain_op_writes() -> None:
    slots = torch.tensor([5, 130, 7, 300])
    call = ops.scatter_pa_kv_cache.prepare(slot_mapping=slots, cache_mode="Norm")
    for layer in range(3):
        key, value = torch.randn(4, 2, 16), torch.randn(4, 2, 8)
        caches = (torch.zeros(3, 128, 2, 16), torch.zeros(3, 128, 2, 8))
        call(key, value, *caches)
        flat_k, flat_v = caches[0].view(-1, 2, 16), caches[1].view(-1, 2, 8)
        torch.testing.assert_close(flat_k[slots], key, rtol=0, atol=0)
        torch.testing.assert_close(flat_v[slots], value, rtol=0, atol=0)
        assert int(flat_k.count_nonzero()) == key.count_nonzero(), layer
    assert ops.validation_counts()[WRITE] == 1
    assert ops.launch_counts()[WRITE] == 3


def test_on_an_npu_the_kernel_gets_the_fixed_and_changing_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The torch_npu branch, with a kernel stand-in that records its arguments (test-only)."""
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    out = (torch.zeros(2, 1, 8, 16, dtype=torch.bfloat16), torch.zeros(1))

    def kernel(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append((args, kwargs))
        return out

    fake = types.ModuleType("torch_npu")
    fake.npu_fused_infer_attention_score = kernel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_npu", fake)
    monkeypatch.setattr(_dispatch, "is_npu", lambda tensor: True)
    fixed = decode_fixed()
    call = ops.fused_infer_attention_score.prepare(**fixed)
    layers = [layer_tensors(dtype=torch.bfloat16) for _ in range(4)]
    for tensors in layers:
        assert call(*tensors) is out
    assert ops.validation_counts()[FIA] == 1
    for (args, kwargs), tensors in zip(seen, layers, strict=True):
        assert all(a is t for a, t in zip(args, tensors, strict=True))
        # The very objects bound (graph mode rebinds the lengths list in place).
        assert kwargs.keys() == fixed.keys()
        assert all(kwargs[name] is value for name, value in fixed.items())
