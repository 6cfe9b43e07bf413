"""Hand-off through real sglang processes: a model or setting the FIA backend does not implement
sends attention to sglang's own ``AscendAttnBackend`` with one log line, instead of refusing.

- A sliding-window model through ``sglang.launch_server``: the tiny OLMo-3 (every layer a
  32-token window) starts, logs the hand-off once and serves. sglang's own backend runs on CPU
  through the test-only torch_npu stand-in (``tests/support/npu_standin``, put on ``PYTHONPATH``
  by ``side_by_side.path_env``), whose probe logs the backend of every forward. Prompts inside
  the window are answered as HF fp32 answers them; prompts past it are answered as HF answers
  the same weights *without* a window: sglang 0.5.23's own backend applies a window only for
  hybrid-SWA architectures (``upstream_findings.UPSTREAM_WINDOW_IGNORED_WITHOUT_HYBRID_SWA``),
  and the test fails when that changes.
- ``--kv-cache-dtype bf16`` under an fp32 model through ``sglang.Engine`` without the stand-in:
  the hand-off line, then one refusal: sglang's own backend imports ``torch_npu``
  (hardware_backend/npu/attention/ascend_backend.py:7-11), which this host lacks. No tokens for
  it: sglang's FIA path then mixes an fp32 query with a bf16 cache, which the stand-in refuses.
- A sliding-window Qwen2 through ``--model-impl transformers``, whose attention layers sit in a
  plain dict (``models/transformers.py:651``) that ``modules()`` never walks: the start-up
  decision sees them and hands off, and the server answers instead of dying at the first
  prefill.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from side_by_side import path_env, read_log
from testbed.engine import start_error, testbed_env
from testbed.models import build_olmo3, build_qwen2, encode_prompts, token_stream
from testbed.oracle import hf_greedy
from testbed.server import ServerProcess
from upstream_findings import UPSTREAM_WINDOW_IGNORED_WITHOUT_HYBRID_SWA

pytestmark = pytest.mark.engine

HANDOFF_LINE = "sglang-ascend-fia: attention runs on sglang's own AscendAttnBackend, not FIA: "
SGLANG_BACKEND = "sglang.srt.hardware_backend.npu.attention.ascend_backend.AscendAttnBackend"
NEW_TOKENS = 12
WINDOW = 32  # build_olmo3's sliding window


def _generate(base_url: str, prompts: list[list[int]]) -> list[list[int]]:
    body = {
        "input_ids": prompts,
        "sampling_params": {"temperature": 0, "max_new_tokens": NEW_TOKENS, "ignore_eos": True},
    }
    request = urllib.request.Request(
        base_url + "/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=240) as reply:
        return [answer["output_ids"] for answer in json.load(reply)]


def test_sliding_window_model_is_served_by_sglangs_own_backend(tmp_path: Path) -> None:
    model = build_olmo3()
    # The same weights with a window no test context reaches: HF's full-attention answers.
    unwindowed = build_olmo3(sliding_window=4096)
    inside = encode_prompts(model)[:2]
    assert all(len(p) + NEW_TOKENS <= WINDOW for p in inside)
    past = [token_stream(model, 60), token_stream(model, 150, 7)]  # one past a 128-token page
    probe = tmp_path / "probe.jsonl"
    with ServerProcess(
        model,
        tmp_path / "server.log",
        env=path_env("plugin", probe),  # the plugin active, ASCEND_USE_FIA=1
        attention_backend="ascend",
        page_size=128,
    ) as server:
        answers = _generate(server.base_url, inside + past)
        log = server.log_text()
    lines = [line for line in log.splitlines() if HANDOFF_LINE in line]
    assert len(lines) == 1, log[-3000:]
    assert "sliding-window attention is not implemented by the FIA backend" in lines[0]
    # ...and the line says that sglang's own backend will not apply the window either.
    assert "(sliding_window_size=31) is not applied there either" in lines[0], lines[0]
    forwards = read_log(probe)
    assert forwards, "the probe logged no forward"
    assert [f["error"] for f in forwards if f["error"]] == []
    assert {f["attn_backend"] for f in forwards} == {SGLANG_BACKEND}
    assert {f["mode"] for f in forwards} >= {"EXTEND", "DECODE"}
    # sglang's own backend attends through the stand-in's kernels, not the plugin's.
    assert all(f["standin_calls"] for f in forwards)

    assert answers[: len(inside)] == hf_greedy(model, inside, NEW_TOKENS)
    windowed = hf_greedy(model, past, NEW_TOKENS)
    full = hf_greedy(unwindowed, past, NEW_TOKENS)
    assert all(w[0] != f[0] for w, f in zip(windowed, full, strict=True)), "the window must cut"
    # Past the window sglang's own backend attends to every token (the upstream finding).
    assert answers[len(inside) :] == full, UPSTREAM_WINDOW_IGNORED_WITHOUT_HYBRID_SWA.cause


def test_bf16_kv_cache_with_an_fp32_model_goes_to_sglangs_own_backend() -> None:
    """``--kv-cache-dtype bf16`` under an fp32 model: FIA reads a KV cache in the model's dtype
    only, so the plugin hands off (an FP8 cache takes the same path; sglang has no CPU FP8 pool)."""
    model: Path = build_qwen2()
    error = start_error(
        model,
        env=testbed_env(ASCEND_USE_FIA="1"),
        attention_backend="ascend",
        page_size=128,
        kv_cache_dtype="bf16",
        log_level="warning",
    )
    assert error is not None, "sglang's own Ascend backend cannot start on CPU, yet it started"
    # The refusal is one line naming the hand-off and its reason (the error's tail may not
    # reach back to the hand-off warning before it).
    refusal = [line for line in error.splitlines() if "which needs torch_npu" in line]
    assert refusal, error[-3000:]
    assert "this model is handed to sglang's own AscendAttnBackend" in refusal[-1]
    assert "--kv-cache-dtype bfloat16 with a float32 model" in refusal[-1], refusal[-1]
    assert "cannot start" not in error, "the FIA backend refused instead of handing off"


def test_transformers_backend_window_layers_are_seen_and_handed_off(tmp_path: Path) -> None:
    """The user report: a windowed Qwen2 with ``--model-impl transformers`` got FIA, then the
    per-layer guard killed the scheduler at the first prefill. Now the decision reads the
    layers where that backend keeps them; the hand-off goes to sglang's own backend (through
    the stand-in here), and the server answers every request."""
    model = build_qwen2(use_sliding_window=True, sliding_window=63, max_window_layers=1)
    inside = encode_prompts(model)[:2]
    assert all(len(p) + NEW_TOKENS <= 63 for p in inside)
    probe = tmp_path / "probe.jsonl"
    with ServerProcess(
        model,
        tmp_path / "server.log",
        env=path_env("plugin", probe),
        attention_backend="ascend",
        page_size=128,
        model_impl="transformers",
        # Mixed chunks asked for: a 300-token prompt in 128-token chunks beside decoding rows.
        enable_mixed_chunk=True,
        chunked_prefill_size=128,
    ) as server:
        answers = _generate(server.base_url, [*inside, token_stream(model, 300)])
        log = server.log_text()
    lines = [line for line in log.splitlines() if HANDOFF_LINE in line]
    assert len(lines) == 1, log[-3000:]
    assert "sliding window 63 is not implemented by FIA" in lines[0], lines[0]
    # Not sglang's FIA mode (ASCEND_USE_FIA is 1 in this process): its ATB mode, as with 0.
    assert "(in its ATB mode (as with ASCEND_USE_FIA=0))" in lines[0], lines[0]
    assert "UnsupportedConfiguration" not in log
    mixed_off = [line for line in log.splitlines() if "--enable-mixed-chunk is turned off" in line]
    assert len(mixed_off) == 1, log[-3000:]
    assert [len(a) for a in answers] == [NEW_TOKENS] * 3
    # Inside the window every mode equals full attention: HF's tokens.
    assert answers[:2] == hf_greedy(model, inside, NEW_TOKENS)
    forwards = read_log(probe)
    assert forwards and {f["attn_backend"] for f in forwards} == {SGLANG_BACKEND}
    assert [f["error"] for f in forwards if f["error"]] == []
    assert {f["backend_use_fia"] for f in forwards} == {False}
    assert {f["use_fia_env"] for f in forwards} == {"1"}
    assert "MIXED" not in {f["mode"] for f in forwards}


def test_a_page_size_atb_mode_cannot_run_is_refused_at_start_up(tmp_path: Path) -> None:
    """The windowed OLMo-3 is handed off to sglang's ATB mode; at ``--page-size 24`` (not a
    multiple of 16, which ATB's PagedAttention needs) start-up is refused in one line, on the
    stand-in where the hand-off itself would build."""
    error = start_error(
        build_olmo3(),
        env=path_env("plugin", tmp_path / "probe.jsonl"),
        attention_backend="ascend",
        page_size=24,
        chunked_prefill_size=240,  # sglang wants a multiple of the page size
        log_level="warning",
    )
    assert error is not None, "started at a page size sglang's ATB mode cannot page"
    refusal = [line for line in error.splitlines() if "is not allowed by sglang's ATB mode" in line]
    assert refusal, error[-3000:]
    assert "--page-size=24" in refusal[-1] and "a multiple of 16" in refusal[-1], refusal[-1]
    assert "handed to sglang's own backend in its ATB mode" in refusal[-1]
