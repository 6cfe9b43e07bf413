"""The plugin installed beside stock sglang: a real Engine, real Qwen2 code, HF as the oracle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from testbed.engine import EngineProcess, start_error, testbed_env
from testbed.models import encode_prompts
from testbed.oracle import hf_greedy

pytestmark = pytest.mark.engine

NEW_TOKENS = 16


@pytest.fixture(scope="module")
def prompts(qwen2: Path) -> list[list[int]]:
    return encode_prompts(qwen2)[:8]


@pytest.fixture(scope="module")
def hf_tokens(qwen2: Path, prompts: list[list[int]]) -> list[list[int]]:
    return hf_greedy(qwen2, prompts, NEW_TOKENS)


def test_toggle_off_engine_matches_hf(
    qwen2: Path, prompts: list[list[int]], hf_tokens: list[list[int]], tmp_path: Path
) -> None:
    log = tmp_path / "processes.jsonl"
    env = testbed_env(ASCEND_USE_FIA=None, FIA_TESTBED_PROCESS_LOG=str(log))
    with EngineProcess(qwen2, env=env, attention_backend="torch_native") as engine:
        out = engine.generate(prompts, NEW_TOKENS)
    assert out["output_ids"] == hf_tokens
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records and not any(r["active"] for r in records)


def test_plugin_loads_and_activates_in_every_sglang_process(
    qwen2: Path, prompts: list[list[int]], hf_tokens: list[list[int]], tmp_path: Path
) -> None:
    """sglang calls the entry point in the main process, the scheduler and the detokenizer."""
    log = tmp_path / "processes.jsonl"
    env = testbed_env(ASCEND_USE_FIA="1", FIA_TESTBED_PROCESS_LOG=str(log))
    with EngineProcess(qwen2, env=env, attention_backend="torch_native") as engine:
        out = engine.generate(prompts, NEW_TOKENS)
    # torch_native is untouched by the plugin, so the tokens are still HF's.
    assert out["output_ids"] == hf_tokens
    records = [json.loads(line) for line in log.read_text().splitlines()]
    callers = {r["caller"].split(":")[1] for r in records}
    assert {"__init__", "run_scheduler_process", "run_detokenizer_process"} <= callers, records
    assert all(r["active"] for r in records), records
    assert len({r["pid"] for r in records}) >= 3


def test_invalid_toggle_stops_a_real_engine(qwen2: Path) -> None:
    """The fatal path through sglang.Engine: exit status 1 and the one-line message."""
    script = (
        "import sglang\n"
        f"sglang.Engine(model_path={str(qwen2)!r}, device='cpu', attention_backend='torch_native',"
        " disable_cuda_graph=True, mem_fraction_static=0.05, skip_server_warmup=True)\n"
        "print('ENGINE STARTED')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=testbed_env(ASCEND_USE_FIA="ture"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "ENGINE STARTED" not in proc.stdout
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line == (
        "ASCEND_USE_FIA='ture' is not a boolean; use 1/true or 0/false (did you mean 'true'?)"
    )


def test_invalid_toggle_error_reaches_engine_caller(qwen2: Path) -> None:
    error = start_error(qwen2, env=testbed_env(ASCEND_USE_FIA="yes"))
    assert error is not None, "the engine started with ASCEND_USE_FIA='yes'"
    # The caller sees the one-line reason first; the scheduler's log tail follows it.
    assert error.split("\nlog tail:")[0] == (
        "ToggleError: ASCEND_USE_FIA='yes' is not a boolean; use 1/true or 0/false "
        "(did you mean 'true'?)"
    )
