"""Data-parallel attention (``--enable-dp-attention --dp-size 2 --tp-size 2``) on the FIA MLA
backend, through the real ``sglang.launch_server`` on CPU.

The V2-Lite-shaped DeepSeek of ``test_modelslim_seed`` (no q_lora, 16 heads, kv_lora 512, rope
64, 16 routed experts, bfloat16, page 128) is served by two attention-DP ranks: each rank runs
attention for its own requests with all 16 heads, the MoE runs TP-sharded over both ranks on the
tokens gathered from both. Requests are pinned to a rank (``routed_dp_rank``) so the forwards DP
attention adds are certain to happen:

1. a prompt longer than ``chunked_prefill_size`` on rank 0 alone: rank 1 runs IDLE forwards,
   empty during the prefill chunks (SUM_LEN gather) and padded to one row during decode;
2. two prompts on rank 0 beside one on rank 1, at once: rank 1 decodes one request padded to
   two rows (seq_lens filled with the backend's ``get_cpu_graph_seq_len_fill_value()``,
   forward_batch_info.py:1941-1946, 2013-2030), the first thing stock sglang fails on;
3. a radix hit on rank 1 (its prefix cached by step 2 on that rank) beside a prompt on rank 0.

The same prompts, step by step, go through one TP=1 ``sglang.Engine`` with the plugin, and
through HF fp32. DP2's tokens must equal TP1's: the attention of each request is computed on one
rank as at TP=1, and measured equal. TP1 runs bfloat16 and HF fp32, so their greedy paths part at
bfloat16 near-ties (measured: 3 of 6 prompts, HF's margin at the flip at most 0.018 nats); TP1 is
scored teacher-forced by HF along its own tokens instead, with bounds a wrong attention (whole
nats) cannot meet. Stock sglang's ``torch_native`` with the same DP flags fails at the first
request, with the AttributeError the plugin's backends answer.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from testbed.engine import EngineProcess, testbed_env
from testbed.models import build_deepseek_v2_lite, encode_prompts, token_stream
from testbed.oracle import hf_greedy, hf_logprobs_along
from testbed.server import ServerProcess

from e2e.fia_common import CHUNK, ENGINE_ARGS, PAGE_SIZE, read_launch_log
from e2e.mla_common import DECODE_FIA, PREFILL_FIA
from sglang_ascend_fia.fia_backend.base import SERVED_LOG_PREFIX

pytestmark = pytest.mark.engine

NEW_TOKENS = 16
HEADS = 16
DP_ARGS: dict[str, Any] = {"tp_size": 2, "dp_size": 2, "enable_dp_attention": True}
# sglang divides chunked_prefill_size by the attention-DP size (parallel_hook.py:331): twice
# the TP=1 chunk gives each rank TP=1's 256-token chunks, so both prefill the long prompt alike.
DP_CHUNK = 2 * CHUNK
# One core per rank: sglang's CPU thread binding needs it beyond one rank per NUMA node.
DP_ENV = {"SGLANG_CPU_OMP_THREADS_BIND": "0|1"}
MOE_CHAIN = ("moe_gating_top_k", "moe_init_routing_v2", "swiglu", "moe_finalize_routing")
# TP1 (bfloat16) against HF fp32 along TP1's tokens, nats. Measured: HF's best log-prob minus
# that of TP1's token at most 0.018 (a near-tie), 0 at 92 of the 96 positions; |TP1 - HF|
# log-prob of TP1's tokens at most 0.023. A wrong mask, length or cache row costs whole nats.
NEAR_TIE_TOL = 0.1
MIN_ARGMAX_AGREEMENT = 0.9
LOGPROB_TOL = 0.1
# |DP2 - TP1| log-prob of the same tokens, measured at most 0.016: per-rank attention is
# TP=1's; the MoE and dense MLP all-reduce over two ranks in another bfloat16 order.
DP_LOGPROB_TOL = 0.1
STOCK_ERROR = (
    "AttributeError: 'TorchNativeAttnBackend' object has no attribute "
    "'get_cpu_graph_seq_len_fill_value'"
)


def _model() -> Path:
    return build_deepseek_v2_lite(
        num_hidden_layers=3,
        n_routed_experts=16,
        n_shared_experts=2,
        num_experts_per_tok=4,
        norm_topk_prob=False,
    )


def _steps(model: Path) -> list[list[tuple[int, list[list[int]]]]]:
    """Per step, (DP rank, prompts) sent at once; 6 prompts in all."""
    prompts = encode_prompts(model)
    shared = token_stream(model, 2 * PAGE_SIZE + 40, offset=3)  # two whole pages + change
    long = token_stream(model, DP_CHUNK + 60, offset=11)
    assert len(long) > DP_CHUNK
    seed = shared + token_stream(model, 5, offset=50)
    hit = shared + token_stream(model, 8, offset=67)
    return [[(0, [long])], [(0, prompts[:2]), (1, [seed])], [(1, [hit]), (0, [prompts[2]])]]


def _generate(server: ServerProcess, prompts: list[list[int]], rank: int) -> list[dict[str, Any]]:
    body = {
        "input_ids": prompts,
        "sampling_params": {"temperature": 0.0, "max_new_tokens": NEW_TOKENS, "ignore_eos": True},
        "return_logprob": True,
        "routed_dp_rank": rank,  # io_struct.py:298, routed by data_parallel_controller.py:865-878
    }
    request = urllib.request.Request(
        server.base_url + "/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as reply:
        out: list[dict[str, Any]] = json.loads(reply.read())
        return out


def _run_step(server: ServerProcess, step: list[tuple[int, list[list[int]]]]) -> list[Any]:
    """The step's requests at once (one thread each); replies in the step's order."""
    replies: list[Any] = [None] * len(step)
    errors: list[BaseException] = []

    def send(i: int, rank: int, prompts: list[list[int]]) -> None:
        try:
            replies[i] = _generate(server, prompts, rank)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=send, args=(i, rank, prompts))
        for i, (rank, prompts) in enumerate(step)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [out for reply in replies for out in reply]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    model = _model()
    steps = _steps(model)
    prompts = [p for step in steps for _, batch in step for p in batch]
    tmp = tmp_path_factory.mktemp("dp_attention")
    started = time.monotonic()

    dp_log = tmp / "dp.jsonl"
    env = testbed_env(ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(dp_log), **DP_ENV)
    dp_outs: list[dict[str, Any]] = []
    with ServerProcess(
        model,
        tmp / "server.log",
        env=env,
        attention_backend="ascend",
        dtype="bfloat16",
        **{**ENGINE_ARGS, "chunked_prefill_size": DP_CHUNK},
        **DP_ARGS,
    ) as server:
        for step in steps:
            dp_outs += _run_step(server, step)
        server_log = server.log_text()

    tp1_outs: list[tuple[list[int], dict[str, Any]]] = []
    env = testbed_env(ASCEND_USE_FIA="1")
    with EngineProcess(
        model, env=env, attention_backend="ascend", dtype="bfloat16", **ENGINE_ARGS
    ) as engine:
        for step in steps:
            batch = [p for _, step_prompts in step for p in step_prompts]
            out = engine.generate(batch, NEW_TOKENS, return_logprob=True)
            tp1_outs += zip(out["output_ids"], out["meta"], strict=True)
    yield {
        "model": model,
        "prompts": prompts,
        "dp": [list(o["output_ids"]) for o in dp_outs],
        "dp_meta": [o["meta_info"] for o in dp_outs],
        "tp1": [ids for ids, _ in tp1_outs],
        "tp1_meta": [meta for _, meta in tp1_outs],
        "hf": hf_greedy(model, prompts, NEW_TOKENS),
        "records": read_launch_log(dp_log),
        "server_log": server_log,
        "elapsed_s": time.monotonic() - started,
    }


def test_dp2_tokens_equal_tp1(runs: dict[str, Any]) -> None:
    print(f"DP2 server + TP1 engine: {runs['elapsed_s']:.0f} s")
    assert len(runs["prompts"]) == 6
    assert all(len(ids) == NEW_TOKENS for ids in runs["dp"])
    assert runs["dp"] == runs["tp1"]
    diffs = [
        abs(a[0] - b[0])
        for dp, tp1 in zip(runs["dp_meta"], runs["tp1_meta"], strict=True)
        for a, b in zip(dp["output_token_logprobs"], tp1["output_token_logprobs"], strict=True)
    ]
    measured = f"max |DP2 - TP1| logprob {max(diffs):.4f}"
    print(measured)
    assert max(diffs) <= DP_LOGPROB_TOL, measured


def test_the_radix_hit_is_served_from_the_cache_on_both(runs: dict[str, Any]) -> None:
    # The hit (step 3's first prompt) finds the two whole pages its seed left on rank 1.
    hit = 4
    assert runs["dp_meta"][hit]["cached_tokens"] == 2 * PAGE_SIZE
    assert runs["tp1_meta"][hit]["cached_tokens"] == 2 * PAGE_SIZE


def test_tp1_tracks_hf(runs: dict[str, Any]) -> None:
    """TP1 (bfloat16) scored by HF fp32 along TP1's own tokens: its log-probs agree and every
    token it chose is HF's argmax or within a near-tie of it."""
    tokens = runs["tp1"]
    hf = hf_logprobs_along(runs["model"], runs["prompts"], tokens)
    errors: list[float] = []
    near_tie: list[float] = []
    agree = 0
    for scores, chosen, meta in zip(hf, tokens, runs["tp1_meta"], strict=True):
        served_lp = meta["output_token_logprobs"]
        assert [entry[1] for entry in served_lp] == chosen
        served = torch.tensor([entry[0] for entry in served_lp], dtype=torch.float64)
        hf_lp = scores[torch.arange(len(chosen)), torch.tensor(chosen)]
        errors += (served - hf_lp).abs().tolist()
        near_tie += (scores.max(dim=-1).values - hf_lp).tolist()
        agree += int((scores.argmax(dim=-1) == torch.tensor(chosen)).sum())
    agreement = agree / sum(len(t) for t in tokens)
    exact = sum(t == h for t, h in zip(tokens, runs["hf"], strict=True))
    measured = (
        f"TP1 vs HF: max |logprob err| {max(errors):.4f}; max near-tie gap "
        f"{max(near_tie):.4f}; argmax agreement {agreement:.3f}; {exact}/6 greedy paths equal"
    )
    print(measured)
    assert max(errors) <= LOGPROB_TOL, measured
    assert max(near_tie) <= NEAR_TIE_TOL, measured
    assert agreement >= MIN_ARGMAX_AGREEMENT, measured


