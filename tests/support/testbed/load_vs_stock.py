"""The serving load through the plugin and through stock sglang, side by side in one run.

Two real ``sglang.launch_server`` processes with identical flags except the attention backend:
``ascend`` with ``ASCEND_USE_FIA=1`` (the plugin's FIA backend on the reference ops) and stock
``torch_native`` with the plugin off. Both stay up and the rounds alternate between them, so
background load on a shared machine hits both alike. Each round starts from a cold radix
cache, after a short unmeasured warm-up. Used by ``make bench`` (256 requests, 32 at a time)
and ``make demo`` (the test's 64 at 16).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.engine import testbed_env
from testbed.load import (
    CHUNK,
    LOAD_SERVER_ARGS,
    LOAD_SERVER_ENV,
    answer_texts,
    build_requests,
    generated_tokens,
    problems,
    retracted_requests,
    run_load,
)
from testbed.server import ServerProcess

WARM_UP = 8  # requests each server answers before the measured rounds


@dataclass
class ServedLoad:
    """One backend's side of the comparison."""

    tokens_per_s: float = 0.0  # best round: completion tokens / wall seconds of the whole load
    problems: list[str] = field(default_factory=list)  # errors, drops, truncations, every round
    retracted: int = 0  # requests retracted for want of KV pages, every round
    texts: list[str] = field(default_factory=list)  # the last round's answers


@dataclass
class LoadComparison:
    requests: int
    concurrency: int
    plugin: ServedLoad
    stock: ServedLoad
    # Requests whose plugin answer differs from the same request sent alone to the plugin
    # server (None: not measured) and from stock's answer under the same load.
    differ_from_one_at_a_time: int | None
    differ_from_stock: int

    @property
    def throughput_ratio(self) -> float:
        return self.plugin.tokens_per_s / self.stock.tokens_per_s

    @property
    def errors(self) -> int:
        return len(self.plugin.problems) + len(self.stock.problems)


def compare_with_stock(
    model: Path,
    *,
    requests: int,
    concurrency: int,
    rounds: int,
    one_at_a_time: bool,
    parallel: dict[str, Any] | None = None,
) -> LoadComparison:
    """The load's figures through both servers; ``one_at_a_time`` adds the sequential check.
    ``parallel`` (e.g. ``{"tp_size": 2}``) is given to both servers, one core per rank."""
    workload = build_requests(model, requests, long_tokens=CHUNK)
    flags = {**LOAD_SERVER_ARGS, "max_running_requests": concurrency, **(parallel or {})}
    ranks = int((parallel or {}).get("tp_size", 1))
    # sglang's CPU thread binding: one core per rank beyond one rank per NUMA node.
    cores = "|".join(map(str, range(ranks)))
    rank_env = {"SGLANG_CPU_OMP_THREADS_BIND": cores} if ranks > 1 else {}
    sides = {"plugin": ServedLoad(), "stock": ServedLoad()}
    with (
        tempfile.TemporaryDirectory() as tmp,
        ServerProcess(
            model,
            Path(tmp) / "plugin.log",
            env=testbed_env(ASCEND_USE_FIA="1", **LOAD_SERVER_ENV, **rank_env),
            attention_backend="ascend",
            **flags,
        ) as plugin,
        ServerProcess(
            model,
            Path(tmp) / "stock.log",
            env=testbed_env(ASCEND_USE_FIA=None, **LOAD_SERVER_ENV, **rank_env),
            attention_backend="torch_native",
            **flags,
        ) as stock,
    ):
        servers = {"plugin": plugin, "stock": stock}
        for server in servers.values():
            # A server's first requests pay one-off start-up costs (lazy imports, the first
            # forward of each shape); keep them out of the measured rounds.
            run_load(server.base_url, str(model), workload[:WARM_UP], concurrency=WARM_UP)
        for _ in range(rounds):
            for name, server in servers.items():
                assert server.post("/flush_cache") == 200
                replies, seconds = run_load(
                    server.base_url, str(model), workload, concurrency=concurrency
                )
                side = sides[name]
                side.problems += problems(workload, replies)
                side.tokens_per_s = max(side.tokens_per_s, generated_tokens(replies) / seconds)
                side.texts = answer_texts(replies)
        for name, server in servers.items():
            sides[name].retracted = retracted_requests(server.log_text())
        alone: list[str] | None = None
        if one_at_a_time:
            assert plugin.post("/flush_cache") == 200
            replies, _ = run_load(plugin.base_url, str(model), workload, concurrency=1)
            sides["plugin"].problems += problems(workload, replies)
            alone = answer_texts(replies)
    together = sides["plugin"].texts
    return LoadComparison(
        requests=requests,
        concurrency=concurrency,
        plugin=sides["plugin"],
        stock=sides["stock"],
        differ_from_one_at_a_time=(
            None if alone is None else sum(a != b for a, b in zip(together, alone, strict=True))
        ),
        differ_from_stock=sum(a != b for a, b in zip(together, sides["stock"].texts, strict=True)),
    )
