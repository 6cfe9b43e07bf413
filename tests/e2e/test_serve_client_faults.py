"""Faults against one real ``sglang.launch_server`` with the plugin.

Client-side: a client that disconnects mid-stream, ``max_tokens`` 0 and absurdly large, an empty
prompt, a prompt longer than the context. The server stays up and later requests answer exactly
as before the faults.

sglang-side, in the same server: a patch target missing from sglang. The test-bed
``sitecustomize`` deletes ``DeepseekV2AttentionMLA.forward_prepare`` as sglang imports its
module (every model module is imported at start-up, so also in this Qwen2 server), as a renamed
method in a newer sglang would; the plugin skips that one entry with a warning, patches the rest,
and the server serves. ``doctor`` under the same fixture lists the entry as skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from testbed.engine import testbed_env
from testbed.load import build_requests, problems, run_load
from testbed.models import build_qwen2
from testbed.server import ServerProcess

pytestmark = pytest.mark.engine

CONTEXT = 1024
MISSING_MODULE = "sglang.srt.models.deepseek_v2"
MISSING_TARGET = "DeepseekV2AttentionMLA.forward_prepare"
MISSING_REASON = f"{MISSING_MODULE} has no attribute '{MISSING_TARGET}'"


def _missing_target_env() -> dict[str, str]:
    return testbed_env(
        ASCEND_USE_FIA="1", FIA_TESTBED_REMOVE_ATTRIBUTE=f"{MISSING_MODULE}:{MISSING_TARGET}"
    )


def test_server_survives_client_faults(tmp_path: Path) -> None:
    model = build_qwen2()
    probes = build_requests(model, 8, long_tokens=256)
    env = _missing_target_env()
    with ServerProcess(
        model,
        tmp_path / "server.log",
        env=env,
        attention_backend="ascend",
        page_size=128,
        context_length=CONTEXT,
    ) as server:
        before, _ = run_load(server.base_url, str(model), probes, concurrency=4, total_s=300)
        assert problems(probes, before) == []
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
        # A client that reads two chunks of a long stream and hangs up.
        stream = client.completions.create(
            model=str(model),
            prompt=probes[1].prompt,
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
                client.completions.create(model=str(model), timeout=60, **kwargs)
            except openai.BadRequestError as exc:
                rejected.append(str(exc))
        # An over-long prompt is refused with a message naming the context length.
        assert any(str(CONTEXT) in message for message in rejected), rejected
        after, _ = run_load(server.base_url, str(model), probes, concurrency=4, total_s=300)
        assert server.alive()
        log = server.log_text()
    assert problems(probes, after) == []
    assert [r.text for r in after] == [r.text for r in before]
    # The missing target: one warning per process that imported its module, naming the entry
    # and why; every other patch still applies (FIA served this Qwen2).
    skips = [line for line in log.splitlines() if "sglang-ascend-fia: skipping patch" in line]
    assert skips, log[-3000:]
    for line in skips:
        assert "skipping patch fia-mla-deepseek-prepare" in line, line
        assert MISSING_REASON in line and "sglang keeps its own" in line, line
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
    assert states.pop("fia-mla-deepseek-prepare") == ("skipped", MISSING_REASON)
    assert {state for state, _ in states.values()} == {"applied"}, states
