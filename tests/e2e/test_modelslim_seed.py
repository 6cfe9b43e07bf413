"""The seed's W8A8 deployment in small: a DeepSeek-V2-Lite-shaped model (no q_lora, 16 heads,
kv_lora 512, rope 64, softmax MoE) converted by ``quantize-w8a8 --format modelslim`` with
msModelSlim's DeepSeek mix (attention ``W8A8`` static, MLP and experts ``W8A8_DYNAMIC``), served
with ``--quantization modelslim`` and the plugin's FIA MLA backend and split pool, by
``sglang.Engine`` at TP=1 and by ``sglang.launch_server`` at ``--tp-size 2`` (gloo).

The oracle is HF fp32 on the dequantised checkpoint, teacher-forced along each engine's own
tokens, with ``test_w8a8_engine``'s bounds. TP=2 is also scored along TP=1's tokens (input
log-probs through ``/generate``): the two differ only by the order of bfloat16 sums across the
all-reduce, so their log-probs agree within ``TP_LOGPROB_TOL``; exact equality is not what
either sglang or an NPU gives. Every rank logs its forwards: both ranks are served by the FIA MLA
backend with 8 of the 16 heads, and every layer runs its own scheme's int8 ops.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from testbed.engine import EngineProcess, testbed_env
from testbed.models import build_deepseek_v2_lite, encode_prompts
from testbed.oracle import hf_logprobs_along
from testbed.quantized import build_w8a8_pair
from testbed.server import ServerProcess

from e2e.fia_common import ENGINE_ARGS
from e2e.test_w8a8_engine import (
    LOGPROB_TOL,
    MEAN_LOGPROB_TOL,
    MIN_ARGMAX_AGREEMENT,
    NEAR_TIE_TOL,
    W8A8_MOE_CHAIN,
)

pytestmark = pytest.mark.engine

NEW_TOKENS = 24
NUM_PROMPTS = 6
STATIC_ATTENTION = ("model.layers.*.self_attn.*",)
# Per layer, without q_lora: q_proj, kv_a_proj_with_mqa and o_proj; kv_b_proj also in a prefill
# (the MLA backend's prefill expands the latent through it; decode uses the absorbed w_kc/w_vc).
ATTENTION_LINEARS = {"EXTEND": 4, "DECODE": 3, "MIXED": 4}
MLP_LINEARS = 2  # the dense MLP's or the shared experts' gate_up and down
# |log-prob| between TP=2 and TP=1 along the same tokens (bfloat16 all-reduce order).
TP_LOGPROB_TOL = 0.1
HEADS = 16


def _model() -> Path:
    return build_deepseek_v2_lite(
        num_hidden_layers=3,
        n_routed_experts=16,
        n_shared_experts=2,
        num_experts_per_tok=4,
        norm_topk_prob=False,
    )


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _post(server: ServerProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        server.base_url + "/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as reply:
        out: list[dict[str, Any]] = json.loads(reply.read())
        return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    src = _model()
    model, dequantised = build_w8a8_pair(src, fmt="modelslim", static=STATIC_ATTENTION)
    prompts = encode_prompts(src)[:NUM_PROMPTS]
    tmp = tmp_path_factory.mktemp("modelslim_seed")
    args = {"attention_backend": "ascend", "dtype": "bfloat16", "quantization": "modelslim"}

    tp1_log = tmp / "tp1.jsonl"
    env = testbed_env(ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(tp1_log))
    with EngineProcess(model, env=env, **args, **ENGINE_ARGS) as engine:
        tp1 = engine.generate(prompts, NEW_TOKENS, return_logprob=True)
    tp1_tokens: list[list[int]] = tp1["output_ids"]

    tp2_log = tmp / "tp2.jsonl"
    # One core per rank: sglang's CPU thread binding needs it beyond one rank per NUMA node.
    env = testbed_env(
        ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(tp2_log), SGLANG_CPU_OMP_THREADS_BIND="0|1"
    )
    greedy = {"temperature": 0.0, "max_new_tokens": NEW_TOKENS, "ignore_eos": True}
    with ServerProcess(model, tmp / "server.log", env=env, tp_size=2, **args, **ENGINE_ARGS) as s:
        tp2 = _post(s, {"input_ids": prompts, "sampling_params": greedy, "return_logprob": True})
        along = _post(
            s,
            {
                "input_ids": [p + t for p, t in zip(prompts, tp1_tokens, strict=True)],
                "sampling_params": {**greedy, "max_new_tokens": 1},
                "return_logprob": True,
                "logprob_start_len": [len(p) - 1 for p in prompts],
            },
        )
        server_log = s.log_text()
    yield {
        "model": model,
        "dequantised": dequantised,
        "prompts": prompts,
        "tp1": (tp1_tokens, [m["output_token_logprobs"] for m in tp1["meta"]]),
        "tp2": (
            [list(o["output_ids"]) for o in tp2],
            [o["meta_info"]["output_token_logprobs"] for o in tp2],
        ),
        "tp2_along_tp1": [o["meta_info"]["input_token_logprobs"] for o in along],
        "records": {1: _records(tp1_log), 2: _records(tp2_log)},
        "server_log": server_log,
    }


def _tracks_hf(run: dict[str, Any], tp: int) -> str:
    """Assert ``test_w8a8_engine``'s bounds against HF along TP=``tp``'s own tokens."""
    tokens, logprobs = run[f"tp{tp}"]
    hf = hf_logprobs_along(run["dequantised"], run["prompts"], tokens)
    errors: list[float] = []
    near_tie: list[float] = []
    agree = 0
    for scores, chosen, served_lp in zip(hf, tokens, logprobs, strict=True):
        assert [entry[1] for entry in served_lp] == chosen
        served = torch.tensor([entry[0] for entry in served_lp], dtype=torch.float64)
        hf_lp = scores[torch.arange(len(chosen)), torch.tensor(chosen)]
        errors += (served - hf_lp).abs().tolist()
        near_tie += (scores.max(dim=-1).values - hf_lp).tolist()
        agree += int((scores.argmax(dim=-1) == torch.tensor(chosen)).sum())
    agreement = agree / (NUM_PROMPTS * NEW_TOKENS)
    measured = (
        f"TP={tp}: max |logprob err| {max(errors):.4f}, mean {sum(errors) / len(errors):.4f}; "
        f"max near-tie gap {max(near_tie):.4f}; argmax agreement {agreement:.3f}"
    )
    print(measured)
    assert max(errors) <= LOGPROB_TOL, measured
    assert sum(errors) / len(errors) <= MEAN_LOGPROB_TOL, measured
    assert max(near_tie) <= NEAR_TIE_TOL, measured
    assert agreement >= MIN_ARGMAX_AGREEMENT, measured
    return measured


@pytest.mark.parametrize("tp", [1, 2])
def test_each_tp_size_tracks_the_dequantised_model(runs: dict[str, Any], tp: int) -> None:
    _tracks_hf(runs, tp)


def test_tp2_scores_tp1s_tokens_as_tp1_does(runs: dict[str, Any]) -> None:
    tokens, tp1_lp = runs["tp1"]
    diffs: list[float] = []
    for chosen, mine, theirs in zip(tokens, tp1_lp, runs["tp2_along_tp1"], strict=True):
        # input_token_logprobs from logprob_start_len = len(prompt) - 1: the prompt's last
        # token (no log-prob: nothing before it in the range), then the continuation.
        assert theirs[0][0] is None, theirs[0]
        theirs = theirs[1 : len(chosen) + 1]
        assert [entry[1] for entry in theirs] == chosen
        diffs += [abs(a[0] - b[0]) for a, b in zip(mine, theirs, strict=True)]
    measured = f"max |TP2 - TP1| logprob {max(diffs):.4f}, mean {sum(diffs) / len(diffs):.5f}"
    print(measured)
    assert max(diffs) <= TP_LOGPROB_TOL, measured


@pytest.mark.parametrize("tp", [1, 2])
def test_every_rank_runs_fia_mla_and_each_layers_scheme(runs: dict[str, Any], tp: int) -> None:
    records = runs["records"][tp]
    config = json.loads((runs["model"] / "config.json").read_text())
    layers = config["num_hidden_layers"]
    moe_layers = layers - config["first_k_dense_replace"]
    by_rank: dict[int, set[str]] = {}
    for record in records:
        by_rank.setdefault(record["pid"], set()).add(record["mode"])
        served = record["served_by"]
        assert served["attn_backend"] == "AscendFIAMLABackend", served
        assert served["kv_pool"] == "FIAMLATokenToKVPool", served
        assert served["attention"]["q_heads"] == HEADS // tp, served
        launches = record["launches"]
        static = ATTENTION_LINEARS[record["mode"]] * layers
        assert launches.get("quantize") == static, (record["mode"], launches)
        assert launches.get("dynamic_quant") == MLP_LINEARS * layers, launches
        assert launches.get("quant_matmul") == static + MLP_LINEARS * layers, launches
        for op in W8A8_MOE_CHAIN:
            assert launches.get(op) == moe_layers, (op, launches)
    assert len(by_rank) == tp, by_rank
    for modes in by_rank.values():
        assert modes >= {"EXTEND", "DECODE"}, by_rank
    if tp == 2:
        assert "FIA MLA attention backend" in runs["server_log"]
