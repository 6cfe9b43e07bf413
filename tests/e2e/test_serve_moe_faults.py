"""A DeepSeek MoE server whose sglang lacks one MoE patch target, each in turn (issue 17).

Each ``patches/moe_*.toml`` entry's target is removed as sglang imports its module, in every
process (the test-bed sitecustomize, ``FIA_TESTBED_REMOVE_ATTRIBUTE``), and the tiny DeepSeek
MoE model is served through ``launch_server`` with ``ASCEND_USE_FIA=1``; attention is sglang's
``torch_native``, so only the MoE is the plugin's. No MoE entry is in a patch group and no
start-up check reads their state (the registry's MoE check asks only for kernels), so none
refuses: every run must serve, its greedy tokens equal to stock sglang's (plugin off, same flags),
with the entry skipped in one warning and the rest of the MoE chain still launched on every MoE
layer.

The removal takes two forms, by what a lookup through the class's MRO then finds:

- ``forward_npu`` (TopK, UnquantizedFusedMoEMethod) is defined on the class alone: it is gone
  (on this CPU host the NPU forward never runs anyway);
- ``forward_native``, ``_init_routing`` and ``_finalize_routing`` are overrides of an abstract
  method their base declares (``BaseFusedOp.forward_native``, ``BaseInitRouting._init_routing``,
  ``BaseFinalizeRouting._finalize_routing``): the lookup finds the base's abstract stub, which
  the plugin treats as missing (``patcher.resolve_container``) instead of wrapping a stub that
  returns None and calling the entry applied. Such a removal breaks stock sglang itself (its
  dispatch calls the stub, which returns None: ``standard.py:289`` fails to unpack it), so there
  is no stock answer to equal and these are not served: the test checks, on sglang's real
  classes, that each is found missing, with the reason the skip line gives.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from testbed.engine import testbed_env
from testbed.models import build_deepseek_v2_lite_moe, encode_prompts
from testbed.server import ServerProcess

from sglang_ascend_fia.manifest import PatchEntry, load_manifest

pytestmark = pytest.mark.engine

NUM_PROMPTS = 4
NEW_TOKENS = 16
GATING = "moe_gating_top_k"  # DeepSeek-V2's TopK is grouped (n_group=1): test_moe_engine
ROUTED_CHAIN = ("moe_init_routing_v2", "swiglu", "moe_finalize_routing")

MOE_ENTRIES = [e for e in load_manifest() if e.source.startswith("moe_")]
# Removing these leaves the abstract base's declaration, which counts as missing (module doc).
OVER_ABSTRACT_BASE = {
    "moe-gating-top-k",
    "moe-routed-experts",
    "moe-npu-init-routing",
    "moe-npu-finalize-routing",
}
_TIMESTAMP = re.compile(r"^\[[^]]*\] ")
# sglang's own HTTP server posts /freeze_gc to itself once it starts and, when uvicorn is not
# listening yet, logs the refused connection with its traceback (http_server.py:2561): a start-up
# race of stock sglang, not a fault of the run.
_SGLANG_RACE = "post-warmup freeze_gc failed"


def _traceback_headers(log: str) -> list[str]:
    """The log line each traceback follows (or starts on), except sglang's start-up race."""
    headers, header = [], ""
    for line in log.splitlines():
        if _TIMESTAMP.match(line):
            header = line
        if "Traceback (most recent call last)" in line and _SGLANG_RACE not in header:
            headers.append(header)
    return headers


