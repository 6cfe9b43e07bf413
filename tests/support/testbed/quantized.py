"""W8A8 copies of test-bed models: the int8 checkpoint and its dequantised float twin.

Built with the plugin's own converter (``sglang_ascend_fia.w8a8.convert``) next to the float
model in the cache, once per source model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def build_w8a8_pair(src: Path) -> tuple[Path, Path]:
    """``(w8a8_int8 checkpoint, dequantised float checkpoint)`` of the float model ``src``."""
    from sglang_ascend_fia.w8a8.convert import quantize_checkpoint

    quantised = src.with_name(f"{src.name}-w8a8")
    dequantised = src.with_name(f"{src.name}-w8a8-dequantized")
    if (quantised / "config.json").is_file() and (dequantised / "config.json").is_file():
        return quantised, dequantised
    tmp = src.with_name(f".{src.name}-w8a8.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    quantize_checkpoint(src, tmp / "q", dequantized=tmp / "d")
    for built, final in ((tmp / "q", quantised), (tmp / "d", dequantised)):
        if not (final / "config.json").is_file():
            shutil.rmtree(final, ignore_errors=True)
            built.rename(final)  # atomic: a concurrent builder never sees half a checkpoint
    shutil.rmtree(tmp, ignore_errors=True)
    return quantised, dequantised
