"""The real ``sglang.launch_server`` with the plugin, under an ``openai`` client load.

One server (``testbed.load.LOAD_SERVER_ARGS``: page 128, 256-token prefill chunks, a 24-page KV
pool) takes, in order:

1. the load: 64 requests (chat and completion, streaming and not, four shared prefixes, prompts
   longer than ``chunked_prefill_size``), 16 at a time, decoding together on shared prefix pages;
2. memory pressure: 16 requests at once whose answers run into a second page; sglang admits them
   on their prompts (``LOAD_SERVER_ENV``), runs out of pages mid-decode, retracts some and
   re-runs them;
3. the references on a cold cache: the load one request at a time, the pressure requests 4 at
   a time (their 8 pages fit, so nothing is retracted).

Answers must be identical between each run and its reference, complete (exactly ``max_tokens``
tokens, ``finish_reason`` "length"), and every request and run is bounded in time.
``make bench`` runs the 256-request, 32-at-a-time load against stock
(``bench/serve_bench.py``).

A second server runs ``--tp-size 2`` with a patch target removed from sglang (a test-bed fixture)
and takes the first 16 load requests, client faults (a client hanging up mid-stream,
``max_tokens`` 0 and 1e9, an empty prompt, a prompt longer than the context), then the same 16
again: both ranks are patched, the answers equal TP=1's before and after the faults, and the
missing target is skipped with a warning. One server for the three saves a start (~50 s) of CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from testbed.engine import testbed_env
from testbed.load import (
    CHUNK,
    LOAD_SERVER_ARGS,
    LOAD_SERVER_ENV,
    PAGE,
    LoadReply,
    answer_texts,
    build_page_crossers,
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
CROSSERS = 16  # 32 pages by the end of their answers, in a 24-page pool
TP_REQUESTS = 16  # the first 16 of the load, 8 at a time, through --tp-size 2, twice


@pytest.fixture(scope="module")
def load_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    model = build_qwen2()
    tmp = tmp_path_factory.mktemp("serve_load")
    launch_log = tmp / "launches.jsonl"
    requests = build_requests(model, REQUESTS, long_tokens=CHUNK)
    crossers = build_page_crossers(model, CROSSERS, PAGE)
    env = testbed_env(ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(launch_log), **LOAD_SERVER_ENV)
    with ServerProcess(
        model,
        tmp / "server.log",
        env=env,
        attention_backend="ascend",
        max_running_requests=CONCURRENCY,
        **LOAD_SERVER_ARGS,
    ) as server:
        concurrent, _ = run_load(
            server.base_url, str(model), requests, concurrency=CONCURRENCY, total_s=180
        )
        launches = read_launch_log(launch_log)
        pressured, _ = run_load(
            server.base_url, str(model), crossers, concurrency=CROSSERS, total_s=120
        )
        retracted = retracted_requests(server.log_text())
        assert server.post("/flush_cache") == 200  # the references start cold
        sequential, _ = run_load(server.base_url, str(model), requests, concurrency=1, total_s=180)
        unpressured, _ = run_load(server.base_url, str(model), crossers, concurrency=4, total_s=120)
        yield {
            "requests": requests,
            "crossers": crossers,
            "concurrent": concurrent,
            "sequential": sequential,
            "pressured": pressured,
            "unpressured": unpressured,
            "launches": launches,
            "retracted": (retracted, retracted_requests(server.log_text()) - retracted),
            "alive": server.alive(),
            "log": server.log_text(),
        }


def test_no_errors_drops_or_truncated_streams(load_run: dict[str, Any]) -> None:
    requests, crossers = load_run["requests"], load_run["crossers"]
    assert problems(requests, load_run["concurrent"]) == []
    assert problems(requests, load_run["sequential"]) == []
    assert problems(crossers, load_run["pressured"]) == []
    assert problems(crossers, load_run["unpressured"]) == []
    assert load_run["alive"]


def test_concurrent_answers_equal_one_at_a_time(load_run: dict[str, Any]) -> None:
    together, alone = answer_texts(load_run["concurrent"]), answer_texts(load_run["sequential"])
    differ = [i for i, (a, b) in enumerate(zip(together, alone, strict=True)) if a != b]
    assert differ == [], f"{len(differ)} of {len(alone)} differ, first: {differ[:8]}"
    assert len(set(alone)) > REQUESTS // 4, "answers must not collapse to a few strings"


def test_memory_pressure_retracts_and_answers_equal_the_unpressured_run(
    load_run: dict[str, Any],
) -> None:
    during_pressure, during_references = load_run["retracted"]
    assert during_pressure > 0, "no request was retracted: the pool was not under pressure"
    assert during_references == 0  # the references ran unpressured
    pressured, unpressured = (
        answer_texts(load_run["pressured"]),
        answer_texts(load_run["unpressured"]),
    )
    assert pressured == unpressured
    # Every answer ran into a second page, which is what ran the pool dry.
    replies = [r for r in load_run["pressured"] if isinstance(r, LoadReply)]
    assert all(r.prompt_tokens < PAGE < r.prompt_tokens + r.completion_tokens for r in replies)


def test_workload_covers_what_it_claims(load_run: dict[str, Any]) -> None:
    requests, replies = load_run["requests"], load_run["concurrent"]
    kinds = {(r.kind, r.stream) for r in requests}
    assert kinds == {("chat", True), ("chat", False), ("completion", True), ("completion", False)}
    assert sum(r.prompt_tokens > CHUNK for r in replies) >= REQUESTS // 8  # chunked prefills
    # Radix hits: a request reusing a prefix's two full pages (25-30 of 64 measured; the first
    # of each prefix, the long prompts and prefixes evicted from the small pool miss).
    assert sum(r.cached_tokens >= 2 * PAGE for r in replies) >= REQUESTS // 4


def test_plugin_served_concurrent_decodes_on_shared_pages(load_run: dict[str, Any]) -> None:
    assert "sglang-ascend-fia: FIA attention backend (page_size=128" in load_run["log"]
    launches = load_run["launches"]
    assert launches and all(r["launches"].get("fused_infer_attention_score") for r in launches)
    decode_batches = [r["batch_size"] for r in launches if r["mode"] == "DECODE"]
    # Many requests decoding together in a pool smaller than their pages, so on the shared
    # prefix pages.
    assert max(decode_batches) >= 8, max(decode_batches)


# --- the second server: --tp-size 2, client faults and a missing patch target ----------------

CONTEXT = 1024
MISSING_MODULE = "sglang.srt.models.deepseek_v2"
MISSING_TARGET = "DeepseekV2AttentionMLA.forward_prepare"
MISSING_REASON = f"{MISSING_MODULE} has no attribute '{MISSING_TARGET}'"
# forward_prepare is one of the deepseek-mla group (patches/deepseek_mla.toml): the whole group
# is skipped with it.
GROUP_REASON = f"patch group deepseek-mla is skipped: fia-mla-deepseek-prepare: {MISSING_REASON}"
GROUP = ("fia-mla-deepseek-prepare", "fia-mla-deepseek-core", "fia-mla-kv-pool")


def _missing_target_env(**more: str) -> dict[str, str]:
    # The test-bed sitecustomize deletes the attribute as sglang imports its module, in every
    # process (every model module is imported at start-up, so also in a Qwen2 server), as a
    # renamed method in a newer sglang would.
    remove = f"{MISSING_MODULE}:{MISSING_TARGET}"
    return testbed_env(ASCEND_USE_FIA="1", FIA_TESTBED_REMOVE_ATTRIBUTE=remove, **more)


def _client_faults(server: ServerProcess, model: str, prompt: str) -> list[str]:
    """A client that hangs up mid-stream, then requests the server must refuse or survive:
    ``max_tokens`` 0 and 1e9, an empty prompt, a prompt longer than the context. Returns the
    refusals' messages."""
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    stream = client.completions.create(
        model=model,
        prompt=prompt,
        max_tokens=500,
        stream=True,
        timeout=60,
        extra_body={"ignore_eos": True},
    )
    for _, _chunk in zip(range(2), stream, strict=False):
        pass
    stream.close()
    rejected = []
    for kwargs in (
        {"prompt": "hello", "max_tokens": 0},
        {"prompt": "hello", "max_tokens": 10**9},
        {"prompt": "", "max_tokens": 4},
        {"prompt": "hello " * (4 * CONTEXT), "max_tokens": 4},
    ):
        try:
            client.completions.create(model=model, timeout=60, **kwargs)
        except openai.BadRequestError as exc:
            rejected.append(str(exc))
    return rejected


