"""A model the plugin hands off, side by side with sglang's own modes on the same mixed batches.

The model: a tiny Qwen2 served through ``--model-impl transformers`` with a sliding window of
4096 on every layer. That backend gives each ``RadixAttention`` the window
(``models/transformers.py``), so the plugin hands the model to sglang's own backend
(``attention.handoff``: a layer with a sliding window); no prompt here reaches the window, so
windowed attention is full attention and HF fp32's tokens are the oracle for every path.

With ``--enable-mixed-chunk`` on, each path runs the radix seed and the mixed batch of
``e2e.fia_common.workloads`` (a fresh chunked prompt beside radix hits and decoding rows):

- ``plugin`` (``ASCEND_USE_FIA=1``, the plugin active): the hand-off runs sglang's ATB mode and
  turns mixed chunks off for the model, said once; every workload equals HF;
- ``upstream-fia+mixed`` (plugin off, ``ASCEND_USE_FIA=1``): what the hand-off ran before the
  plugin scoped sglang's own reads of the toggle; the mixed batch fails at
  ``ascend_backend.py:3517`` (``UPSTREAM_FIA_MIXED_BLOCK_SIZE``);
- ``upstream`` (plugin off, toggle unset): sglang's ATB mode with mixed chunks; at this head dim
  (16) its ``forward_mixed`` fails too (``UPSTREAM_MIXED_TND_OUTSIDE_ITS_SET``), which is why
  the ATB mode alone is not enough and the hand-off keeps mixed batches from forming.
"""

from __future__ import annotations

import pytest
from e2e.fia_common import ENGINE_ARGS, NEW_TOKENS, workloads
from side_by_side import PathRun, run_path
from testbed.models import build_qwen2
from testbed.oracle import hf_greedy
from upstream_findings import (
    UPSTREAM_FIA_MIXED_BLOCK_SIZE,
    UPSTREAM_MIXED_TND_OUTSIDE_ITS_SET,
    explains,
)

pytestmark = pytest.mark.engine

HEAD_DIM = 16  # build_qwen2's: hidden 64 over 4 heads
WINDOW = 4096  # past every prompt here: windowed attention equals full attention
UPSTREAM_BACKEND = "sglang.srt.hardware_backend.npu.attention.ascend_backend.AscendAttnBackend"


@pytest.fixture(scope="module")
def handed_off(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, PathRun], dict[str, list[list[int]]]]:
    model = build_qwen2(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=0)
    prompts = {n: b for n, b in workloads(model).items() if n in ("prefix-seed", "mixed")}
    assert max(len(p) for batch in prompts.values() for p in batch) + NEW_TOKENS < WINDOW
    tmp = tmp_path_factory.mktemp("handoff-side-by-side")
    args = {**ENGINE_ARGS, "enable_mixed_chunk": True, "model_impl": "transformers"}
    runs = {
        "plugin": run_path("plugin", model, prompts, NEW_TOKENS, tmp / "p.jsonl", **args),
        "upstream-fia+mixed": run_path(
            "upstream-fia", model, prompts, NEW_TOKENS, tmp / "uf.jsonl", **args
        ),
        "upstream": run_path("upstream", model, prompts, NEW_TOKENS, tmp / "u.jsonl", **args),
    }
    hf = {name: hf_greedy(model, batch, NEW_TOKENS) for name, batch in prompts.items()}
    return runs, hf


def test_the_handed_off_model_serves_the_mixed_workload_as_hf(handed_off) -> None:  # type: ignore[no-untyped-def]
    runs, hf = handed_off
    plugin = runs["plugin"]
    assert plugin.start_error is None and not plugin.errors, plugin.errors or plugin.start_error
    assert plugin.tokens == hf
    assert plugin.forwards, "the probe logged no forward"
    # sglang's own backend served it, in its ATB mode, with the plugin loaded in the scheduler.
    assert {f["attn_backend"] for f in plugin.forwards} == {UPSTREAM_BACKEND}
    assert {f["backend_use_fia"] for f in plugin.forwards} == {False}
    assert {f["use_fia_env"] for f in plugin.forwards} == {"1"}
    assert {f["plugin_imported"] for f in plugin.forwards} == {True}
    # No mixed batch was formed for it, the batches it would have crashed on.
    assert "MIXED" not in {f["mode"] for f in plugin.forwards}
    assert {"EXTEND", "DECODE"} <= {f["mode"] for f in plugin.forwards}


def test_before_the_fix_the_same_mixed_batch_crashed_in_both_sglang_modes(handed_off) -> None:  # type: ignore[no-untyped-def]
    runs, hf = handed_off
    for name, finding in (
        ("upstream-fia+mixed", UPSTREAM_FIA_MIXED_BLOCK_SIZE),
        ("upstream", UPSTREAM_MIXED_TND_OUTSIDE_ITS_SET),
    ):
        run = runs[name]
        assert run.start_error is None, run.start_error
        assert run.tokens["prefix-seed"] == hf["prefix-seed"], name
        assert "mixed" in run.errors, f"{name}: the mixed batch no longer fails: {run.tokens}"
        assert explains(name, run.errors["mixed"], HEAD_DIM) is finding, run.errors["mixed"][-2000:]
        assert "MIXED" in {f["mode"] for f in run.forwards if f["error"]}
        assert {f["plugin_imported"] for f in run.forwards} == {False}
