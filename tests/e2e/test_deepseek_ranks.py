"""DeepSeek across ranks (issue 20): tensor parallel and expert parallel through
``sglang.launch_server`` on CPU over gloo, with the plugin's FIA MLA backend, split pool and MoE
chain on every rank.

Two tiny models with DeepSeek's real MLA dims (kv_lora 512, rope 64):

- V2-Lite-style: 16 heads, no q_lora, softmax top-4 of 16 routed experts, 2 shared experts;
- V3-style: 32 heads, q_lora, yarn rope, sigmoid grouped top-4 with correction bias.

Each runs the same workloads (parity prompts, a radix-cache seed, then one batch mixing a fresh
prompt longer than the chunked-prefill size, radix hits on the seeded pages and short prompts)
through a TP=1 ``sglang.Engine`` (checked against HF fp32) and a ``--tp-size 2`` server; the
V2-Lite-style model also through ``--tp-size 2 --ep-size 2``, where each rank holds 8 of the 16
experts and the plugin's chain routes only those (``moe/local_experts.py``). Greedy tokens must be
equal; each rank's forwards (the launch probe's records, one process per rank) must show the FIA
MLA backend with its share of the heads, the split pool and one launch of each MoE chain op per
MoE layer, and each rank logs one status line with its rank id. fp32 keeps the all-reduce's
summation order from flipping a greedy choice; the tokens are compared exactly.

Stock sglang's CPU path cannot run EP at all: ``moe_forward_native`` scatters the ``-1`` that
the standard dispatcher gives other ranks' experts (shown by ``test_stock_cpu_ep_fails``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed.engine import EngineProcess, testbed_env
from testbed.models import build_deepseek_v2_lite, build_deepseek_v3_style_moe
from testbed.oracle import hf_greedy
from testbed.server import NodeProcess, ServerProcess, free_port, start_refusal

from e2e.fia_common import CHUNK, ENGINE_ARGS, PAGE_SIZE, workloads

pytestmark = pytest.mark.engine

NEW_TOKENS = 16
WORKLOADS = ("parity", "prefix-seed", "mixed")
ROUTED_CHAIN = ("moe_gating_top_k", "moe_init_routing_v2", "swiglu", "moe_finalize_routing")
# One core per rank: sglang's CPU thread binding needs it beyond one rank per NUMA node.
RANK_ENV = {"SGLANG_CPU_OMP_THREADS_BIND": "0|1"}
SERVE_ARGS: dict[str, Any] = {"attention_backend": "ascend", **ENGINE_ARGS}
# A killed rank must end the server within this (sglang waits 5 s before its crash report).
KILL_BOUND_S = 60.0


def v2_lite() -> Path:
    return build_deepseek_v2_lite(
        num_hidden_layers=3,
        n_routed_experts=16,
        n_shared_experts=2,
        num_experts_per_tok=4,
        norm_topk_prob=False,
    )


def v3_style() -> Path:
    return build_deepseek_v3_style_moe()


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _generate(server: ServerProcess, batch: list[list[int]]) -> list[dict[str, Any]]:
    body = {
        "input_ids": batch,
        "sampling_params": {"temperature": 0.0, "max_new_tokens": NEW_TOKENS, "ignore_eos": True},
    }
    request = urllib.request.Request(
        server.base_url + "/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as reply:
        out: list[dict[str, Any]] = json.loads(reply.read())
        return out


def _openai_texts(server: ServerProcess, model: Path, batch: list[list[int]]) -> list[str]:
    """The same greedy requests through the ``openai`` client's completions API (token-id
    prompts), as a user's client sends them."""
    from openai import OpenAI

    client = OpenAI(base_url=server.base_url + "/v1", api_key="none", max_retries=0)
    texts = []
    for prompt in batch:
        reply = client.completions.create(
            model=str(model),
            prompt=prompt,
            max_tokens=NEW_TOKENS,
            temperature=0.0,
            extra_body={"ignore_eos": True},
        )
        texts.append(reply.choices[0].text)
    return texts


