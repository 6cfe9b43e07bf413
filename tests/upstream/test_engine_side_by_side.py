"""The plugin and sglang 0.5.23's in-tree Ascend backend through the same ``sglang.Engine``
workloads, against HF fp32, at head dim 16 (outside upstream's TND set) and 128 (inside it).

Paths (``side_by_side``): ``plugin``; ``upstream-fia`` (plugin off through ``SGLANG_PLUGINS``,
``ASCEND_USE_FIA=1``); ``upstream`` (plugin off, ``ASCEND_USE_FIA`` unset). Upstream runs on the
test-only torch_npu stand-in; every path runs with the NPU dispatch of mixed batches, so MIXED
batches reach ``forward_mixed`` as on an NPU. Workloads: plain prompts, radix prefix hits, a
prompt longer than ``chunked_prefill_size``, and a mixed batch (``e2e.fia_common.workloads``).

``--enable-mixed-chunk`` is on for the plugin and for upstream's ATB path. Upstream's FIA path
runs twice: without mixed chunks over every workload, and with them (``upstream-fia+mixed``) on
a radix seed and the mixed batch, where it hits a documented finding. A path's tokens must equal
HF's for every workload, unless the workload failed with an error that a documented upstream
finding (``upstream_findings``) explains.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.fia_common import ENGINE_ARGS, NEW_TOKENS, workloads
from side_by_side import PATHS, PathRun, attention_calls_per_layer, run_path, served_by
from testbed.models import build_qwen2
from testbed.oracle import hf_greedy
from upstream_findings import FINDINGS, explains

pytestmark = pytest.mark.engine

HEAD_DIMS = (16, 128)
ALL_WORKLOADS = ("parity", "prefix-seed", "prefix-hits", "chunked", "mixed")
# Head dim 128 is the larger model: the chunked prompt runs at 16 only, to keep the suite short.
WORKLOADS = {16: ALL_WORKLOADS, 128: ("parity", "prefix-seed", "prefix-hits", "mixed")}
UPSTREAM_BACKEND = "sglang.srt.hardware_backend.npu.attention.ascend_backend.AscendAttnBackend"
PLUGIN_BACKEND = "sglang_ascend_fia.attention.backend.AscendFIABackend"
NPU_POOL = "sglang.srt.hardware_backend.npu.memory_pool_npu.NPUMHATokenToKVPool"


def _head_dim(request: pytest.FixtureRequest) -> int:
    return int(request.node.callspec.params["side_by_side"])


def _model(head_dim: int) -> Path:
    if head_dim == 16:
        return build_qwen2()  # hidden 64, 4 q heads, 2 kv heads
    # sglang derives Qwen2's head dim as hidden // heads on CPU (see test_fia_engine_gqa128).
    return build_qwen2(hidden_size=2 * head_dim, num_attention_heads=2, num_key_value_heads=1)


@pytest.fixture(scope="module", params=HEAD_DIMS, ids=[f"d{d}" for d in HEAD_DIMS])
def side_by_side(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, PathRun], dict[str, list[list[int]]]]:
    model = _model(request.param)
    prompts = {n: b for n, b in workloads(model).items() if n in WORKLOADS[request.param]}
    tmp = tmp_path_factory.mktemp(f"side-by-side-d{request.param}")
    mixed_on = {**ENGINE_ARGS, "enable_mixed_chunk": True}
    runs = {
        "plugin": run_path("plugin", model, prompts, NEW_TOKENS, tmp / "p.jsonl", **mixed_on),
        "upstream": run_path("upstream", model, prompts, NEW_TOKENS, tmp / "u.jsonl", **mixed_on),
        "upstream-fia": run_path(
            "upstream-fia",
            model,
            prompts,
            NEW_TOKENS,
            tmp / "uf.jsonl",
            **{**ENGINE_ARGS, "enable_mixed_chunk": False},
        ),
        "upstream-fia+mixed": run_path(
            "upstream-fia",
            model,
            {name: prompts[name] for name in ("prefix-seed", "mixed")},
            NEW_TOKENS,
            tmp / "ufm.jsonl",
            **mixed_on,
        ),
    }
    hf = {name: hf_greedy(model, batch, NEW_TOKENS) for name, batch in prompts.items()}
    return runs, hf


def test_plugin_is_off_inside_upstream_schedulers(side_by_side) -> None:  # type: ignore[no-untyped-def]
    runs, _ = side_by_side
    for path in ("upstream-fia", "upstream", "upstream-fia+mixed"):
        assert runs[path].forwards, f"{path}: the probe logged no forward"
        assert served_by(runs[path]) == {(UPSTREAM_BACKEND, NPU_POOL, False)}, path
        assert {f["use_fia_env"] for f in runs[path].forwards} == (
            {None} if path == "upstream" else {"1"}
        )
    assert served_by(runs["plugin"]) == {(PLUGIN_BACKEND, NPU_POOL, True)}


@pytest.mark.parametrize("run_name", [*PATHS, "upstream-fia+mixed"])
def test_tokens_match_hf_or_a_documented_finding(side_by_side, run_name: str, request) -> None:  # type: ignore[no-untyped-def]
    runs, hf = side_by_side
    run = runs[run_name]
    assert run.start_error is None, run.start_error
    for workload, expected in hf.items():
        if workload not in run.tokens and workload not in run.errors:
            continue  # not part of this run
        if workload in run.errors:
            finding = explains(run_name, run.errors[workload], _head_dim(request))
            assert finding is not None, f"{run_name}/{workload}:\n{run.errors[workload][-3000:]}"
            continue
        assert run.tokens[workload] == expected, f"{run_name}/{workload}: tokens differ from HF"


def test_every_documented_finding_still_happens(side_by_side, request) -> None:  # type: ignore[no-untyped-def]
    runs, _ = side_by_side
    for finding in FINDINGS:
        if _head_dim(request) not in finding.head_dims:
            continue
        failed = [f for f in runs[finding.run].forwards if f["error"]]
        assert failed, f"{finding.run}: no forward failed; finding no longer holds: {finding}"
        for forward in failed:
            assert forward["mode"] == finding.mode, forward
            assert finding.error in forward["error"], forward["error"]


def test_mixed_batches_took_the_npu_dispatch(side_by_side) -> None:  # type: ignore[no-untyped-def]
    runs, _ = side_by_side
    for run_name in ("plugin", "upstream", "upstream-fia+mixed"):
        modes = {f["mode"] for f in runs[run_name].forwards}
        assert "MIXED" in modes, f"{run_name}: no MIXED forward reached the backend ({modes})"
    assert "MIXED" not in {f["mode"] for f in runs["upstream-fia"].forwards}


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
