"""``make bench``: run every benchmark in one process, print one table, write bench-results.json.

Each benchmark module exposes ``run() -> dict`` returning nested figures (keys as named in the
issues, e.g. ``{"ops": {"paged_decode_bw_ratio": 0.7}}``). Ratios are measured side by side in
the same run, so they compare like with like on whatever machine runs them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

BENCHMARKS = (
    "bench.ops_bench",
    "bench.e2e_bench",
    "bench.upstream_bench",
    "bench.mla_bench",
    "bench.moe_bench",
    "bench.serve_bench",
    "bench.convert_bench",
)
RESULTS = Path(__file__).resolve().parents[1] / "bench-results.json"


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            rows += _flatten(value, name)
        else:
            rows.append((name, value))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--only", choices=BENCHMARKS, action="append", help="run a subset")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
        }
    }
    for name in args.only or BENCHMARKS:
        started = time.perf_counter()
        _merge(results, importlib.import_module(name).run())
        print(f"[{name}] done in {time.perf_counter() - started:.1f}s", flush=True)
    rows = _flatten(results)
    width = max(len(k) for k, _ in rows)
    print(f"\n{'figure':<{width}}  value")
    for key, value in rows:
        print(f"{key:<{width}}  {_fmt(value)}")
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
