"""The engine decode-throughput driver ``bench.e2e_bench`` (Qwen2) and ``bench.mla_bench``
(DeepSeek) share: the FIA plugin against stock sglang, side by side.

Both engines run in child processes of this one, with identical engine arguments except the
attention backend: ``ascend`` with ``ASCEND_USE_FIA=1`` (the plugin's FIA backend on the
reference ops) and stock ``torch_native``. Decode throughput counts decode steps only: each
round times one greedy generate call of ``new_tokens`` tokens and one of a single token (the
prefill and its first token) on other prompts of the same lengths, and takes the
``batch * (new_tokens - 1)`` tokens the first call decoded over the difference of the two
times; best of ``rounds`` rounds. Both engines stay up and the rounds alternate between them, so
background load on a shared machine hits both alike instead of skewing the ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from testbed.engine import EngineProcess, testbed_env

BACKENDS = ("fia", "torch_native")


def distinct_prompts(batch: int, stride: int, length: int = 16, offset: int = 0) -> list[list[int]]:
    """Distinct short prompts (ids below the tiny vocab), so no radix-cache sharing; another
    ``offset`` gives another set of the same lengths."""
    return [
        [(stride * b + 5 * i + 3 * offset) % 500 + 4 for i in range(length)] for b in range(batch)
    ]


def decode_throughput(
    model: str,
    engine_args: dict[str, Any],
    batches: Sequence[int],
    new_tokens: int,
    rounds: int,
    stride: int,
) -> dict[str, dict[int, float]]:
    """Generated tokens per second per backend (``BACKENDS``) and batch size, best of
    ``rounds``."""
    figures: dict[str, dict[int, float]] = {name: {} for name in BACKENDS}
    with (
        EngineProcess(
            model, env=testbed_env(ASCEND_USE_FIA="1"), attention_backend="ascend", **engine_args
        ) as fia,
        EngineProcess(
            model,
            env=testbed_env(ASCEND_USE_FIA=None),
            attention_backend="torch_native",
            **engine_args,
        ) as native,
    ):
        engines = dict(zip(BACKENDS, (fia, native), strict=True))
        for engine in engines.values():
            engine.generate(distinct_prompts(2, stride), 8)  # warm-up
        for batch in batches:
            for round_ in range(rounds):
                for name, engine in engines.items():
                    seconds = _decode_seconds(engine, batch, new_tokens, stride, round_)
                    if seconds is None:
                        continue  # the noise was larger than the decode: no figure this round
                    rate = batch * (new_tokens - 1) / seconds
                    figures[name][batch] = max(figures[name].get(batch, 0.0), rate)
    return figures


def _decode_seconds(
    engine: EngineProcess, batch: int, new_tokens: int, stride: int, round_: int
) -> float | None:
    """Seconds of the ``new_tokens - 1`` decode steps of one generate call: the call minus a
    one-token call (prefill and first token) on distinct prompts of the same lengths, so the
    radix cache serves neither. None when the difference is not positive."""
    full = engine.generate(distinct_prompts(batch, stride, offset=2 * round_ + 1), new_tokens)
    generated = sum(len(ids) for ids in full["output_ids"])
    assert generated == batch * new_tokens, generated
    prefill = engine.generate(distinct_prompts(batch, stride, offset=2 * round_ + 2), 1)
    seconds = float(full["elapsed_s"]) - float(prefill["elapsed_s"])
    return seconds if seconds > 0 else None


def ratio_figures(prefix: str, figures: dict[str, dict[int, float]]) -> dict[str, float]:
    """``{prefix}_decode_tok_s_{backend}_b{B}`` and ``{prefix}_decode_ratio_b{B}`` (FIA over
    stock) for every batch size measured."""
    fia, native = figures["fia"], figures["torch_native"]
    out: dict[str, float] = {}
    for batch in fia:
        out[f"{prefix}_decode_tok_s_fia_b{batch}"] = fia[batch]
        out[f"{prefix}_decode_tok_s_torch_native_b{batch}"] = native[batch]
        out[f"{prefix}_decode_ratio_b{batch}"] = fia[batch] / native[batch]
    return out
