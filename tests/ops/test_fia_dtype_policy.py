"""The dtype policy: float32 is a CPU-reference extension of FIA, refused on an NPU tensor."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from fia_baselines import paged_decode

from sglang_ascend_fia import ops

# ---------------------------------------------------------------------------------------------
# dtype policy: float32 is a CPU-reference extension, refused on an NPU tensor
# ---------------------------------------------------------------------------------------------


_NPU_PROBE = """
import json, torch
torch.utils.rename_privateuse1_backend("npu")


class FakeNPU(torch.Tensor):
    # Metadata only (shape, dtype, device "npu"): the validators read no data.
    @staticmethod
    def __new__(cls, *shape, dtype=torch.float32):
        return torch.Tensor._make_wrapper_subclass(cls, shape, dtype=dtype, device="npu")

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"FakeNPU holds no data ({func})")


from sglang_ascend_fia import ops

table = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
out = {}


def attempt(name, fn):
    try:
        fn()
        out[name] = "accepted"
    except ValueError as exc:
        out[name] = str(exc)


def fia(dtype):
    q, k = FakeNPU(2, 1, 4, 16, dtype=dtype), FakeNPU(4, 128, 32, dtype=dtype)
    ops.fused_infer_attention_score.validate(
        q, k, k, num_heads=4, num_key_value_heads=2, input_layout="BSND", block_table=table,
        block_size=128, actual_seq_lengths_kv=[10, 140])


def fia_v2(dtype):
    q, k = FakeNPU(2, 1, 4, 16, dtype=dtype), FakeNPU(4, 128, 32, dtype=dtype)
    ops.fused_infer_attention_score_v2.validate(
        q, k, k, num_query_heads=4, num_key_value_heads=2, input_layout="BSND",
        block_table=table, block_size=128, actual_seq_kvlen=[10, 140])


for dtype in (torch.float32, torch.bfloat16, torch.float16):
    for name, fn in (("fia", fia), ("fia_v2", fia_v2)):
        attempt(f"{name} {dtype}", lambda: fn(dtype))
print(json.dumps(out))
"""


def test_float32_is_refused_on_an_npu_tensor_only() -> None:
    """End to end with a real "npu" device type (a renamed PrivateUse1 backend, in a child)."""
    done = subprocess.run(
        [sys.executable, "-c", _NPU_PROBE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("fia", "fia_v2"):
        assert got[f"{name} torch.bfloat16"] == "accepted"
        assert got[f"{name} torch.float16"] == "accepted"
        refusal = got[f"{name} torch.float32"]
        assert "=torch.float32 is not allowed: on an NPU tensor" in refusal, refusal
        assert "float32 is accepted off the NPU only" in refusal
    assert got["fia torch.float32"].startswith("fused_infer_attention_score: query=")
    # Off the NPU the same float32 calls pass (the CPU test bed runs in fp32).
    ops.fused_infer_attention_score.validate(**paged_decode())


class _NpuLooking(torch.Tensor):
    """A CPU tensor whose ``device.type`` reads "npu" (the validators' only device check)."""

    @property
    def device(self) -> SimpleNamespace:  # type: ignore[override]
        return SimpleNamespace(type="npu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype_policy_reads_the_device_type(dtype: torch.dtype) -> None:
    """The same policy in this process: fp32 refused when ``device.type == "npu"``."""
    kw = paged_decode()
    for name in ("query", "key", "value"):
        kw[name] = kw[name].to(dtype).as_subclass(_NpuLooking)  # type: ignore[attr-defined]
    args = dict(kw)
    q, k, v = args.pop("query"), args.pop("key"), args.pop("value")
    if dtype == torch.bfloat16:
        ops.fused_infer_attention_score.validate(q, k, v, **args)
        return
    with pytest.raises(ValueError, match=r"query=torch.float32 is not allowed: on an NPU tensor"):
        ops.fused_infer_attention_score.validate(q, k, v, **args)