def _serve(model: Path, tmp: Path, name: str, **parallel: Any) -> dict[str, Any]:
    """Every workload, in order, through one multi-rank server: tokens, cached tokens, the
    per-rank launch records and the server log."""
    log = tmp / f"{name}.jsonl"
    env = testbed_env(ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(log), **RANK_ENV)
    tokens: dict[str, list[list[int]]] = {}
    cached: dict[str, list[int]] = {}
    texts: dict[str, list[str]] = {}
    with ServerProcess(model, tmp / f"{name}.log", env=env, **SERVE_ARGS, **parallel) as server:
        for workload, batch in _workloads(model).items():
            out = _generate(server, batch)
            tokens[workload] = [list(o["output_ids"]) for o in out]
            cached[workload] = [o["meta_info"]["cached_tokens"] for o in out]
            texts[workload] = [o["text"] for o in out]
        openai_texts = _openai_texts(server, model, _workloads(model)["parity"])
        server_log = server.log_text()
    return {
        "tokens": tokens,
        "cached": cached,
        "texts": texts,
        "openai": openai_texts,
        "records": _records(log),
        "log": server_log,
    }


def _serve_two_nodes(model: Path, tmp: Path) -> dict[str, Any]:
    """TP=2 over two nodes on this machine: ``--nnodes 2 --node-rank 0|1`` with one
    ``--dist-init-addr``, one rank (and one core) per node, each node its own server process
    that loads the plugin through the entry point."""
    dist = {"nnodes": 2, "dist_init_addr": f"127.0.0.1:{free_port()}", "tp_size": 2}
    logs = [tmp / f"node{rank}.jsonl" for rank in (0, 1)]
    envs = [
        testbed_env(
            ASCEND_USE_FIA="1",
            FIA_LAUNCH_LOG=str(logs[rank]),
            SGLANG_CPU_OMP_THREADS_BIND=str(rank),
        )
        for rank in (0, 1)
    ]
    tokens: dict[str, list[list[int]]] = {}
    cached: dict[str, list[int]] = {}
    with (
        NodeProcess(model, tmp / "node1.log", env=envs[1], node_rank=1, **SERVE_ARGS, **dist) as n1,
        ServerProcess(
            model, tmp / "node0.log", env=envs[0], node_rank=0, **SERVE_ARGS, **dist
        ) as n0,
    ):
        for workload, batch in _workloads(model).items():
            out = _generate(n0, batch)
            tokens[workload] = [list(o["output_ids"]) for o in out]
            cached[workload] = [o["meta_info"]["cached_tokens"] for o in out]
        server_log = n0.log_text() + n1.log_text()
    records = _records(logs[0]) + _records(logs[1])
    return {"tokens": tokens, "cached": cached, "records": records, "log": server_log}


def _workloads(model: Path) -> dict[str, list[list[int]]]:
    return {name: batch for name, batch in workloads(model).items() if name in WORKLOADS}


def _tp1(model: Path, tmp: Path) -> dict[str, Any]:
    env = testbed_env(ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(tmp / "tp1.jsonl"))
    tokens: dict[str, list[list[int]]] = {}
    with EngineProcess(model, env=env, **SERVE_ARGS) as engine:
        for workload, batch in _workloads(model).items():
            tokens[workload] = engine.generate(batch, NEW_TOKENS)["output_ids"]
    hf = {name: hf_greedy(model, batch, NEW_TOKENS) for name, batch in _workloads(model).items()}
    return {"tokens": tokens, "hf": hf}


@pytest.fixture(scope="module")
def v2_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    model = v2_lite()
    tmp = tmp_path_factory.mktemp("v2-ranks")
    yield {
        "model": model,
        "tp1": _tp1(model, tmp),
        "tp2": _serve(model, tmp, "tp2", tp_size=2),
        "ep2": _serve(model, tmp, "ep2", tp_size=2, ep_size=2),
        "nodes2": _serve_two_nodes(model, tmp),
    }


@pytest.fixture(scope="module")
def v3_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    model = v3_style()
    tmp = tmp_path_factory.mktemp("v3-ranks")
    yield {"model": model, "tp1": _tp1(model, tmp), "tp2": _serve(model, tmp, "tp2", tp_size=2)}


def _runs(request: pytest.FixtureRequest, model: str) -> dict[str, Any]:
    runs: dict[str, Any] = request.getfixturevalue(f"{model}_runs")
    return runs


CASES = [("v2", "tp2"), ("v2", "ep2"), ("v2", "nodes2"), ("v3", "tp2")]


@pytest.mark.parametrize("model", ["v2", "v3"])
def test_tp1_matches_hf(request: pytest.FixtureRequest, model: str) -> None:
    tp1 = _runs(request, model)["tp1"]
    for workload in WORKLOADS:
        assert tp1["tokens"][workload] == tp1["hf"][workload], workload


