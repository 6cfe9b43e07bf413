"""The NPU acceptance suite's parts, importable without an NPU.

The two models and the server settings a user passes, GSM8K as sglang scores it, a timed
streaming client, the served-by check on a server's log, and each model's record. ``test_gsm8k``
runs them on an NPU, ``tests/plugin/test_npu_acceptance.py`` checks them on fake logs and
answers, and ``tools/npu_check.py`` reads the model table and the records the tests write.

Nothing here imports torch or sglang at module level: the driver reads the table on hosts where
neither may import.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Where the suite's inputs come from (docs/npu-owner-guide.md, "The NPU acceptance check").
GSM8K_ENV = "FIA_GSM8K_JSONL"
QUESTIONS_ENV = "FIA_GSM8K_QUESTIONS"
# A directory each test writes its model's record (and server log) into; tools/npu_check.py sets
# it and builds its report from what it finds there.
RESULTS_ENV = "FIA_NPU_RESULTS"

# sglang's few-shot GSM8K, the protocol the thresholds below were measured with
# (sglang/test/few_shot_gsm8k.py:32-54 and 77-102: 5 shots, the first N test questions, greedy,
# 512 new tokens, these stop strings, the last integer of the answer); its Ascend tests ask all
# 1319 questions, 128 at a time.
FEW_SHOT = 5
MAX_NEW_TOKENS = 512
STOP = ("Question", "Assistant:", "<|separator|>")
CONCURRENCY = 128
PER_REQUEST_S = 900.0
TOTAL_S = 4 * 3600.0
STARTUP_S = 1800.0  # weights, HCCL at TP=2 and graph capture

# What a user passes on an NPU: everything else (graph mode, the KV pool size, chunked prefill,
# the radix cache) is sglang's own default there.
USER_SERVER_ARGS: Mapping[str, Any] = {
    "attention_backend": "ascend",
    "device": "npu",
    "page_size": 128,
    "mem_fraction_static": 0.8,
}

# What the CPU test bed adds to a process's environment (tests/conftest.py,
# testbed.engine.testbed_env): none of it may reach an NPU server.
TESTBED_ENV = ("SGLANG_USE_CPU_ENGINE", "TORCHDYNAMO_DISABLE")
SUPPORT_DIR = Path(__file__).resolve().parents[1] / "support"

# sglang_ascend_fia/fia_backend/handoff.py ``record``: the line a model handed to sglang's own
# backend logs (the unit tests check it against what ``record`` writes).
HANDOFF_LINE = "sglang-ascend-fia: attention runs on sglang's own AscendAttnBackend, not FIA: "


@dataclass(frozen=True)
class ModelSpec:
    """One acceptance model: where its path comes from, the backend that must serve it, and the
    GSM8K accuracy it must reach."""

    name: str
    path_env: str
    backend: str  # a key of fia_backend.base.SERVED_LOG_PREFIX
    min_accuracy: float
    tp_size: int
    extra_args: Mapping[str, Any]

    def server_args(self) -> dict[str, Any]:
        return {**USER_SERVER_ARGS, "tp_size": self.tp_size, **self.extra_args}

    @property
    def test_id(self) -> str:
        return f"test_gsm8k[{self.name}]"


# The seed's two tests as sglang's Ascend CI runs them, thresholds included: Qwen2.5-7B-Instruct
# bf16 at TP=2, 0.85 (test/srt/ascend/test_ascend_tp2_fia_bf16.py), and the msModelSlim
# DeepSeek-V2-Lite-W8A8 at TP=2, 0.34 (test/srt/ascend/test_ascend_mla_fia_w8a8int8.py). Those
# tests also pass --disable-cuda-graph and --disable-radix-cache; these do not, so graph mode and
# radix hits run.
MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("qwen25-7b-instruct-bf16-tp2", "FIA_QWEN25_7B_PATH", "fia", 0.85, 2, {}),
    ModelSpec(
        "deepseek-v2-lite-w8a8-modelslim-tp2",
        "FIA_DEEPSEEK_V2_LITE_W8A8_PATH",
        "fia-mla",
        0.34,
        2,
        {"quantization": "modelslim", "trust_remote_code": True},
    ),
)


def npu_server_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the plugin on and nothing of the CPU test bed: no CPU-engine switch, no
    dynamo switch, and no test-bed directory (the sgl_kernel and torch_npu stand-ins, the
    test-bed sglang plugin) on ``PYTHONPATH``."""
    env = {k: v for k, v in base.items() if k not in TESTBED_ENV}
    kept = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and not _in_testbed(p)]
    if kept:
        env["PYTHONPATH"] = os.pathsep.join(kept)
    else:
        env.pop("PYTHONPATH", None)
    env["ASCEND_USE_FIA"] = "1"
    return env