def test_both_dp_ranks_run_fia_mla_at_every_forward(runs: dict[str, Any]) -> None:
    """Two ranks (distinct pids), each on the FIA MLA backend over the split pool with all 16
    heads (attention is not TP-sharded under DP attention); one FIA launch per layer in every
    prefill and decode, the NPU MoE chain once per MoE layer in every forward."""
    config = json.loads((runs["model"] / "config.json").read_text())
    layers = config["num_hidden_layers"]
    moe_layers = layers - config["first_k_dense_replace"]
    records = runs["records"]
    modes_by_rank: dict[int, set[str]] = {}
    for record in records:
        modes_by_rank.setdefault(record["pid"], set()).add(record["mode"])
        served = record["served_by"]
        assert served["attn_backend"] == "AscendFIAMLABackend", served
        assert served["kv_pool"] == "FIAMLATokenToKVPool", served
        assert served["attention"]["q_heads"] == HEADS, served
        launches = record["launches"]
        fia = {op: launches.get(op, 0) for op in (PREFILL_FIA, DECODE_FIA)}
        if record["mode"] == "DECODE":
            assert fia == {PREFILL_FIA: 0, DECODE_FIA: layers}, record
        elif record["mode"] in ("EXTEND", "MIXED"):
            assert fia == {PREFILL_FIA: layers, DECODE_FIA: 0}, record
        for op in MOE_CHAIN:
            assert launches.get(op) == moe_layers, (op, record)
    for pid in modes_by_rank:
        mine = [r for r in records if r["pid"] == pid]
        totals = {
            op: sum(r["launches"].get(op, 0) for r in mine)
            for op in (PREFILL_FIA, DECODE_FIA, "moe_init_routing_v2")
        }
        print(f"rank pid {pid}: {len(mine)} forwards, {sorted(modes_by_rank[pid])}, {totals}")
    assert len(modes_by_rank) == 2, modes_by_rank
    for modes in modes_by_rank.values():
        assert modes >= {"EXTEND", "DECODE"}, modes_by_rank
    # Prefill chunks of the long prompt at the per-rank chunk size.
    assert any(r["mode"] == "EXTEND" and r["num_tokens"] == CHUNK for r in records)
    served_lines = [
        line for line in runs["server_log"].splitlines() if SERVED_LOG_PREFIX["fia-mla"] in line
    ]
    for rank in ("DP0 TP0", "DP1 TP1"):
        assert any(rank in line for line in served_lines), served_lines


