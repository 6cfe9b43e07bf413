"""GSM8K accuracy of the real server with the plugin on Ascend NPUs (opt-in, marker ``npu``).

Model paths and the GSM8K test jsonl come from environment variables (docs/npu-owner-guide.md,
"The opt-in accuracy suite"); nothing is downloaded. Each test starts ``sglang.launch_server``
with ``ASCEND_USE_FIA=1`` and asks the first ``FIA_GSM8K_QUESTIONS`` questions (default 200)
greedily, few-shot.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from testbed.engine import PYTHONPATH_DIR
from testbed.load import LoadRequest, run_load
from testbed.server import ServerProcess

pytestmark = pytest.mark.npu

FEW_SHOT = 5
ANSWER = re.compile(r"-?[\d,]*\.?\d+")


def _env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set (path to a local copy)")
    return Path(value)


def _number(text: str) -> str | None:
    found = ANSWER.findall(text.split("####")[-1] if "####" in text else text)
    return found[-1].replace(",", "").rstrip(".") if found else None


def _gsm8k_accuracy(model: Path, tmp_path: Path, **server_args: Any) -> float:
    rows = [json.loads(x) for x in _env_path("FIA_GSM8K_JSONL").read_text().splitlines() if x]
    count = int(os.environ.get("FIA_GSM8K_QUESTIONS", "200"))
    shots = "".join(
        f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in rows[:FEW_SHOT]
    )
    questions = rows[FEW_SHOT : FEW_SHOT + count]
    requests = [
        LoadRequest("completion", False, shots + f"Question: {r['question']}\nAnswer:", 256)
        for r in questions
    ]
    # The real NPU stack: no CPU-engine switch, no test-only sgl_kernel stand-in on the path.
    env = {**os.environ, "ASCEND_USE_FIA": "1"}
    env.pop("SGLANG_USE_CPU_ENGINE", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(PYTHONPATH_DIR)
    )
    npu_args = {"device": "npu", "dtype": "bfloat16", "mem_fraction_static": 0.8}
    with ServerProcess(
        model,
        tmp_path / "server.log",
        env=env,
        startup_timeout=1200,
        attention_backend="ascend",
        page_size=128,
        max_total_tokens=None,
        chunked_prefill_size=None,
        **{**npu_args, **server_args},
    ) as server:
        assert "sglang-ascend-fia: FIA attention backend" in server.log_text()
        replies, _ = run_load(
            server.base_url, str(model), requests, concurrency=32, total_s=3600, ignore_eos=False
        )
    right = sum(
        not isinstance(rep, BaseException)
        and _number(rep.text.split("Question:")[0]) == _number(row["answer"])
        for rep, row in zip(replies, questions, strict=True)
    )
    return right / len(questions)


def test_qwen25_7b_bf16_tp2_gsm8k(tmp_path: Path) -> None:
    model = _env_path("FIA_QWEN25_7B_PATH")
    accuracy = _gsm8k_accuracy(model, tmp_path, tp_size=2)
    assert accuracy >= float(os.environ.get("FIA_QWEN25_7B_MIN_ACC", "0.80")), accuracy


def test_deepseek_v2_lite_w8a8_gsm8k(tmp_path: Path) -> None:
    model = _env_path("FIA_DEEPSEEK_V2_LITE_W8A8_PATH")
    accuracy = _gsm8k_accuracy(model, tmp_path, quantization="modelslim", trust_remote_code=True)
    assert accuracy >= float(os.environ.get("FIA_DEEPSEEK_V2_LITE_MIN_ACC", "0.34")), accuracy
