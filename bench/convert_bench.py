"""Converter memory on a generated multi-shard checkpoint: does it stream shard by shard?

A Qwen2-shaped float checkpoint of random bfloat16 weights (hidden 1024, 16 layers, about
425 MB in 4 shards of about 106 MB, with ``model.safetensors.index.json``) goes through
``sglang-ascend-fia quantize-w8a8 --format modelslim`` in a child process, whose own peak RSS is
read from its ``/proc/self/status`` ``VmHWM`` as it exits.

``convert.peak_rss_over_largest_shard`` (goal <= 2): the conversion's peak RSS over the largest
input shard's bytes, where the conversion's RSS is the child's peak minus the peak of a child
that only imports what the converter imports (Python, torch, safetensors: a constant, about
240 MB here, that no checkpoint changes). ``convert.process_peak_rss_over_largest_shard`` is the
same without that subtraction; ``convert.import_rss_mb``, ``convert.peak_rss_mb``,
``convert.largest_shard_mb``, ``convert.checkpoint_mb`` and ``convert.seconds`` are the raw
figures.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from testbed.checkpoints import run_measured, write_qwen2_shards

MB = 2**20
SHAPE = {"hidden": 1024, "intermediate": 2816, "layers": 16, "vocab": 16384, "heads": 8}
SHARDS = 4


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fia-convert-bench-") as tmp:
        src = write_qwen2_shards(Path(tmp) / "src", kv_heads=2, shards=SHARDS, **SHAPE)
        shard_bytes = [p.stat().st_size for p in src.glob("*.safetensors")]
        largest = max(shard_bytes)
        # Running the converter's module as a script imports what it imports and does nothing.
        imports = run_measured("sglang_ascend_fia.w8a8.convert", [])
        started = time.perf_counter()
        args = ["quantize-w8a8", str(src), str(Path(tmp) / "q"), "--format", "modelslim"]
        converted = run_measured("sglang_ascend_fia.cli", args)
        seconds = time.perf_counter() - started
        if imports.returncode or converted.returncode:
            raise RuntimeError(f"conversion failed: {imports.stderr}{converted.stderr}")
    own = converted.peak_rss_bytes - imports.peak_rss_bytes
    return {
        "convert": {
            "peak_rss_over_largest_shard": own / largest,
            "process_peak_rss_over_largest_shard": converted.peak_rss_bytes / largest,
            "import_rss_mb": imports.peak_rss_bytes / MB,
            "peak_rss_mb": converted.peak_rss_bytes / MB,
            "largest_shard_mb": largest / MB,
            "checkpoint_mb": sum(shard_bytes) / MB,
            "seconds": seconds,
        }
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
