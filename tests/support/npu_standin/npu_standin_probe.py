"""TEST-ONLY sglang plugin beside the torch_npu stand-in: wiring and measuring in the scheduler.

Discovered through ``npu_standin_probe-0.0.0.dist-info`` whenever ``tests/support/npu_standin``
is on ``PYTHONPATH``; every action is opt-in through an environment variable. Never shipped.

- Always: gives ``hardware_backend/npu/memory_pool_npu.py`` the stand-in as its ``torch_npu``
  global. On an NPU the module imports it itself under ``if is_npu():`` (line 24); on CPU
  ``is_npu()`` is false, and the NPU pools' writes would die with ``NameError`` (line 349).
- Always: ``AscendAttnBackend.__init__`` builds one tensor with the literal ``device="npu"``
  (``hardware_backend/npu/attention/ascend_backend.py:320-322``, a speculative-decoding offset);
  during that constructor only, ``torch.tensor(..., device="npu")`` is placed on the runner's
  device instead. Nothing else in the backend names the device.
- ``NPU_STANDIN_MIXED_DISPATCH=1``: the NPU dispatch of mixed batches. On an NPU a MIXED batch
  stays MIXED (``model_executor/runner/eager_runner.py:215``) and reaches the backend's
  ``forward_mixed`` (``layers/attention/base_attn_backend.py:344``); on CPU both checks see
  ``is_npu()`` false and run it as a plain extend. This flips exactly those two module-level
  ``is_npu`` names to true, nothing else.
- ``NPU_STANDIN_LOG=<file>``: appends one JSON line per ``ModelRunner.forward``: the mode before
  the forward, batch size, tokens, layers, the stand-in's call counts, the plugin ops' launch
  counts, and what served it (attention backend and KV pool classes with their modules, and
  whether ``sglang_ascend_fia.plugin`` was ever imported in this process), and the exception
  of a forward that raised.
- ``NPU_STANDIN_KILL_ON_ERROR=1`` (with the log): after logging a forward that raised, kill the
  engine's process group, so the test sees the failure at once instead of a hung engine.

Remove when: no test, demo or benchmark compares the plugin with sglang's in-tree backend.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import wrapt

LOG_ENV = "NPU_STANDIN_LOG"
MIXED_ENV = "NPU_STANDIN_MIXED_DISPATCH"
KILL_ENV = "NPU_STANDIN_KILL_ON_ERROR"
POOL_MODULE = "sglang.srt.hardware_backend.npu.memory_pool_npu"
BACKEND_MODULE = "sglang.srt.hardware_backend.npu.attention.ascend_backend"
MIXED_DISPATCH_MODULES = (
    "sglang.srt.model_executor.runner.eager_runner",
    "sglang.srt.layers.attention.base_attn_backend",
)


def _flag(name: str) -> bool:
    value = os.environ.get(name, "0")
    if value not in ("0", "1"):
        raise SystemExit(f"{name}={value!r}: accepted values are '0' and '1'")
    return value == "1"


def _give_pool_torch_npu(module: Any) -> None:
    import torch_npu

    if not hasattr(module, "torch_npu"):
        module.torch_npu = torch_npu


def _construct_on_runner_device(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    import torch

    model_runner = args[0] if args else kwargs["model_runner"]
    original = torch.tensor

    def placed(*t_args: Any, **t_kwargs: Any) -> Any:
        if t_kwargs.get("device") == "npu":
            t_kwargs["device"] = model_runner.device
        return original(*t_args, **t_kwargs)

    torch.tensor = placed
    try:
        return wrapped(*args, **kwargs)
    finally:
        torch.tensor = original


def _patch_backend(module: Any) -> None:
    wrapt.wrap_function_wrapper(module, "AscendAttnBackend.__init__", _construct_on_runner_device)


def _npu_dispatch(module: Any) -> None:
    module.is_npu = lambda: True


def _qualified(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _forward_probe(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    import torch_npu

    from sglang_ascend_fia import ops

    forward_batch = args[0] if args else kwargs["forward_batch"]
    mode = forward_batch.forward_mode.name  # read first: CPU rewrites MIXED to EXTEND in place
    torch_npu.reset_standin_call_counts()
    ops.reset_launch_counts()
    error = None
    try:
        return wrapped(*args, **kwargs)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _log(instance, forward_batch, mode, error)
        if error is not None and _flag(KILL_ENV):
            # sglang's engine does not exit when a scheduler raises (its SIGQUIT handler waits
            # on py-spy and the children); the error is logged, so end the engine's own
            # session (EngineProcess starts it with start_new_session=True) right away.
            os.killpg(os.getpgid(0), signal.SIGKILL)


def _log(instance: Any, forward_batch: Any, mode: str, error: str | None) -> None:
    import torch_npu

    from sglang_ascend_fia import ops

    config = instance.model_config
    record = {
        "pid": os.getpid(),
        "mode": mode,
        "batch_size": int(forward_batch.batch_size),
        "num_tokens": int(forward_batch.input_ids.shape[0]),
        "num_layers": int(config.num_hidden_layers),
        "head_dim": int(getattr(config, "head_dim", 0) or 0),
        "page_size": int(instance.page_size),
        "standin_calls": torch_npu.standin_call_counts(),
        "ops_launches": ops.launch_counts(),
        "attn_backend": _qualified(instance.attn_backend),
        "kv_pool": _qualified(instance.token_to_kv_pool),
        "plugin_imported": "sglang_ascend_fia.plugin" in sys.modules,
        "use_fia_env": os.environ.get("ASCEND_USE_FIA"),
        # The mode sglang's own backend runs in (ascend_backend.py:383), None for another one.
        "backend_use_fia": getattr(instance.attn_backend, "use_fia", None),
        "error": error,
    }
    with open(os.environ[LOG_ENV], "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _patch_runner(module: Any) -> None:
    wrapt.wrap_function_wrapper(module, "ModelRunner.forward", _forward_probe)


def register() -> None:
    wrapt.register_post_import_hook(_give_pool_torch_npu, POOL_MODULE)
    wrapt.register_post_import_hook(_patch_backend, BACKEND_MODULE)
    if _flag(MIXED_ENV):
        for name in MIXED_DISPATCH_MODULES:
            wrapt.register_post_import_hook(_npu_dispatch, name)
    if os.environ.get(LOG_ENV):
        wrapt.register_post_import_hook(_patch_runner, "sglang.srt.model_executor.model_runner")
