"""GSM8K accuracy of the real server with the plugin on Ascend NPUs (opt-in, marker ``npu``).

The seed's two tests, as sglang's Ascend CI runs them (``acceptance.MODELS``): each starts
``sglang.launch_server`` with ``ASCEND_USE_FIA=1`` and only the flags a user passes (sglang's NPU
defaults otherwise, graph mode included), checks that the plugin's own backend served every TP
rank, and asks GSM8K as sglang's few-shot script does. Model paths and the GSM8K test jsonl come
from environment variables (docs/npu-owner-guide.md, "The NPU acceptance check"); nothing is
downloaded. ``make npu-check`` runs this module and collects each test's record.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from testbed.server import ServerError, ServerProcess

from npu.acceptance import (
    GSM8K_ENV,
    MODELS,
    QUESTIONS_ENV,
    RESULTS_ENV,
    STARTUP_S,
    ModelSpec,
    npu_server_env,
    prompts,
    question_count,
    read_gsm8k,
    record_problems,
    run_timed,
    score,
    served_by_problems,
    timing,
    write_record,
)

pytestmark = pytest.mark.npu


def _env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set (path to a local copy)")
    return Path(value)


def _serve_and_ask(spec: ModelSpec, model: Path, tmp_path: Path) -> dict[str, Any]:
    rows = read_gsm8k(_env_path(GSM8K_ENV))
    asked = rows[: question_count(os.environ.get(QUESTIONS_ENV), len(rows))]
    record: dict[str, Any] = {
        "model": spec.name,
        "path": str(model),
        "backend": spec.backend,
        "tp_size": spec.tp_size,
        "server_args": spec.server_args(),
        "min_accuracy": spec.min_accuracy,
    }
    log_path = tmp_path / "server.log"
    try:
        with ServerProcess(
            model,
            log_path,
            env=npu_server_env(os.environ),
            startup_timeout=STARTUP_S,
            testbed_defaults=False,
            **spec.server_args(),
        ) as server:
            replies, wall_s = run_timed(server.base_url, str(model), prompts(rows, len(asked)))
            log = server.log_text()
    except (ServerError, TimeoutError) as exc:
        record["error"] = f"{type(exc).__name__}: {str(exc)[-4000:]}"
        return record
    finally:
        # The log travels with the record: the report names it for whoever reads it.
        results = os.environ.get(RESULTS_ENV)
        if results and log_path.exists():
            Path(results).mkdir(parents=True, exist_ok=True)
            record["server_log"] = str(shutil.copy(log_path, Path(results) / f"{spec.name}.log"))
    record["served_by"] = served_by_problems(log, spec.backend, spec.tp_size)
    record.update(score(asked, replies))
    record["metrics"] = timing(replies, wall_s)
    return record


@pytest.mark.parametrize("spec", MODELS, ids=[spec.name for spec in MODELS])
def test_gsm8k(spec: ModelSpec, tmp_path: Path) -> None:
    record = _serve_and_ask(spec, _env_path(spec.path_env), tmp_path)
    problems = record_problems(spec, record)
    record["passed"] = not problems
    record["problems"] = problems
    write_record(record, os.environ.get(RESULTS_ENV))
    assert not problems, problems