def test_idle_and_padded_forwards_are_served(runs: dict[str, Any]) -> None:
    """Rank 1 ran IDLE forwards while rank 0 worked alone: empty ones (prefill chunks) and ones
    padded to a row (decode), each joining the gathered MoE (its launches) with no FIA call
    (sglang's forward answers IDLE itself, base_attn_backend.py:332-333); a padded one writes
    its padding rows' latent (to slot 0). Rank 1 also decoded one request padded to rank 0's
    two rows (one FIA launch per layer for both: the other test)."""
    records = runs["records"]
    layers = records[0]["num_layers"]
    idle = [r for r in records if r["mode"] == "IDLE"]
    assert {r["batch_size"] for r in idle} == {0}, idle
    for record in idle:
        launches = record["launches"]
        assert launches.get(PREFILL_FIA, 0) + launches.get(DECODE_FIA, 0) == 0, record
        # Latent and rope of each layer: one write each for a padded row, none for an empty one.
        writes = 2 * layers if record["num_tokens"] else 0
        assert launches.get("scatter_nd_update_", 0) == writes, record
    assert {r["num_tokens"] > 0 for r in idle} == {True, False}, idle
    padded = [r for r in records if r["mode"] == "DECODE" and r["num_tokens"] > r["batch_size"]]
    assert padded, "no decode batch was DP-padded"


def test_stock_torch_native_fails_dp_attention_at_the_first_request(tmp_path: Path) -> None:
    """Stock sglang (plugin off) with ``torch_native`` and the same DP flags: the DP padding
    asks the backend for its CPU fill value, which ``TorchNativeAttnBackend`` does not have
    (forward_batch_info.py:2013-2017), and the scheduler dies on the first request."""
    model = _model()
    env = testbed_env(ASCEND_USE_FIA=None, **DP_ENV)
    with ServerProcess(
        model,
        tmp_path / "stock.log",
        env=env,
        attention_backend="torch_native",
        dtype="bfloat16",
        **ENGINE_ARGS,
        **DP_ARGS,
    ) as server:
        with pytest.raises(OSError):
            _generate(server, [encode_prompts(model)[0]], rank=0)
        deadline = time.monotonic() + 60
        while STOCK_ERROR not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        log = server.log_text()
    assert STOCK_ERROR in log, log[-3000:]
