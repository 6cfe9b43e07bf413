"""An OpenAI-client load against a real sglang server: the workload, the driver, the checks.

The same requests are sent 32 at a time and then one at a time; greedy decoding with
``ignore_eos`` makes every answer a fixed-length function of its prompt, so the two runs must
agree exactly, and every answer must have exactly ``max_tokens`` tokens (a truncated stream
cannot hide).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.models import token_stream


@dataclass(frozen=True)
class LoadRequest:
    kind: str  # "chat" or "completion"
    stream: bool
    prompt: str
    max_tokens: int


@dataclass
class LoadReply:
    text: str
    completion_tokens: int
    prompt_tokens: int
    cached_tokens: int
    finish_reason: str | None


# The load's server: page 128, prompts longer than one 256-token prefill chunk, and a KV pool of
# 24 pages that the running requests share (32 of them would need ~50 if nothing were shared).
PAGE = 128
CHUNK = 256
LOAD_SERVER_ARGS: dict[str, Any] = {
    "page_size": PAGE,
    "chunked_prefill_size": CHUNK,
    "max_total_tokens": 24 * PAGE,
}
# sglang admits a request when its prompt plus its expected new tokens fit the pool; the
# expectation is max_tokens clipped to this (managers/schedule_policy.py:89-91, 785-794;
# 4096 by default). At 4 it admits requests on their prompt alone, so requests whose answers
# need fresh pages run the pool dry mid-decode and the scheduler retracts some and re-runs them
# later: memory pressure by sglang's own rule, not its SGLANG_TEST_RETRACT debug mode.
LOAD_SERVER_ENV = {"SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION": "4"}


def _decode(model_dir: Path, ids: list[int]) -> str:
    from transformers import AutoTokenizer

    return str(AutoTokenizer.from_pretrained(model_dir).decode(ids))


def build_requests(
    model_dir: Path, count: int, long_tokens: int, seed: int = 0
) -> list[LoadRequest]:
    """``count`` requests: chat/completion x stream/not, four shared prefixes, mixed lengths.

    A quarter of the prompts are longer than ``long_tokens`` (pass chunked_prefill_size); the
    rest share one of four prefixes (radix hits) and differ in a short tail.
    """
    prefixes = [
        _decode(model_dir, token_stream(model_dir, 260, offset=7 + 31 * i)) for i in range(4)
    ]
    longs = [
        _decode(model_dir, token_stream(model_dir, long_tokens + 40 + 13 * i, offset=3 + 11 * i))
        for i in range(4)
    ]
    requests = []
    for i in range(count):
        shape = (i + seed) % 4
        if shape == 0:
            prompt = longs[(i // 4) % 4] + f" {i}"
        else:
            tail = _decode(model_dir, token_stream(model_dir, 2 + (i * 7) % 23, offset=i * 5))
            prompt = prefixes[i % 4] + tail
        kind = "chat" if (i // 2) % 2 else "completion"
        requests.append(LoadRequest(kind, bool(i % 2), prompt, 2 + (i * 5) % 11))
    return requests


def build_page_crossers(model_dir: Path, count: int, page: int) -> list[LoadRequest]:
    """``count`` requests whose prompt fits in one page and whose answer runs into the next.

    Sent all at once, sglang admits each on its prompt page plus the few tokens
    ``LOAD_SERVER_ENV`` lets it reserve, so a pool with fewer free pages than ``2 * count`` runs
    out mid-decode, when they all need their second page: the scheduler retracts some running
    requests and re-runs them once others finish.
    """
    requests = []
    for i in range(count):
        # Completions of 84-89 prompt tokens (measured) + 48 new: one page, then two. (A chat
        # template adds enough tokens here to push the prompt itself past the page.)
        prompt = _decode(model_dir, token_stream(model_dir, page - 40 + i % 8, offset=17 * i + 5))
        requests.append(LoadRequest("completion", bool(i % 2), prompt, 48))
    return requests


async def _one(
    client: Any, model: str, req: LoadRequest, timeout: float, ignore_eos: bool
) -> LoadReply:
    extra = {"ignore_eos": ignore_eos}
    common: dict[str, Any] = {
        "model": model,
        "max_tokens": req.max_tokens,
        "temperature": 0.0,
        "extra_body": extra,
        "timeout": timeout,
    }
    if req.stream:
        common["stream"] = True
        common["stream_options"] = {"include_usage": True}
    if req.kind == "chat":
        call = client.chat.completions.create(
            messages=[{"role": "user", "content": req.prompt}], **common
        )
    else:
        call = client.completions.create(prompt=req.prompt, **common)
    if not req.stream:
        reply = await call
        choice = reply.choices[0]
        text = choice.message.content if req.kind == "chat" else choice.text
        return _reply(text or "", reply.usage, choice.finish_reason)
    parts: list[str] = []
    usage = None
    finish = None
    async for chunk in await call:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            piece = choice.delta.content if req.kind == "chat" else choice.text
            parts.append(piece or "")
            finish = choice.finish_reason or finish
    return _reply("".join(parts), usage, finish)


def _reply(text: str, usage: Any, finish: str | None) -> LoadReply:
    if usage is None:
        raise RuntimeError("reply carried no usage: the stream ended early")
    details = getattr(usage, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
    return LoadReply(text, usage.completion_tokens, usage.prompt_tokens, cached, finish)


async def _drive(
    base_url: str,
    model: str,
    requests: list[LoadRequest],
    concurrency: int,
    per_request_s: float,
    ignore_eos: bool,
) -> list[LoadReply | BaseException]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url + "/v1", api_key="none", max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def bounded(req: LoadRequest) -> LoadReply:
        async with gate:
            return await asyncio.wait_for(
                _one(client, model, req, per_request_s, ignore_eos), per_request_s
            )

    try:
        return await asyncio.gather(*(bounded(r) for r in requests), return_exceptions=True)
    finally:
        await client.close()


def run_load(
    base_url: str,
    model: str,
    requests: list[LoadRequest],
    *,
    concurrency: int,
    per_request_s: float = 120.0,
    total_s: float = 600.0,
    ignore_eos: bool = True,
) -> tuple[list[LoadReply | BaseException], float]:
    """Send every request, ``concurrency`` in flight; (replies or exceptions, wall seconds)."""
    started = time.perf_counter()
    replies = asyncio.run(
        asyncio.wait_for(
            _drive(base_url, model, requests, concurrency, per_request_s, ignore_eos), total_s
        )
    )
    return replies, time.perf_counter() - started


def problems(requests: list[LoadRequest], replies: list[LoadReply | BaseException]) -> list[str]:
    """Every error, dropped or truncated reply, one line each (empty: all good)."""
    found = []
    for i, (req, rep) in enumerate(zip(requests, replies, strict=True)):
        if isinstance(rep, BaseException):
            found.append(f"#{i} {req.kind} stream={req.stream}: {type(rep).__name__}: {rep}")
        elif rep.completion_tokens != req.max_tokens or rep.finish_reason != "length":
            found.append(
                f"#{i} {req.kind} stream={req.stream}: {rep.completion_tokens}/{req.max_tokens}"
                f" tokens, finish_reason={rep.finish_reason}"
            )
    return found


def answer_texts(replies: list[LoadReply | BaseException]) -> list[str]:
    """Each reply's text; an exception stands for itself, so it never equals an answer."""
    return [r.text if isinstance(r, LoadReply) else f"<{r!r}>" for r in replies]


def generated_tokens(replies: list[LoadReply | BaseException]) -> int:
    """Completion tokens of every reply that arrived."""
    return sum(r.completion_tokens for r in replies if isinstance(r, LoadReply))


_RETRACTION = re.compile(r"KV cache pool is full\. Retract requests\. #retracted_reqs: (\d+)")


def retracted_requests(server_log: str) -> int:
    """Requests the scheduler retracted for want of KV pages, from its warnings
    (``managers/scheduler.py:4525-4537``: ``KV cache pool is full. Retract requests. ...``)."""
    return sum(int(n) for n in _RETRACTION.findall(server_log))
