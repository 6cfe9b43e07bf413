"""The FIA backend under serving loads sglang runs every day, through a real ``sglang.Engine``.

- Head dims 64 (Qwen2.5-0.5B, Llama-3.2-1B: prefill as one padded BSND call per layer) and 256
  (one TND call), tokens equal to HF fp32 (head dim 128 is ``test_fia_engine_gqa128``).
- Shared radix pages: twelve requests decode in one batch on the same two prefix pages, in a
  KV pool smaller than the sum of their pages (which the validator used to refuse, killing the
  scheduler).

sglang 0.5.23 on CPU derives Qwen2's head dim as ``hidden_size // heads`` (see
``test_fia_engine_gqa128``), so the hidden size sets it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed.engine import EngineProcess, testbed_env
from testbed.models import build_qwen2, encode_prompts, token_stream
from testbed.oracle import hf_greedy

from e2e.fia_common import NEW_TOKENS, fia_launches_per_layer, read_launch_log

pytestmark = pytest.mark.engine

PAGE = 128
SHARED_PAGES = 2
SHARERS = 12
POOL_TOKENS = 20 * PAGE  # 20 pages: the sharers' pages sum to 36


def _serve(model: Path, batches: list[list[list[int]]], launch_log: Path, **engine: Any) -> Any:
    env = testbed_env(ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(launch_log))
    with EngineProcess(
        model, env=env, attention_backend="ascend", page_size=PAGE, **engine
    ) as server:
        return [server.generate(batch, NEW_TOKENS) for batch in batches]


@pytest.fixture(scope="module")
def d64(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Head dim 64, GQA 2:1; parity prompts, then a prefix seed, then twelve sharers at once."""
    model = build_qwen2(hidden_size=4 * 64, num_attention_heads=4, num_key_value_heads=2)
    parity = encode_prompts(model)
    shared = token_stream(model, SHARED_PAGES * PAGE + 20, offset=5)
    sharers = [shared + token_stream(model, 3 + i, offset=40 + 7 * i) for i in range(SHARERS)]
    log = tmp_path_factory.mktemp("d64") / "launches.jsonl"
    outs = _serve(
        model,
        [parity, [shared], sharers],
        log,
        max_total_tokens=POOL_TOKENS,
        max_running_requests=16,
    )
    yield {
        "parity": (outs[0], hf_greedy(model, parity, NEW_TOKENS)),
        "sharers": (outs[2], hf_greedy(model, sharers, NEW_TOKENS)),
        "sharer_lens": [len(s) for s in sharers],
        "launches": read_launch_log(log),
    }


def test_head_dim_64_matches_hf(d64: dict[str, Any]) -> None:
    out, expected = d64["parity"]
    assert out["output_ids"] == expected
    assert len({tuple(ids) for ids in expected}) >= 6, "prompts must not collapse to one output"


def test_shared_prefix_pages_decode_in_one_batch_and_match_hf(d64: dict[str, Any]) -> None:
    out, expected = d64["sharers"]
    assert out["output_ids"] == expected
    cached = [m["cached_tokens"] for m in out["meta"]]
    assert all(c >= SHARED_PAGES * PAGE for c in cached), cached
    # Each sharer's own pages, counted as if private, exceed the whole pool.
    pages = sum(-(-(n + NEW_TOKENS) // PAGE) for n in d64["sharer_lens"])
    assert pages > POOL_TOKENS // PAGE, pages
    decode_batches = [r["batch_size"] for r in d64["launches"] if r["mode"] == "DECODE"]
    assert max(decode_batches) == SHARERS, decode_batches


def test_fia_served_every_forward_with_one_launch_per_layer(d64: dict[str, Any]) -> None:
    records = d64["launches"]
    assert {r["served_by"]["attn_backend"] for r in records} == {"AscendFIABackend"}
    assert fia_launches_per_layer(records) == {1.0}


def test_head_dim_256_matches_hf(tmp_path: Path) -> None:
    model = build_qwen2(hidden_size=2 * 256, num_attention_heads=2, num_key_value_heads=1)
    prompts = encode_prompts(model)
    shared = token_stream(model, PAGE + 30, offset=9)
    prefix_hits = [[*shared, 5, 6], [*shared, 7]]
    log = tmp_path / "launches.jsonl"
    first, second = _serve(model, [[*prompts, shared], prefix_hits], log)
    assert first["output_ids"] + second["output_ids"] == hf_greedy(
        model, [*prompts, shared, *prefix_hits], NEW_TOKENS
    )
    assert all(m["cached_tokens"] >= PAGE for m in second["meta"])
    records = read_launch_log(log)
    assert {r["served_by"]["attn_backend"] for r in records} == {"AscendFIABackend"}
    assert fia_launches_per_layer(records) == {1.0}