def _in_testbed(path: str) -> bool:
    return Path(path).resolve().is_relative_to(SUPPORT_DIR)


# --------------------------------------------------------------------------------- GSM8K
def read_gsm8k(path: Path) -> list[dict[str, str]]:
    """The GSM8K jsonl at ``path`` (``FIA_GSM8K_JSONL``): one object with ``question`` and
    ``answer`` a line; anything else is refused naming the line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{GSM8K_ENV}={str(path)!r} cannot be read: {exc.strerror}") from None
    rows: list[dict[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{GSM8K_ENV}={str(path)!r} line {number}: not JSON ({exc.msg})"
            ) from None
        if not (
            isinstance(row, dict)
            and isinstance(row.get("question"), str)
            and isinstance(row.get("answer"), str)
        ):
            raise ValueError(
                f"{GSM8K_ENV}={str(path)!r} line {number}: expected an object with string "
                "'question' and 'answer' (the GSM8K test split's format)"
            )
        rows.append({"question": row["question"], "answer": row["answer"]})
    if len(rows) <= FEW_SHOT:
        raise ValueError(
            f"{GSM8K_ENV}={str(path)!r} holds {len(rows)} questions; at least {FEW_SHOT + 1} "
            f"are needed ({FEW_SHOT} shots and one to ask)"
        )
    return rows


def question_count(raw: str | None, available: int) -> int:
    """``FIA_GSM8K_QUESTIONS``: how many of the first questions to ask (unset: all of them)."""
    if raw is None or raw == "":
        return available
    if not raw.strip().isdigit() or not 1 <= int(raw) <= available:
        raise ValueError(
            f"{QUESTIONS_ENV}={raw!r} is not a number of questions; use a whole number from 1 to "
            f"{available} (unset: all {available})"
        )
    return int(raw)


def _example(row: Mapping[str, str], with_answer: bool) -> str:
    text = "Question: " + row["question"] + "\nAnswer:"
    return text + " " + row["answer"] if with_answer else text


def prompts(rows: Sequence[Mapping[str, str]], count: int) -> list[str]:
    """The few-shot prompt of each of the first ``count`` questions, as sglang builds it (the
    first questions are the shots, and are asked too: few_shot_gsm8k.py:80-85)."""
    shots = "".join(_example(rows[i], True) + "\n\n" for i in range(FEW_SHOT))
    return [shots + _example(row, False) for row in rows[:count]]


def answer_value(text: str) -> int | None:
    """The last integer in ``text`` with thousands commas dropped, as sglang reads both the
    model's answer and the label (few_shot_gsm8k.py:46-54); None where there is none."""
    numbers = re.findall(r"\d+", text.replace(",", ""))
    return int(numbers[-1]) if numbers else None


def score(
    rows: Sequence[Mapping[str, str]], replies: Sequence[TimedReply | BaseException]
) -> dict[str, Any]:
    """Accuracy over the asked questions; a failed request counts as wrong."""
    correct = invalid = 0
    for row, reply in zip(rows, replies, strict=True):
        got = answer_value(reply.text) if isinstance(reply, TimedReply) else None
        invalid += got is None
        correct += got is not None and got == answer_value(row["answer"])
    return {
        "questions": len(replies),
        "correct": correct,
        "accuracy": correct / len(replies) if replies else 0.0,
        "invalid": invalid / len(replies) if replies else 0.0,
    }