@pytest.mark.parametrize(("model", "layout"), CASES)
def test_ranks_give_tp1s_tokens(request: pytest.FixtureRequest, model: str, layout: str) -> None:
    runs = _runs(request, model)
    for workload in WORKLOADS:
        assert runs[layout]["tokens"][workload] == runs["tp1"]["tokens"][workload], workload


@pytest.mark.parametrize(("model", "layout"), [c for c in CASES if c[1] != "nodes2"])
def test_openai_client_gets_the_same_answers(
    request: pytest.FixtureRequest, model: str, layout: str
) -> None:
    """The parity prompts again, through the ``openai`` client's completions API: the same text
    as ``/generate`` gave for TP=1's tokens on this server."""
    runs = _runs(request, model)[layout]
    assert runs["openai"] == runs["texts"]["parity"]


@pytest.mark.parametrize(("model", "layout"), CASES)
def test_mixed_batch_hit_the_radix_cache_and_chunked(
    request: pytest.FixtureRequest, model: str, layout: str
) -> None:
    runs = _runs(request, model)
    batch = _workloads(runs["model"])["mixed"]
    cached = runs[layout]["cached"]["mixed"]
    assert len(batch[0]) > CHUNK and cached[0] == 0, cached  # prefilled in chunks
    assert cached[1] >= 2 * PAGE_SIZE and cached[3] >= 2 * PAGE_SIZE, cached


@pytest.mark.parametrize(("model", "layout"), CASES)
def test_every_rank_runs_fia_mla_the_split_pool_and_the_moe_chain(
    request: pytest.FixtureRequest, model: str, layout: str
) -> None:
    runs = _runs(request, model)
    config = json.loads((runs["model"] / "config.json").read_text())
    layers = config["num_hidden_layers"]
    moe_layers = layers - config["first_k_dense_replace"]
    heads = config["num_attention_heads"]
    by_rank: dict[int, set[str]] = {}
    for record in runs[layout]["records"]:
        by_rank.setdefault(record["pid"], set()).add(record["mode"])
        served = record["served_by"]
        assert served["attn_backend"] == "AscendFIAMLABackend", served
        assert served["kv_pool"] == "FIAMLATokenToKVPool", served
        assert served["attention"]["q_heads"] == heads // 2, served
        launches = record["launches"]
        fia = sum(
            launches.get(op, 0)
            for op in ("fused_infer_attention_score", "fused_infer_attention_score_v2")
        )
        assert fia == layers, (record["mode"], launches)
        for op in ROUTED_CHAIN:
            assert launches.get(op) == moe_layers, (op, launches)
        assert launches.get("grouped_matmul") == 2 * moe_layers, launches
        assert not [p for p, state in record["patches"].items() if state == "failed"], record
    assert len(by_rank) == 2, by_rank  # two processes: two ranks (on one node or two)
    for modes in by_rank.values():
        assert modes >= {"EXTEND", "DECODE"}, by_rank


@pytest.mark.parametrize(("model", "layout"), CASES)
def test_each_rank_logs_its_status_line(
    request: pytest.FixtureRequest, model: str, layout: str
) -> None:
    log = _runs(request, model)[layout]["log"]
    ep = 2 if layout == "ep2" else 1
    lines = re.findall(r"sglang-ascend-fia rank \((tp \d/2, attn-dp \d/1, ep \d/\d)\): (.*)", log)
    layouts = sorted(line[0] for line in lines)
    assert layouts == [f"tp {r}/2, attn-dp 0/1, ep {r if ep == 2 else 0}/{ep}" for r in (0, 1)]
    for _, status in lines:
        assert status.startswith("attention FIA MLA backend; patches "), status
        assert "failed" not in status, status


def test_stock_cpu_ep_fails(tmp_path: Path) -> None:
    """Stock sglang (no plugin) at ``--ep-size 2`` on CPU: its own ``moe_forward_native``
    cannot take the ``-1`` ids of other ranks' experts; the server ends, it does not hang."""
    model = v2_lite()
    env = testbed_env(ASCEND_USE_FIA=None, **RANK_ENV)
    args = {**ENGINE_ARGS, "attention_backend": "torch_native", "tp_size": 2, "ep_size": 2}
    with ServerProcess(model, tmp_path / "stock.log", env=env, **args) as server:
        with pytest.raises(OSError):
            _generate(server, _workloads(model)["parity"][:1])
        log = server.log_text()
    assert "index -1 is out of bounds" in log, log[-3000:]
    assert "moe_forward_native" in log