def _generate(server: ServerProcess, prompts: list[list[int]]) -> list[list[int]]:
    """Greedy ids through the native ``/generate`` endpoint, one batch request."""
    body = {
        "input_ids": prompts,
        "sampling_params": {"temperature": 0.0, "max_new_tokens": NEW_TOKENS, "ignore_eos": True},
    }
    request = urllib.request.Request(
        server.base_url + "/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as reply:
        return [list(out["output_ids"]) for out in json.loads(reply.read())]


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _serve(
    model: Path, tmp: Path, **env: str | None
) -> tuple[list[list[int]], str, list[dict[str, Any]]]:
    """One server: (greedy ids, its log, its launch-log records)."""
    forwards = tmp / "forwards.jsonl"
    with ServerProcess(
        model,
        tmp / "server.log",
        env=testbed_env(FIA_LAUNCH_LOG=str(forwards), **env),
        attention_backend="torch_native",
    ) as server:
        tokens = _generate(server, encode_prompts(model)[:NUM_PROMPTS])
        assert server.alive(), server.log_tail()
        log = server.log_text()
    return tokens, log, _records(forwards)


@pytest.fixture(scope="module")
def model() -> Path:
    return build_deepseek_v2_lite_moe()


@pytest.fixture(scope="module")
def stock(model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[list[int]]:
    """Stock sglang's tokens (plugin installed, toggle unset), once for the module."""
    tokens, _, records = _serve(model, tmp_path_factory.mktemp("stock"), ASCEND_USE_FIA=None)
    # Really stock: the plugin patched and launched nothing.
    assert records and all(not r["launches"] and not r["patches"] for r in records), records[:1]
    assert [len(t) for t in tokens] == [NEW_TOKENS] * NUM_PROMPTS
    assert len({tuple(t) for t in tokens}) == NUM_PROMPTS, "prompts must not collapse"
    return tokens


def test_the_faults_cover_every_moe_entry() -> None:
    """A new MoE entry must be added here with its expected outcome."""
    names = {e.name for e in MOE_ENTRIES}
    assert len(names) == 6, names
    assert names >= OVER_ABSTRACT_BASE


@pytest.mark.parametrize(
    "entry", [e for e in MOE_ENTRIES if e.name in OVER_ABSTRACT_BASE], ids=lambda e: e.name
)
def test_an_override_removed_down_to_its_abstract_base_is_missing(
    entry: PatchEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from sglang_ascend_fia import patcher

    module = importlib.import_module(entry.module)
    owner_name, attr = entry.target.rsplit(".", 1)
    owner = getattr(module, owner_name)
    assert attr in vars(owner)  # today's sglang overrides it
    assert patcher.resolve_container(entry, module) == (owner, attr)
    monkeypatch.delattr(owner, attr)
    assert getattr(getattr(owner, attr), "__isabstractmethod__", False)  # the base's stub
    with pytest.raises(patcher.TargetMissing, match="only the abstract method"):
        patcher.resolve_container(entry, module)


@pytest.mark.parametrize(
    "entry", [e for e in MOE_ENTRIES if e.name not in OVER_ABSTRACT_BASE], ids=lambda e: e.name
)
def test_moe_serves_stock_tokens_with_a_target_removed(
    entry: PatchEntry, model: Path, stock: list[list[int]], tmp_path: Path
) -> None:
    """Served, not refused, with stock's tokens; the entry skipped with one warning (once per
    process that imported its module); the other MoE hooks still carry every MoE layer."""
    tokens, log, records = _serve(
        model,
        tmp_path,
        ASCEND_USE_FIA="1",
        FIA_TESTBED_REMOVE_ATTRIBUTE=entry.qualified_target,
    )
    assert tokens == stock
    assert _traceback_headers(log) == [], log[-3000:]

    # One warning text (once per process that imported the module) naming the entry.
    skips = {
        _TIMESTAMP.sub("", line)
        for line in log.splitlines()
        if "sglang-ascend-fia: skipping patch" in line
    }
    expected_state = "skipped"
    expected_skips = {
        f"sglang-ascend-fia: skipping patch {entry.name} ({entry.qualified_target}): "
        f"{entry.module} has no attribute '{entry.target}'; sglang keeps its own {entry.target}"
    }
    assert skips == expected_skips, log[-3000:]

    # Every other MoE entry applied, and the MoE chain still launched on every MoE layer.
    config = json.loads((model / "config.json").read_text())
    moe_layers = config["num_hidden_layers"] - config["first_k_dense_replace"]
    assert {r["mode"] for r in records} >= {"EXTEND", "DECODE"}
    for record in records:
        states = {n: s for n, s in record["patches"].items() if n in {e.name for e in MOE_ENTRIES}}
        assert states.pop(entry.name) == expected_state, record["patches"]
        assert set(states.values()) == {"applied"}, states
        launches = record["launches"]
        for op in (GATING, *ROUTED_CHAIN):
            assert launches.get(op) == moe_layers, (op, launches)
        assert launches.get("grouped_matmul") == 2 * moe_layers, launches
