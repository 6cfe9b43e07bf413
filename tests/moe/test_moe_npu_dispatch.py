"""sglang's ``DeepseekV2MoE`` on sglang's own NPU dispatch (``forward_npu``), with the stand-in.

One child process (``testbed.moe_npu_run``; the torch_npu stand-in must stay out of this
process) builds the layers as on an Ascend NPU: ``TopK`` and ``UnquantizedFusedMoEMethod``
resolve ``forward_npu``, ``FusedMoE`` builds an ``AscendTPDispatcher`` and the ``ASCEND`` runner,
and the stand-in serves the torch_npu kernels they call by handing them to ``ops``. Against the
float64 per-token oracle (``testbed.moe_oracle``):

- plugin on: every case (the DeepSeek ones and a Qwen2-style plain softmax) equals the oracle
  (fp32 and bf16), and the whole routed-expert chain runs through the plugin's ``ops`` calls,
  not torch_npu: the stand-in sees only the shared experts' ``npu_swiglu`` (stock
  ``SiluAndMul.forward_npu``);
- plugin off (stock): sglang's own NPU kernels run, equal to the oracle except the two routings
  in ``upstream_findings.ROUTING_FINDINGS``, which must depart (so the list stays true).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from side_by_side import STANDIN_DIR
from testbed.moe_layers import DEAD
from testbed.moe_npu_run import CASES, QWEN2
from upstream_findings import ROUTING_FINDINGS

BATCHES = ("1", "64")
# The chain of the ascend_tp dispatcher and the ASCEND runner, after fused_topk_npu's gating
# kernel: moe_gating_top_k for DeepSeek (its TopK is built grouped, n_group 1 for V2-Lite),
# moe_gating_top_k_softmax (+ sgl_kernel_npu's l1_norm in stock) for plain softmax.
CHAIN = {"moe_init_routing_v2": 1, "grouped_matmul": 2, "swiglu": 1, "moe_finalize_routing": 1}
L1_NORM = "sgl_kernel_npu.norm.l1_norm.l1_norm"
NPU_FORWARD = {"topk": "forward_npu", "experts": "forward_npu", "dispatcher": "AscendTPDispatcher"}
FINDING_CASES = {finding.case for finding in ROUTING_FINDINGS}


def _gating(case: str) -> str:
    return "moe_gating_top_k_softmax" if case == QWEN2 else "moe_gating_top_k"


def _shared_experts(case: str) -> dict[str, int]:
    # DeepseekV2MLP's SiluAndMul.forward_npu (stock in both states) calls torch_npu.npu_swiglu.
    return {} if case == QWEN2 else {"npu_swiglu": 1}


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, bool, str, bool], dict[str, Any]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(STANDIN_DIR), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "testbed.moe_npu_run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout)
    return {(r["case"], r["plugin"], r["dtype"], r["bound"]): r for r in results}


def _check_npu_path_and_dead_experts(run: dict[str, Any]) -> None:
    assert run["forward"] == NPU_FORWARD, run["forward"]
    for batch in BATCHES:
        tokens = run["batches"][batch]["tokens_per_expert"]
        assert all(tokens[e] == 0 for e in DEAD), tokens
        assert sum(n > 0 for n in tokens) >= (4 if batch == "1" else 6), tokens


def _ops_calls_of_standin(standin: dict[str, int]) -> Counter[str]:
    # The stand-in hands each torch_npu kernel to the ops op of the same name (npu_ dropped).
    return Counter(
        {name.removeprefix("npu_"): n for name, n in standin.items() if name.startswith("npu_")}
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES)
def test_plugin_on_npu_dispatch_equals_oracle_through_ops(
    runs: dict[tuple[str, bool, str, bool], dict[str, Any]], case: str, dtype: str
) -> None:
    run = runs[(case, True, dtype, True)]
    _check_npu_path_and_dead_experts(run)
    for batch in BATCHES:
        result = run["batches"][batch]
        assert result["departing_rows"] == 0, (batch, result["max_error"])
        assert result["out_dtype"] == f"torch.{dtype}"
        # No routed-expert kernel reached torch_npu; the plugin's own ops calls are the chain.
        assert result["standin_calls"] == _shared_experts(case), result["standin_calls"]
        plugin_ops = Counter(result["launches"]) - _ops_calls_of_standin(result["standin_calls"])
        assert dict(plugin_ops) == {_gating(case): 1, **CHAIN}, result["launches"]


@pytest.mark.parametrize("case", CASES)
def test_stock_npu_dispatch_departs_only_where_a_finding_says(
    runs: dict[tuple[str, bool, str, bool], dict[str, Any]], case: str
) -> None:
    run = runs[(case, False, "bfloat16", True)]
    _check_npu_path_and_dead_experts(run)
    kernels = Counter({f"npu_{name}": n for name, n in {_gating(case): 1, **CHAIN}.items()})
    kernels.update(_shared_experts(case))
    if case == QWEN2:
        kernels[L1_NORM] = 1  # fused_topk_npu's renormalisation (topk.py:61-68)
    for batch in BATCHES:
        # sglang's own NPU kernels ran (through the stand-in), the plugin made no ops call.
        result = run["batches"][batch]
        assert result["standin_calls"] == dict(kernels), result["standin_calls"]
        assert _ops_calls_of_standin(result["standin_calls"]) == Counter(result["launches"])
    departing = run["batches"]["64"]["departing_rows"]
    if case in FINDING_CASES:
        assert departing > 0, f"{case}: stock now equals the oracle; update upstream_findings"
    else:
        assert departing == 0 and run["batches"]["1"]["departing_rows"] == 0, run["batches"]


def test_stock_grouped_softmax_without_token_bound_takes_select_experts(
    runs: dict[tuple[str, bool, str, bool], dict[str, Any]],
) -> None:
    """Without a num_token_non_padded bound, fused_topk_npu hands DeepSeek-V2's grouped softmax
    to select_experts (no gating kernel), which routes right: the finding needs the bound."""
    run = runs[("v2-grouped-softmax", False, "bfloat16", False)]
    _check_npu_path_and_dead_experts(run)
    for batch in BATCHES:
        result = run["batches"][batch]
        assert result["departing_rows"] == 0, result["max_error"]
        assert "npu_moe_gating_top_k" not in result["standin_calls"], result["standin_calls"]
