"""The FIA call contract: the valid baselines run, the validator binds positional and keyword
calls alike and refuses bad signatures as Python would, launches are counted, and running the
ops never imports torch_npu.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from fia_baselines import (
    dense_prefill,
    mla_band,
    mla_decode,
    paged_decode,
    run,
    tnd_dense,
    tnd_prefill,
    v2,
)

from sglang_ascend_fia import ops


@pytest.mark.parametrize(
    "builder", [paged_decode, tnd_prefill, mla_decode, mla_band, tnd_dense, dense_prefill]
)
def test_the_valid_baselines_run(builder: Callable[..., dict[str, object]]) -> None:
    out, _ = run(builder())
    assert torch.isfinite(out).all()


def test_validator_sees_positional_and_keyword_calls_alike() -> None:
    kw = paged_decode(block_size=24)
    q, k, v = kw.pop("query"), kw.pop("key"), kw.pop("value")
    with pytest.raises(ValueError, match="block_size=24"):
        ops.fused_infer_attention_score(q, k, v, **kw)
    with pytest.raises(ValueError, match="block_size=24"):
        ops.fused_infer_attention_score(query=q, key=k, value=v, **kw)


# ---------------------------------------------------------------------------------------------
# Launch counting and the import contract
# ---------------------------------------------------------------------------------------------


def test_one_call_counts_one_launch_and_reset_clears() -> None:
    ops.reset_launch_counts()
    run(paged_decode())
    assert ops.launch_counts() == {"fused_infer_attention_score": 1}
    v2()
    run(paged_decode())
    assert ops.launch_counts() == {
        "fused_infer_attention_score": 2,
        "fused_infer_attention_score_v2": 1,
    }
    ops.reset_launch_counts()
    assert ops.launch_counts() == {}


def test_importing_and_running_the_ops_never_imports_torch_npu() -> None:
    code = (
        "import sys, torch\n"
        "import sglang_ascend_fia.ops as ops\n"
        "q = torch.randn(1, 1, 2, 8); k = torch.randn(1, 4, 2, 8)\n"
        "ops.fused_infer_attention_score(q, k, k, num_heads=2, input_layout='BSND')\n"
        "ops.swiglu(torch.randn(2, 4))\n"
        "assert 'torch_npu' not in sys.modules, 'torch_npu was imported'\n"
        "print('clean')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (3, {"bogus": 1}, "unexpected keyword argument 'bogus'"),
        (3, {"query": None}, "multiple values for argument 'query'"),
        (2, {}, "missing a required argument: 'value'"),
    ],
    ids=["unknown", "twice", "missing"],
)
def test_bad_call_signatures_raise_pythons_type_errors(
    args: int, kwargs: dict[str, object], message: str
) -> None:
    """The validator's fast argument binding still refuses what Python would."""
    q = torch.randn(1, 1, 4, 16)
    for op in (ops.fused_infer_attention_score, ops.fused_infer_attention_score_v2):
        with pytest.raises(TypeError, match=message):
            op(*[q] * args, **kwargs)
