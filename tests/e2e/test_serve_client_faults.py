"""Client-side faults against one real ``sglang.launch_server`` with the plugin: a client that
disconnects mid-stream, ``max_tokens`` 0 and absurdly large, an empty prompt, a prompt longer
than the context. The server stays up and later requests answer exactly as before the faults.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from testbed.engine import testbed_env
from testbed.load import build_requests, problems, run_load
from testbed.models import build_qwen2
from testbed.server import ServerProcess

pytestmark = pytest.mark.engine

CONTEXT = 1024


def test_server_survives_client_faults(tmp_path: Path) -> None:
    model = build_qwen2()
    probes = build_requests(model, 8, long_tokens=256)
    env = testbed_env(ASCEND_USE_FIA="1")
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
    assert problems(probes, after) == []
    assert [r.text for r in after] == [r.text for r in before]