def test_one_node_missing_a_patch_target_ends_both_nodes_alike(tmp_path: Path) -> None:
    """Node 1's sglang lacks a member of the deepseek-mla patch group (its group is skipped, so
    that rank alone would hand DeepSeek to sglang's backend); node 0's has it all. The ranks
    agree (``registry/rank_agreement.py``): both hand off for rank 1's reason and, without
    torch_npu here, both refuse start-up with the same line; neither hangs or serves half."""
    model = v2_lite()
    dist = {"nnodes": 2, "dist_init_addr": f"127.0.0.1:{free_port()}", "tp_size": 2}
    missing = "sglang.srt.models.deepseek_v2:DeepseekV2AttentionMLA.forward_core"
    env1 = testbed_env(
        ASCEND_USE_FIA="1", SGLANG_CPU_OMP_THREADS_BIND="1", FIA_TESTBED_REMOVE_ATTRIBUTE=missing
    )
    env0 = testbed_env(ASCEND_USE_FIA="1", SGLANG_CPU_OMP_THREADS_BIND="0")
    with NodeProcess(
        model, tmp_path / "node1.log", env=env1, node_rank=1, **SERVE_ARGS, **dist
    ) as n1:
        code0, log0 = start_refusal(
            model, tmp_path / "node0.log", env=env0, node_rank=0, **SERVE_ARGS, **dist
        )
        code1 = n1.wait(timeout=60)
        log1 = n1.log_text()
    assert code0 not in (None, 0), log0[-3000:]
    assert code1 not in (None, 0), log1[-3000:]
    agreed = "tp rank 1 of 2 hands off (patch group deepseek-mla is skipped: fia-mla-deepseek-core"
    for log in (log0, log1):
        refusal = [line for line in log.splitlines() if "which needs torch_npu" in line]
        assert refusal and agreed in refusal[0], log[-3000:]
        assert "FIA MLA attention backend" not in log


def _scheduler_pid(server: ServerProcess, name: str) -> int:
    """The pid of the server's process titled ``name`` (sglang titles its ranks
    ``sglang::scheduler_TP<n>``)."""
    for line in subprocess.run(
        ["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        if args.strip() == name and os.getpgid(int(pid)) == server.pid:
            return int(pid)
    raise AssertionError(f"no {name} process in the server's group")


def test_a_rank_killed_mid_request_ends_the_server_with_a_clear_error(tmp_path: Path) -> None:
    """TP rank 1 is killed while a long generation is running: rank 0's next collective fails,
    sglang's parent gets SIGQUIT and ends the whole server within ``KILL_BOUND_S``; the client
    gets an error, not a hang."""
    model = v2_lite()
    env = testbed_env(ASCEND_USE_FIA="1", **RANK_ENV)
    server = ServerProcess(model, tmp_path / "server.log", env=env, tp_size=2, **SERVE_ARGS)
    failures: list[BaseException] = []

    def long_request() -> None:
        body = {
            "input_ids": _workloads(model)["parity"][:2],
            "sampling_params": {"temperature": 0.0, "max_new_tokens": 2000, "ignore_eos": True},
        }
        request = urllib.request.Request(
            server.base_url + "/generate",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(request, timeout=KILL_BOUND_S).read()
        except BaseException as exc:  # the failure is what is checked
            failures.append(exc)

    try:
        client = threading.Thread(target=long_request)
        client.start()
        time.sleep(3.0)  # well into the decode (2000 tokens take minutes here)
        os.kill(_scheduler_pid(server, "sglang::scheduler_TP1"), signal.SIGKILL)
        killed = time.monotonic()
        while server.alive() and time.monotonic() - killed < KILL_BOUND_S:
            time.sleep(0.5)
        ended_after = time.monotonic() - killed
        client.join(timeout=KILL_BOUND_S)
        log = server.log_text()
    finally:
        server.close()
    assert ended_after < KILL_BOUND_S, f"the server outlived its killed rank by {ended_after:.0f}s"
    assert failures and isinstance(failures[0], OSError), failures
    assert "It usually means one child failed" in log, log[-3000:]
