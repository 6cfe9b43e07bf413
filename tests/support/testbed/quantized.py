"""W8A8 copies of test-bed models: the int8 checkpoint and its dequantised float twin.

Built with the plugin's own converter (``sglang_ascend_fia.w8a8.convert``) next to the float
model in the cache, once per source model, format and set of static layers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path


def build_w8a8_pair(
    src: Path, fmt: str = "w8a8_int8", static: Sequence[str] = ()
) -> tuple[Path, Path]:
    """``(int8 checkpoint, dequantised float checkpoint)`` of the float model ``src``, in the
    converter's ``fmt`` (``w8a8_int8`` or ``modelslim``), with the layers matching ``static``
    made W8A8 static (``--static``; modelslim only)."""
    from sglang_ascend_fia.w8a8.convert import quantize_checkpoint

    tag = "w8a8" if fmt == "w8a8_int8" else fmt
    if static:
        tag += "-static-" + hashlib.sha1("\n".join(static).encode()).hexdigest()[:8]
    quantised = src.with_name(f"{src.name}-{tag}")
    dequantised = src.with_name(f"{src.name}-{tag}-dequantized")
    if (quantised / "config.json").is_file() and (dequantised / "config.json").is_file():
        return quantised, dequantised
    tmp = src.with_name(f".{src.name}-{tag}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    quantize_checkpoint(src, tmp / "q", dequantized=tmp / "d", fmt=fmt, static=static)
    for built, final in ((tmp / "q", quantised), (tmp / "d", dequantised)):
        if not (final / "config.json").is_file():
            shutil.rmtree(final, ignore_errors=True)
            built.rename(final)  # atomic: a concurrent builder never sees half a checkpoint
    shutil.rmtree(tmp, ignore_errors=True)
    return quantised, dequantised
