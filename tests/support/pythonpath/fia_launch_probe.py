"""TEST-ONLY sglang plugin: logs ``ops.launch_counts()`` per model forward inside the scheduler.

The engine runs in a child process and the model in a scheduler spawned from it, so a test can
not read the scheduler's launch counters directly. When ``FIA_LAUNCH_LOG`` names a file, this
plugin (discovered through the ``fia_launch_probe-0.0.0.dist-info`` entry point beside it on the
test ``PYTHONPATH``) wraps ``ModelRunner.forward`` and appends one JSON line per forward: the
forward mode, batch size, token count, the ops launched during that forward, what served it
(model class, attention backend, KV pool, each decoder layer's attention and MLP classes) and
the plugin's per-patch status in that process.
Without the variable it does nothing. Never shipped.

Remove when: no test, demo or benchmark sets ``FIA_LAUNCH_LOG`` (it is a measuring instrument,
not a workaround for an sglang quirk).
"""

from __future__ import annotations

import json
import os
from typing import Any

import wrapt

ENV = "FIA_LAUNCH_LOG"


def _served_by(runner: Any) -> dict[str, Any]:
    """The classes that ran a forward, so a test can tell e.g. MLA + MoE from a dense fallback."""
    layers = getattr(getattr(runner.model, "model", None), "layers", None) or []
    return {
        "model": type(runner.model).__name__,
        "use_mla_backend": bool(runner.use_mla_backend),
        "attn_backend": type(runner.attn_backend).__name__,
        "kv_pool": type(runner.token_to_kv_pool).__name__,
        # The attention geometry the engine really built: the first attention layer's heads
        # and head dims, as sglang derived them from the checkpoint.
        "attention": next(
            (
                {
                    "q_heads": m.tp_q_head_num,
                    "kv_heads": m.tp_k_head_num,
                    "head_dim": m.qk_head_dim,
                    "v_head_dim": m.v_head_dim,
                }
                for m in runner.model.modules()
                if hasattr(m, "tp_q_head_num")
            ),
            None,
        ),
        "layers": [
            {
                "attn": type(getattr(layer, "self_attn", None)).__name__,
                "mlp": type(layer.mlp).__name__,
            }
            for layer in layers
            if hasattr(layer, "mlp")
        ],
    }


def _forward_probe(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    from sglang_ascend_fia import ops, plugin

    forward_batch = args[0] if args else kwargs["forward_batch"]
    # Read before the forward: on CPU sglang runs a MIXED batch as EXTEND (eager_runner.py:215)
    # and rewrites the mode in place.
    mode = forward_batch.forward_mode.name
    ops.reset_launch_counts()
    result = wrapped(*args, **kwargs)
    record = {
        "pid": os.getpid(),
        "mode": mode,
        "batch_size": int(forward_batch.batch_size),
        "num_tokens": int(forward_batch.input_ids.shape[0]),
        "num_layers": int(instance.model_config.num_hidden_layers),
        "launches": ops.launch_counts(),
        "served_by": _served_by(instance),
        # doctor's per-patch status, as this process (e.g. one TP rank) sees it; empty when the
        # plugin is off (status() would re-read the manifest on every forward).
        "patches": {s.entry.name: s.state for s in plugin.status()} if plugin.is_active() else {},
    }
    with open(os.environ[ENV], "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return result


def _patch(module: Any) -> None:
    wrapt.wrap_function_wrapper(module, "ModelRunner.forward", _forward_probe)


def register() -> None:
    if os.environ.get(ENV):
        wrapt.register_post_import_hook(_patch, "sglang.srt.model_executor.model_runner")
