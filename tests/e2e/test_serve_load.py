"""The real ``sglang.launch_server`` with the plugin, under an ``openai`` client load.

64 requests (chat and completion, streaming and not, four shared prefixes, prompts longer than
``chunked_prefill_size``, some long answers), 16 at a time, against a 24-page KV pool the
scheduler is told to fill (``testbed.load.LOAD_SERVER_ARGS``): requests decode together on the
shared prefix pages, and some are retracted for want of pages and re-run. Then the same requests
one at a time on a cold cache. Greedy answers must be identical and complete, and every request
and the whole run are bounded in time. ``make bench`` runs the 256-request, 32-at-a-time version
and the plugin's throughput against stock (``bench/serve_bench.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from testbed.engine import testbed_env
from testbed.load import (
    CHUNK,
    LOAD_SERVER_ARGS,
    LONG_ANSWER,
    PAGE,
    build_requests,
    problems,
    retracted_requests,
    run_load,
)
from testbed.models import build_qwen2
from testbed.server import ServerProcess

from e2e.fia_common import read_launch_log

pytestmark = pytest.mark.engine

REQUESTS = 64
CONCURRENCY = 16
TP_REQUESTS = 16  # the first 16 of the load, 8 at a time, through --tp-size 2


@pytest.fixture(scope="module")
def load_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    model = build_qwen2()
    tmp = tmp_path_factory.mktemp("serve_load")
    launch_log = tmp / "launches.jsonl"
    requests = build_requests(model, REQUESTS, long_tokens=CHUNK, long_answer=LONG_ANSWER)
    env = testbed_env(ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(launch_log))
    with ServerProcess(
        model,
        tmp / "server.log",
        env=env,
        attention_backend="ascend",
        max_running_requests=CONCURRENCY,
        **LOAD_SERVER_ARGS,
    ) as server:
        concurrent, concurrent_s = run_load(
            server.base_url, str(model), requests, concurrency=CONCURRENCY, total_s=240
        )
        concurrent_launches = read_launch_log(launch_log)
        retracted = retracted_requests(server.log_text())
        assert server.post("/flush_cache") == 200  # the one-at-a-time run starts cold
        sequential, sequential_s = run_load(
            server.base_url, str(model), requests, concurrency=1, total_s=240
        )
        yield {
            "requests": requests,
            "concurrent": concurrent,
            "sequential": sequential,
            "launches": concurrent_launches,
            "retracted": (retracted, retracted_requests(server.log_text()) - retracted),
            "alive": server.alive(),
            "log": server.log_text(),
            "seconds": (concurrent_s, sequential_s),
        }


def test_no_errors_drops_or_truncated_streams(load_run: dict[str, Any]) -> None:
    requests = load_run["requests"]
    assert problems(requests, load_run["concurrent"]) == []
    assert problems(requests, load_run["sequential"]) == []
    assert load_run["alive"]


def test_concurrent_answers_equal_one_at_a_time(load_run: dict[str, Any]) -> None:
    together = [r.text for r in load_run["concurrent"]]
    alone = [r.text for r in load_run["sequential"]]
    differ = [i for i, (a, b) in enumerate(zip(together, alone, strict=True)) if a != b]
    assert differ == [], f"{len(differ)} of {len(alone)} differ, first: {differ[:8]}"
    assert len(set(alone)) > REQUESTS // 4, "answers must not collapse to a few strings"


def test_memory_pressure_retracted_requests_and_they_still_match(
    load_run: dict[str, Any],
) -> None:
    # The answers of the pressured run equal the unpressured one-at-a-time run (the test
    # above); this checks the pressure was real: sglang retracted running requests for want
    # of KV pages and re-ran them, during the concurrent run and never in the sequential one.
    during_concurrent, during_sequential = load_run["retracted"]
    assert during_concurrent > 0, "no request was retracted: the pool was not under pressure"
    assert during_sequential == 0


def test_workload_covers_what_it_claims(load_run: dict[str, Any]) -> None:
    requests, replies = load_run["requests"], load_run["concurrent"]
    kinds = {(r.kind, r.stream) for r in requests}
    assert kinds == {("chat", True), ("chat", False), ("completion", True), ("completion", False)}
    assert sum(r.prompt_tokens > CHUNK for r in replies) >= REQUESTS // 8  # chunked prefills
    assert sum(r.cached_tokens >= 2 * PAGE for r in replies) >= REQUESTS // 2  # radix hits
    # Long answers cross a page boundary while decoding: the fresh page is what runs out.
    crossing = [
        r
        for r in replies
        if r.prompt_tokens // PAGE != (r.prompt_tokens + r.completion_tokens) // PAGE
    ]
    assert len(crossing) >= REQUESTS // 8


def test_plugin_served_concurrent_decodes_on_shared_pages(load_run: dict[str, Any]) -> None:
    assert "sglang-ascend-fia: FIA attention backend (page_size=128" in load_run["log"]
    launches = load_run["launches"]
    assert launches and all(r["launches"].get("fused_infer_attention_score") for r in launches)
    decode_batches = [r["batch_size"] for r in launches if r["mode"] == "DECODE"]
    # Many requests decoding together in a pool smaller than their pages, so on the shared
    # prefix pages.
    assert max(decode_batches) >= 8, max(decode_batches)


def test_tp2_patches_both_ranks_and_answers_equal_tp1(
    load_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``--tp-size 2`` on CPU: sglang 0.5.23 runs it over gloo (without AMX its shared-memory
    all-reduce is off, ``distributed/bootstrap.py:277-301``; ``SGLANG_CPU_OMP_THREADS_BIND``
    gives each rank a core, as ``utils/numa_utils.py:455-506`` requires beyond one rank per NUMA
    node). Both scheduler ranks load and patch the plugin and serve with the FIA backend over
    half the heads each; the answers equal the TP=1 one-at-a-time run above."""
    model = build_qwen2()
    tmp = tmp_path_factory.mktemp("serve_tp2")
    launch_log, process_log = tmp / "launches.jsonl", tmp / "processes.jsonl"
    env = testbed_env(
        ASCEND_USE_FIA="1",
        FIA_LAUNCH_LOG=str(launch_log),
        FIA_TESTBED_PROCESS_LOG=str(process_log),
        SGLANG_CPU_OMP_THREADS_BIND="0|1",
    )
    requests = load_run["requests"][:TP_REQUESTS]
    with ServerProcess(
        model,
        tmp / "server.log",
        env=env,
        attention_backend="ascend",
        tp_size=2,
        page_size=PAGE,
        chunked_prefill_size=CHUNK,
        max_running_requests=8,
    ) as server:
        replies, _ = run_load(server.base_url, str(model), requests, concurrency=8, total_s=240)
        assert server.alive()
    assert problems(requests, replies) == []
    tp1 = [r.text for r in load_run["sequential"][:TP_REQUESTS]]
    assert [r.text for r in replies] == tp1
    processes = [json.loads(line) for line in process_log.read_text().splitlines()]
    ranks = {r["pid"] for r in processes if r["caller"].endswith(":run_scheduler_process")}
    assert len(ranks) == 2, processes
    assert all(r["active"] for r in processes), processes
    forwards = [json.loads(line) for line in launch_log.read_text().splitlines()]
    assert {r["pid"] for r in forwards} == ranks  # both ranks ran the model
    for pid in ranks:
        mine = [r for r in forwards if r["pid"] == pid]
        assert all(r["launches"].get("fused_infer_attention_score") for r in mine)
        served = mine[-1]["served_by"]
        assert served["attn_backend"] == "AscendFIABackend", served
        # The tiny Qwen2's 4 query / 2 KV heads, split across the two ranks.
        assert (served["attention"]["q_heads"], served["attention"]["kv_heads"]) == (2, 1)
        assert mine[-1]["patches"]["ascend-fia-backend"] == "applied", mine[-1]["patches"]
