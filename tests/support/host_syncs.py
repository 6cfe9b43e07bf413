"""TEST-ONLY: count host syncs in a forward, split by whether the tensor lives on the device.

On the CPU test bed every tensor is a CPU tensor, so "on the device" is tracked by provenance,
the way it would be on an NPU. At the start of a forward, the ``ForwardBatch`` fields sglang
keeps as host mirrors (``*_cpu``) are host tensors; every tensor that existed before (weights,
the KV pool, the request table, sglang's static input buffers, the batch's other fields) is a
device tensor. Every torch call made during the forward tags its output: a device tensor when
an input is one or when the call names a device (``torch.tensor(..., device=d)``, ``x.to(d)``),
a host tensor when all inputs are host tensors or when it creates a tensor without naming a
device (``torch.tensor(list)``, ``torch.from_numpy``); ``.cpu()`` / ``.to("cpu")`` of a device
tensor is a host tensor (returned as a copy, as on an NPU, so the tag cannot leak back).

Counted: ``.tolist()``, ``.item()``, ``.cpu()`` / ``.to("cpu")``, implicit ``__index__``,
``__int__``, ``__bool__`` and tensor slice bounds in ``__getitem__``. Calls made inside the
plugin's ``ops`` package or the torch_npu stand-in are not counted: they stand in for device
kernels.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

DEVICE, HOST = "device", "host"
_TAG = "_host_syncs_where"
_KERNEL_DIRS = (f"sglang_ascend_fia{os.sep}ops{os.sep}", f"npu_standin{os.sep}")
_IMPLICIT = {"__index__", "__int__", "__bool__"}
_EXPLICIT = {"tolist", "item"}


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, slice):
        yield from _tensors((value.start, value.stop, value.step))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _names_device(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    for value in (*args, kwargs.get("device")):
        if isinstance(value, torch.device):
            return value.type
        if isinstance(value, str) and value.split(":")[0] in ("cpu", "npu", "cuda"):
            return value.split(":")[0]
    return None


class SyncCounter(TorchFunctionMode):
    """Records ``(kind, where, call site)`` for every host sync made under it."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[dict[str, str]] = []

    def tag(self, value: Any, where: str) -> None:
        for tensor in _tensors(value):
            setattr(tensor, _TAG, where)  # an attribute: tensors hash by id but compare by value

    def tag_forward_batch(self, forward_batch: Any) -> None:
        for name, value in vars(forward_batch).items():
            self.tag(value, HOST if name.endswith("_cpu") else DEVICE)

    def _where(self, tensors: list[torch.Tensor]) -> str:
        # A tensor nobody tagged existed before the forward (weights, pools, sglang's static
        # input buffers) and lives on the device.
        return HOST if all(getattr(t, _TAG, None) == HOST for t in tensors) else DEVICE

    def _record(self, kind: str, where: str) -> None:
        frames = traceback.extract_stack(limit=30)[:-2]  # drop _record and __torch_function__
        if any(d in f.filename for f in frames for d in _KERNEL_DIRS):
            return
        site = next((f for f in reversed(frames) if "torch" + os.sep not in f.filename), frames[-1])
        self.syncs.append(
            {"kind": kind, "where": where, "site": f"{Path(site.filename).name}:{site.lineno}"}
        )

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        inputs = list(_tensors(args)) + list(_tensors(kwargs))
        where = self._where(inputs)
        target = _names_device(args[1:], kwargs) if name == "to" else None
        # On the test bed the device is "cpu" too: ``.to(device)`` of a host tensor is an H2D
        # copy, ``.to("cpu")`` of a device tensor a D2H copy.
        to_host = name == "cpu" or (name == "to" and target == "cpu" and where == DEVICE)
        to_device = name == "to" and target is not None and not to_host
        if name in _EXPLICIT or name in _IMPLICIT or to_host:
            self._record("cpu" if to_host else name, where)
        elif name == "__getitem__" and any(
            isinstance(i, slice) and list(_tensors(i)) for i in _index_parts(args)
        ):
            self._record("__index__", self._where(list(_tensors(_index_parts(args)))))
        out = func(*args, **kwargs)
        if to_host and where == DEVICE and isinstance(out, torch.Tensor):
            out = out.clone()  # an NPU .cpu() is a copy; keeps the tag off the source
            self.tag(out, HOST)
        elif to_device or kwargs.get("device") is not None:
            self.tag(out, DEVICE)
        else:
            self.tag(out, where if inputs else HOST)  # no tensor input, no device: a host tensor
        return out


def _index_parts(args: tuple[Any, ...]) -> tuple[Any, ...]:
    if len(args) < 2:
        return ()
    index = args[1]
    return index if isinstance(index, tuple) else (index,)


@contextmanager
def counting(forward_batch: Any, attn_backend: Any) -> Iterator[SyncCounter]:
    """Count the syncs of one forward of ``forward_batch``.

    sglang's eager runner copies the batch into static input buffers before the attention
    backend sees it (``model_executor/runner/eager_runner.py:180-208``), so the batch the
    backend receives in ``init_forward_metadata`` is tagged as well.
    """
    counter = SyncCounter()
    counter.tag_forward_batch(forward_batch)
    original = attn_backend.init_forward_metadata

    def tagged(batch: Any, *args: Any, **kwargs: Any) -> Any:
        counter.tag_forward_batch(batch)
        return original(batch, *args, **kwargs)

    attn_backend.init_forward_metadata = tagged
    try:
        with counter:
            yield counter
    finally:
        del attn_backend.init_forward_metadata  # back to the class's method