@pytest.fixture(scope="module")
def tp2_run(
    load_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """``--tp-size 2`` on CPU: sglang 0.5.23 runs it over gloo (without AMX its shared-memory
    all-reduce is off, ``distributed/bootstrap.py:277-301``; ``SGLANG_CPU_OMP_THREADS_BIND``
    gives each rank a core, as ``utils/numa_utils.py:455-506`` requires beyond one rank per NUMA
    node), with a patch target removed. The first 16 load requests, then client faults, then the
    same 16 again."""
    model = build_qwen2()
    tmp = tmp_path_factory.mktemp("serve_tp2")
    launch_log, process_log = tmp / "launches.jsonl", tmp / "processes.jsonl"
    env = _missing_target_env(
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
        context_length=CONTEXT,
    ) as server:
        before, _ = run_load(server.base_url, str(model), requests, concurrency=8, total_s=240)
        rejected = _client_faults(server, str(model), requests[1].prompt)
        after, _ = run_load(server.base_url, str(model), requests, concurrency=8, total_s=240)
        yield {
            "requests": requests,
            "before": before,
            "after": after,
            "rejected": rejected,
            "alive": server.alive(),
            "log": server.log_text(),
            "processes": [json.loads(x) for x in process_log.read_text().splitlines()],
            "forwards": [json.loads(x) for x in launch_log.read_text().splitlines()],
        }


def test_tp2_patches_both_ranks_and_answers_equal_tp1(
    load_run: dict[str, Any], tp2_run: dict[str, Any]
) -> None:
    """Both scheduler ranks load and patch the plugin and serve with the FIA backend over half
    the heads each; the answers equal the TP=1 one-at-a-time run."""
    assert problems(tp2_run["requests"], tp2_run["before"]) == []
    assert answer_texts(tp2_run["before"]) == answer_texts(load_run["sequential"][:TP_REQUESTS])
    processes = tp2_run["processes"]
    ranks = {r["pid"] for r in processes if r["caller"].endswith(":run_scheduler_process")}
    assert len(ranks) == 2, processes
    assert all(r["active"] for r in processes), processes
    forwards = tp2_run["forwards"]
    assert {r["pid"] for r in forwards} == ranks  # both ranks ran the model
    for pid in ranks:
        mine = [r for r in forwards if r["pid"] == pid]
        assert all(r["launches"].get("fused_infer_attention_score") for r in mine)
        served = mine[-1]["served_by"]
        assert served["attn_backend"] == "AscendFIABackend", served
        # The tiny Qwen2's 4 query / 2 KV heads, split across the two ranks.
        assert (served["attention"]["q_heads"], served["attention"]["kv_heads"]) == (2, 1)
        assert mine[-1]["patches"]["ascend-fia-backend"] == "applied", mine[-1]["patches"]
        assert mine[-1]["patches"]["fia-mla-deepseek-prepare"] == "skipped"


def test_server_survives_client_faults(tp2_run: dict[str, Any]) -> None:
    assert tp2_run["alive"]
    # An over-long prompt is refused with a message naming the context length.
    assert any(str(CONTEXT) in message for message in tp2_run["rejected"]), tp2_run["rejected"]
    assert problems(tp2_run["requests"], tp2_run["after"]) == []
    assert answer_texts(tp2_run["after"]) == answer_texts(tp2_run["before"])


def test_missing_patch_target_is_skipped_with_a_warning_and_the_server_serves(
    tp2_run: dict[str, Any],
) -> None:
    # One warning per process that imported the module, naming the entry and why; every
    # other patch still applies (FIA served, the answers above are right).
    log = tp2_run["log"]
    skips = [line for line in log.splitlines() if "sglang-ascend-fia: " in line and "skip" in line]
    assert skips, log[-3000:]
    for line in skips:
        assert GROUP_REASON in line and "sglang keeps its own" in line, line
    assert "sglang-ascend-fia: FIA attention backend (page_size=128" in log


def test_doctor_shows_a_missing_patch_target_as_skipped() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sglang_ascend_fia.cli", "doctor", "--json"],
        env=_missing_target_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # a skip is not a failure
    states = {p["name"]: (p["status"], p["reason"]) for p in json.loads(proc.stdout)["patches"]}
    for name in GROUP:
        assert states.pop(name) == ("skipped", GROUP_REASON), name
    # sglang's own Ascend backend module imports torch_npu, which this host lacks.
    state, reason = states.pop("in-tree-flag-backend")
    assert state == "skipped" and reason.startswith("cannot import here"), reason
    assert {state for state, _ in states.values()} == {"applied"}, states