# ----------------------------------------------------------------------- the timed client
@dataclass(frozen=True)
class TimedReply:
    text: str
    completion_tokens: int
    ttft_s: float  # request sent -> first text chunk
    latency_s: float  # request sent -> stream closed


async def _timed_one(client: Any, model: str, prompt: str, timeout: float) -> TimedReply:
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    usage = None
    stream = await client.completions.create(
        model=model,
        prompt=prompt,
        max_tokens=MAX_NEW_TOKENS,
        temperature=0.0,
        stop=list(STOP),
        stream=True,
        stream_options={"include_usage": True},
        timeout=timeout,
    )
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.text:
                first = time.perf_counter() if first is None else first
                parts.append(choice.text)
    ended = time.perf_counter()
    if usage is None:
        raise RuntimeError("the stream closed without its usage chunk: it ended early")
    first = ended if first is None else first
    return TimedReply(
        "".join(parts), int(usage.completion_tokens), first - started, ended - started
    )


async def _drive(
    base_url: str, model: str, texts: Sequence[str], concurrency: int, per_request_s: float
) -> list[TimedReply | BaseException]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url + "/v1", api_key="none", max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def bounded(prompt: str) -> TimedReply:
        async with gate:
            return await asyncio.wait_for(
                _timed_one(client, model, prompt, per_request_s), per_request_s
            )

    try:
        return await asyncio.gather(*(bounded(p) for p in texts), return_exceptions=True)
    finally:
        await client.close()


def run_timed(
    base_url: str,
    model: str,
    texts: Sequence[str],
    *,
    concurrency: int = CONCURRENCY,
    per_request_s: float = PER_REQUEST_S,
    total_s: float = TOTAL_S,
) -> tuple[list[TimedReply | BaseException], float]:
    """Stream every prompt greedily, ``concurrency`` in flight: (replies or errors, wall s)."""
    started = time.perf_counter()
    replies = asyncio.run(
        asyncio.wait_for(_drive(base_url, model, texts, concurrency, per_request_s), total_s)
    )
    return replies, time.perf_counter() - started


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "mean": statistics.fmean(ordered),
        "median": statistics.median(ordered),
        "p99": ordered[math.ceil(0.99 * len(ordered)) - 1],  # nearest rank
    }


def timing(replies: Sequence[TimedReply | BaseException], wall_s: float) -> dict[str, Any]:
    """Output throughput over the whole run (as few_shot_gsm8k.py:123-127 reports it), and TTFT
    and TPOT per request in ms. TPOT is (latency - TTFT) / (tokens - 1), sglang's
    (benchmark/goodput.py:33-35); a one-token answer has none. At ``CONCURRENCY`` in flight,
    TTFT includes the time a request waits for a batch slot."""
    done = [r for r in replies if isinstance(r, TimedReply)]
    tokens = sum(r.completion_tokens for r in done)
    tpot = [
        (r.latency_s - r.ttft_s) * 1000 / (r.completion_tokens - 1)
        for r in done
        if r.completion_tokens > 1
    ]
    return {
        "requests": len(replies),
        "errors": len(replies) - len(done),
        "first_error": next((repr(r) for r in replies if isinstance(r, BaseException)), None),
        "wall_s": wall_s,
        "output_tokens": tokens,
        "output_throughput_tok_s": tokens / wall_s if wall_s > 0 else 0.0,
        "ttft_ms": _stats([r.ttft_s * 1000 for r in done]),
        "tpot_ms": _stats(tpot),
    }


