"""The plugin and sglang 0.5.23's in-tree Ascend backend through the same ``sglang.Engine``
workloads, against HF fp32, at head dim 16 (outside upstream's TND set) and 128 (inside it).

Paths (``side_by_side``): ``plugin``; ``upstream-fia`` (plugin off through ``SGLANG_PLUGINS``,
``ASCEND_USE_FIA=1``); ``upstream`` (plugin off, ``ASCEND_USE_FIA`` unset). Upstream runs on the
test-only torch_npu stand-in; every path runs with the NPU dispatch of mixed batches, so MIXED
batches reach ``forward_mixed`` as on an NPU. Workloads: plain prompts, radix prefix hits, a
prompt longer than ``chunked_prefill_size``, and a mixed batch (``e2e.fia_common.workloads``).

A path's tokens must equal HF's for every workload, unless the workload failed with an error
that a documented upstream finding (``upstream.findings``) explains.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from side_by_side import PATHS, PathRun, attention_calls_per_layer, run_path, served_by
from testbed.models import build_qwen2
from testbed.oracle import hf_greedy

from e2e.fia_common import ENGINE_ARGS, NEW_TOKENS, workloads
from upstream.findings import FINDINGS, explains

pytestmark = pytest.mark.engine

HEAD_DIMS = (16, 128)
UPSTREAM_BACKEND = "sglang.srt.hardware_backend.npu.attention.ascend_backend.AscendAttnBackend"
PLUGIN_BACKEND = "sglang_ascend_fia.attention.backend.AscendFIABackend"
NPU_POOL = "sglang.srt.hardware_backend.npu.memory_pool_npu.NPUMHATokenToKVPool"


def _model(head_dim: int) -> Path:
    if head_dim == 16:
        return build_qwen2()  # hidden 64, 4 q heads, 2 kv heads
    # sglang derives Qwen2's head dim as hidden // heads on CPU (see test_fia_engine_gqa128).
    return build_qwen2(
        hidden_size=2 * head_dim, num_attention_heads=2, num_key_value_heads=1
    )


@pytest.fixture(scope="module", params=HEAD_DIMS, ids=[f"d{d}" for d in HEAD_DIMS])
def side_by_side(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, PathRun], dict[str, list[list[int]]]]:
    model = _model(request.param)
    prompts = workloads(model)
    tmp = tmp_path_factory.mktemp(f"side-by-side-d{request.param}")
    runs = {
        path: run_path(path, model, prompts, NEW_TOKENS, tmp / f"{path}.jsonl", **ENGINE_ARGS)
        for path in PATHS
    }
    hf = {name: hf_greedy(model, batch, NEW_TOKENS) for name, batch in prompts.items()}
    return runs, hf


def test_plugin_is_off_inside_upstream_schedulers(side_by_side) -> None:  # type: ignore[no-untyped-def]
    runs, _ = side_by_side
    for path in ("upstream-fia", "upstream"):
        assert runs[path].forwards, f"{path}: the probe logged no forward"
        assert served_by(runs[path]) == {(UPSTREAM_BACKEND, NPU_POOL, False)}, path
        assert {f["use_fia_env"] for f in runs[path].forwards} == (
            {"1"} if path == "upstream-fia" else {None}
        )
    assert served_by(runs["plugin"]) == {(PLUGIN_BACKEND, NPU_POOL, True)}


@pytest.mark.parametrize("path", PATHS)
def test_tokens_match_hf_or_a_documented_finding(side_by_side, path: str) -> None:  # type: ignore[no-untyped-def]
    runs, hf = side_by_side
    run = runs[path]
    assert run.start_error is None, run.start_error
    for workload, expected in hf.items():
        if workload in run.errors:
            finding = explains(path, run.errors[workload])
            assert finding is not None, f"{path}/{workload} failed:\n{run.errors[workload][-3000:]}"
            continue
        assert run.tokens[workload] == expected, f"{path}/{workload}: tokens differ from HF"


def test_every_documented_finding_still_happens(side_by_side) -> None:  # type: ignore[no-untyped-def]
    runs, _ = side_by_side
    for finding in FINDINGS:
        failed = [f for f in runs[finding.path].forwards if f["error"]]
        assert failed, f"{finding.path}: no forward failed; finding no longer holds: {finding}"
        for forward in failed:
            assert forward["mode"] == finding.mode, forward
            assert finding.error in forward["error"], forward["error"]


def test_mixed_batches_took_the_npu_dispatch(side_by_side) -> None:  # type: ignore[no-untyped-def]
    runs, _ = side_by_side
    for path in PATHS:
        modes = {f["mode"] for f in runs[path].forwards}
        assert "MIXED" in modes, f"{path}: no MIXED forward reached the backend ({modes})"


def test_attention_launches_per_layer_in_the_engine(side_by_side, request) -> None:  # type: ignore[no-untyped-def]
    runs, _ = side_by_side
    # The plugin: one attention kernel per layer in every forward of every workload.
    plugin = {attention_calls_per_layer(f) for f in runs["plugin"].forwards}
    assert plugin == {1.0}, plugin
    upstream = runs["upstream-fia"].forwards
    per_request_loop = any(
        attention_calls_per_layer(f) == f["batch_size"] > 1
        for f in upstream
        if f["mode"] == "EXTEND" and not f["error"]
    )
    # Outside its TND set (16), upstream's FIA prefill loops over requests (ascend_backend.py:1931).
    assert per_request_loop == ("d16" in request.node.callspec.id)
