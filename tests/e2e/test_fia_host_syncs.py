"""No host sync per layer, through sglang's real ``ModelRunner`` and tiny Qwen2 models.

``fia_runner``'s ``syncs`` scenario runs one extend and two decode forwards with the plugin's FIA
backend and records every ``Tensor.tolist/.item/.cpu`` call made during each forward (outside the
ops references, which stand in for device kernels). A model with three times the layers must
make exactly the same calls: host work is per batch (``init_forward_metadata``), never per layer.
"""

from __future__ import annotations

from typing import Any

import fia_runner
import pytest
from testbed.engine import testbed_env
from testbed.models import build_qwen2

pytestmark = pytest.mark.engine

LAYERS = (2, 6)


@pytest.fixture(scope="module")
def runs() -> dict[int, dict[str, Any]]:
    results = {}
    for layers in LAYERS:
        model = build_qwen2(num_hidden_layers=layers)
        results[layers] = fia_runner.run(
            {"scenario": "syncs", "model_path": str(model), "attention_backend": "ascend"},
            env=testbed_env(ASCEND_USE_FIA="1"),
        )
    return results


def test_the_plugin_backend_ran(runs: dict[int, dict[str, Any]]) -> None:
    for layers, result in runs.items():
        assert result["backend"] == "AscendFIABackend"
        assert result["num_layers"] == layers
        modes = [f["mode"] for f in result["forwards"]]
        assert modes == ["EXTEND", "DECODE", "DECODE"], modes
        for forward in result["forwards"]:
            assert forward["launches"]["fused_infer_attention_score"] == layers, forward


def test_host_syncs_do_not_grow_with_layers(runs: dict[int, dict[str, Any]]) -> None:
    few, many = (runs[n]["forwards"] for n in LAYERS)
    for small, large in zip(few, many, strict=True):
        assert sorted(large["syncs"]) == sorted(small["syncs"]), (small["mode"], large["syncs"])
    # The plugin's own share is one call per forward, whatever the depth: the per-batch
    # seq_lens_cpu.tolist() in init_forward_metadata (fia_backend/base.py, shared by both FIA
    # backends), which reads sglang's host mirror.
    plugin_sites = ("@backend.py:", "@base.py:")
    for forward in many:
        ours = [s for s in forward["syncs"] if any(site in s for site in plugin_sites)]
        assert len(ours) == 1, forward["syncs"]
