"""``make demo``: the FIA backend generating through a real ``sglang.Engine`` on this CPU.

1. Builds the tiny random-weight Qwen2 and DeepSeek-V2-Lite-style models offline (cached under
   ``.cache/models``); steps 2-5 run for each, one table per model.
2. Starts sglang with the plugin active (``ASCEND_USE_FIA=1``, ``--attention-backend ascend``),
   so every attention layer runs one FIA call on the reference ops (MHA/GQA through the FIA
   backend; DeepSeek's MLA through the FIA MLA backend, its prefill on FIA v2).
3. Generates greedily for a few prompts; the last one shares a two-page prefix with the one
   before it and is sent afterwards, so sglang serves that prefix from its radix cache.
4. Runs the same prompts through stock sglang (``torch_native``) and HF transformers (fp32),
   and prints the tokens side by side with ✓/✗, the FIA launches per layer and the times.
5. Runs the engine tests' workloads through the plugin and sglang's in-tree Ascend backend in
   both of its modes (on the test-only torch_npu stand-in, ``demo/upstream.py``) and prints
   which paths match HF, their attention launches per layer, and the cause of each failure.
6. Through sglang's real ``ModelRunner`` in one process per path (``demo/per_layer.py``), prints
   attention and KV-write launches per layer at head dims 16 and 128, host syncs per decode step
   at 2 and 6 layers (device against host tensors), and what each path does at
   ``--page-size 16``.
7. Runs the ``make test`` serving load (64 requests, 16 at a time, through the real
   ``sglang.launch_server`` and the ``openai`` client) through the plugin and stock sglang, and
   prints the request count, the errors and the throughput of each.
8. Exits 1 on any mismatch of the plugin, if a forward made other than one FIA launch per
   layer, if a plugin decode step syncs the device or syncs per layer, if the plugin starts at
   page 16, or on any error, drop or answer differing from stock's under load.

The test bed (``tests/support``: the ``sgl_kernel`` stand-in, the torchvision fix, the launch
probe) is put on ``PYTHONPATH`` by the Makefile; none of it is part of the wheel.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.engine import EngineProcess, testbed_env
from testbed.models import build_deepseek_v2_lite, build_qwen2, encode_prompts, token_stream
from testbed.oracle import hf_greedy

NEW_TOKENS = 16
PAGE_SIZE = 128
SHOWN_TOKENS = 8  # token ids printed per cell; the comparison uses all of them
# The serving load at the size ``make test`` runs it (tests/e2e/test_serve_load.py).
LOAD_REQUESTS = 64
LOAD_CONCURRENCY = 16
ENGINE_ARGS: dict[str, Any] = {"page_size": PAGE_SIZE, "chunked_prefill_size": 256}


@dataclass
class Row:
    prompt_tokens: int
    cached_tokens: int
    plugin: list[int]
    hf: list[int]
    stock: list[int]

    @property
    def ok(self) -> bool:
        return self.plugin == self.hf == self.stock


def demo_prompts(model: Path) -> list[list[int]]:
    """Four short prompts, then two long ones that share a two-page prefix."""
    shared = token_stream(model, 2 * PAGE_SIZE + 20, offset=3)
    return [*encode_prompts(model)[:4], [*shared, 11, 12, 13], [*shared, 21, 22]]


def _generate(engine: EngineProcess, prompts: list[list[int]]) -> tuple[list[Any], list[Any]]:
    """All but the last prompt in one batch, then the last one: its prefix is cached by then."""
    first = engine.generate(prompts[:-1], NEW_TOKENS)
    last = engine.generate(prompts[-1:], NEW_TOKENS)
    return first["output_ids"] + last["output_ids"], first["meta"] + last["meta"]


# FIA v1 and v2 (the MLA prefill runs on v2): one launch of either per layer.
FIA_OPS = ("fused_infer_attention_score", "fused_infer_attention_score_v2")


def launches_per_layer(log: Path) -> set[float]:
    """FIA launches per layer in every forward the launch probe logged."""
    import json

    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {sum(r["launches"].get(op, 0) for op in FIA_OPS) / r["num_layers"] for r in records}


def _cell(tokens: list[int]) -> str:
    shown = " ".join(str(t) for t in tokens[:SHOWN_TOKENS])
    return shown + (" …" if len(tokens) > SHOWN_TOKENS else "")


def render(rows: list[Row], launches: set[float], timings: dict[str, float]) -> tuple[str, bool]:
    """The side-by-side table and whether everything matched."""
    mark = {True: "✓", False: "✗"}
    width = max(len(_cell(r.plugin)) for r in rows)
    lines = [
        f"{'#':>2}  {'prompt':>6}  {'cached':>6}  {'plugin (ascend FIA) tokens':<{width}}  "
        "HF  stock"
    ]
    for i, r in enumerate(rows):
        lines.append(
            f"{i:>2}  {r.prompt_tokens:>6}  {r.cached_tokens:>6}  {_cell(r.plugin):<{width}}  "
            f"{mark[r.plugin == r.hf]:^2}  {mark[r.plugin == r.stock]:^5}"
        )
    one_launch = launches == {1.0}
    lines.append("")
    lines.append(
        f"FIA launches per layer per forward: {sorted(launches)} "
        f"{mark[one_launch]} (expected exactly [1.0])"
    )
    lines.append(
        "time: " + ", ".join(f"{name} {seconds:.2f}s" for name, seconds in timings.items())
    )
    ok = one_launch and all(r.ok for r in rows)
    lines.append(
        "all tokens match HF transformers and stock sglang" if ok else "MISMATCH: see ✗ above"
    )
    return "\n".join(lines), ok


def render_load(load: Any) -> tuple[str, bool]:
    """The serving load's request count, errors and throughput against stock, and its verdict
    (``load`` is a ``testbed.load_vs_stock.LoadComparison``)."""
    mark = {True: "✓", False: "✗"}
    problems = load.plugin.problems + load.stock.problems
    lines = [
        f"requests: {load.requests} per server ({load.concurrency} at a time), "
        f"errors/drops/truncations: {len(problems)} {mark[not problems]}",
        f"throughput: plugin {load.plugin.tokens_per_s:.1f} tok/s, stock torch_native "
        f"{load.stock.tokens_per_s:.1f} tok/s, ratio {load.throughput_ratio:.2f}",
        f"requests sglang retracted for want of KV pages (24-page pool): plugin "
        f"{load.plugin.retracted}, stock {load.stock.retracted}",
        f"plugin answers that differ from stock's: {load.differ_from_stock} "
        f"{mark[load.differ_from_stock == 0]}",
        *problems[:5],
    ]
    return "\n".join(lines), not problems and load.differ_from_stock == 0


# The models shown, each in its own table: the tiny Qwen2 (MHA/GQA) and the tiny
# DeepSeek-V2-Lite-style model (MLA attention with the real 512/64 latent dims, MoE stock).
MODELS: dict[str, Callable[[], Path]] = {
    "Qwen2 (GQA)": build_qwen2,
    "DeepSeek-V2-Lite-style (MLA)": build_deepseek_v2_lite,
}


def run_model(model: Path) -> tuple[str, bool]:
    """Plugin engine, stock torch_native engine and HF on one model; its table and verdict."""
    prompts = demo_prompts(model)
    timings: dict[str, float] = {}
    print(f"model: {model} ({len(prompts)} prompts x {NEW_TOKENS} new tokens, greedy)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "launches.jsonl"
        env = testbed_env(ASCEND_USE_FIA="1", FIA_LAUNCH_LOG=str(log))
        with EngineProcess(model, env=env, attention_backend="ascend", **ENGINE_ARGS) as engine:
            timings["plugin start"] = engine.startup_s
            t0 = time.perf_counter()
            plugin, meta = _generate(engine, prompts)
            timings["plugin generate"] = time.perf_counter() - t0
        launches = launches_per_layer(log)
    env = testbed_env(ASCEND_USE_FIA=None)
    with EngineProcess(model, env=env, attention_backend="torch_native", **ENGINE_ARGS) as engine:
        t0 = time.perf_counter()
        stock, _ = _generate(engine, prompts)
        timings["stock torch_native generate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hf = hf_greedy(model, prompts, NEW_TOKENS)
    timings["HF generate"] = time.perf_counter() - t0
    rows = [
        Row(len(p), int(m.get("cached_tokens", 0)), a, b, c)
        for p, m, a, b, c in zip(prompts, meta, plugin, hf, stock, strict=True)
    ]
    return render(rows, launches, timings)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0]).parse_args(argv)
    all_ok = True
    for title, build in MODELS.items():
        print(f"\n== {title} ==", flush=True)
        text, ok = run_model(build())
        print(text, flush=True)
        all_ok = all_ok and ok
    from demo import upstream

    print("\n== Qwen2 (GQA): the plugin beside sglang's own Ascend backend ==", flush=True)
    side_by_side, plugin_ok = upstream.report(build_qwen2())
    print(side_by_side, flush=True)
    from demo import per_layer

    print(
        "\n== Qwen2 (GQA), one ModelRunner per path: launches, host syncs, page 16 ==", flush=True
    )
    t0 = time.perf_counter()
    runner_tables, runner_ok = per_layer.report()
    print(runner_tables, flush=True)
    print(f"time: {time.perf_counter() - t0:.1f}s", flush=True)
    from testbed.load_vs_stock import compare_with_stock

    print(
        f"\n== Qwen2 (GQA) under load: sglang.launch_server + openai client, "
        f"{LOAD_REQUESTS} requests, {LOAD_CONCURRENCY} at a time ==",
        flush=True,
    )
    load = compare_with_stock(
        build_qwen2(),
        requests=LOAD_REQUESTS,
        concurrency=LOAD_CONCURRENCY,
        rounds=1,
        one_at_a_time=False,
    )
    load_text, load_ok = render_load(load)
    print(load_text, flush=True)
    return 0 if all_ok and plugin_ok and runner_ok and load_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