# ------------------------------------------------------------------- the served-by check
# sglang's log line: "[2025-01-02 03:04:05 TP1] message", the rank tags from the scheduler's
# prefix (managers/scheduler.py:6279-6291: DP, PP, ATTN_CP, MOE_DP, TP when tp_size > 1, EP) and
# the format configure_logger sets (utils/common.py:2629-2630; milliseconds with SGLANG_LOG_MS).
_LINE = re.compile(
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?P<tags>(?: [A-Z_]+\d+)*)\] (?P<message>.*)$"
)


def rank_messages(log: str) -> dict[int | None, list[str]]:
    """The messages of each TP rank's log lines; ``None`` holds the lines without a TP tag (the
    main process, and the one scheduler at TP=1)."""
    ranks: dict[int | None, list[str]] = {}
    for line in log.splitlines():
        found = _LINE.match(line)
        if found is None:
            continue
        tp = re.search(r"\bTP(\d+)\b", found["tags"])
        ranks.setdefault(int(tp[1]) if tp else None, []).append(found["message"])
    return ranks


def served_by_problems(log: str, backend: str, tp_size: int) -> list[str]:
    """Why the server whose log is ``log`` was not served by the plugin's ``backend`` on every
    one of its ``tp_size`` ranks (empty: it was). Each rank must log that backend's line; the
    other backend's line and the hand-off line must appear nowhere."""
    # Imported here: the driver reads this module's table where sglang may not import.
    from sglang_ascend_fia.fia_backend.base import SERVED_LOG_PREFIX

    if backend not in SERVED_LOG_PREFIX:
        raise ValueError(
            f"backend={backend!r} is not a backend kind; use one of {sorted(SERVED_LOG_PREFIX)}"
        )
    if not isinstance(tp_size, int) or tp_size < 1:
        raise ValueError(f"tp_size={tp_size!r} is not a TP size; use a whole number >= 1")
    expected = SERVED_LOG_PREFIX[backend]
    ranks = rank_messages(log)
    problems = []
    for rank in range(tp_size):
        messages = ranks.get(rank if tp_size > 1 else None, [])
        if not any(m.startswith(expected) for m in messages):
            where = f"TP rank {rank}" if tp_size > 1 else "the scheduler"
            problems.append(f"{where} logged no {expected!r}... line")
    for other, prefix in SERVED_LOG_PREFIX.items():
        if other != backend and prefix in log:
            problems.append(f"the {other} backend's line {prefix!r}... is in the log")
    problems += [f"handed off: {line.strip()}" for line in log.splitlines() if HANDOFF_LINE in line]
    return problems


# ------------------------------------------------------------------------- the records
def record_problems(spec: ModelSpec, record: Mapping[str, Any]) -> list[str]:
    """Why ``record`` (one test's result) is not a pass for ``spec`` (empty: it is); the test
    asserts this and the driver's report re-checks it."""
    problems = []
    if record.get("error"):
        problems.append(f"the test stopped: {record['error']}")
    problems += [f"served by: {p}" for p in record.get("served_by", ["no served-by check ran"])]
    metrics = record.get("metrics")
    if not metrics:
        problems.append("no requests ran")
    elif metrics["errors"]:
        problems.append(f"{metrics['errors']} requests failed (first: {metrics['first_error']})")
    accuracy = record.get("accuracy")
    if not isinstance(accuracy, int | float) or accuracy < spec.min_accuracy:
        problems.append(
            f"GSM8K accuracy {accuracy} over {record.get('questions')} questions is below "
            f"{spec.min_accuracy}"
        )
    return problems


def write_record(record: Mapping[str, Any], results_dir: str | None) -> None:
    """Write ``record`` as ``<model>.json`` under ``results_dir`` (nothing when unset)."""
    if results_dir:
        path = Path(results_dir) / f"{record['model']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2))


def read_records(results_dir: Path) -> dict[str, dict[str, Any] | None]:
    """Each model's record under ``results_dir``; None for a model whose test wrote none."""
    records: dict[str, dict[str, Any] | None] = {}
    for spec in MODELS:
        path = results_dir / f"{spec.name}.json"
        records[spec.name] = json.loads(path.read_text()) if path.is_file() else None
    return records
