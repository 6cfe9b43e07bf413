"""TEST-ONLY single-process ModelRunner driver for the side-by-side measurements (tests, bench).

``python -m side_by_side_runner '<json>'`` builds sglang's real ``ModelRunner`` through
``fia_runner.load_runner`` in the environment of one path (``side_by_side.path_env``), runs one
scenario (or, given a list, each in turn on the same runner: one import and model load) and
prints one ``@@side_by_side@@<json>`` line. A failure says whether the runner failed to start
(``stage: load``) or a scenario raised, and which forward raised.

Scenarios:

- ``launches``: for each batch size, a fresh prefill then one decode step; kernel launches and
  the greedy next tokens per forward (the plugin's launches through ``ops``, upstream's through
  the torch_npu stand-in).
- ``syncs``: one prefill and two decode steps; every host sync of each forward, split by whether
  the tensor was on the device (:mod:`host_syncs`).
- ``host_us``: host microseconds per layer per decode step of the attention backend alone
  (``init_forward_metadata`` once, then every layer's ``forward``), with zero-cost kernels that
  return preallocated outputs: upstream through the stand-in's ``NPU_STANDIN_ZERO_COST=1``, the
  plugin through its own dispatch's torch_npu branch (validators, launch counts and the kernel
  lookup, as on an NPU) into the same stand-in. Best of several rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

MARK = "@@side_by_side@@"
# The attribute _wrap_forward sets on an exception raised inside a forward: which one raised.
_FAILED_FORWARD = "side_by_side_failed_forward"


class RunnerError(RuntimeError):
    """A runner that failed: ``payload`` has ``error``, ``trace``, ``stage`` and
    ``failed_forward`` (mode, batch size and index of the forward that raised, or None)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(f"{payload['error']}\n{payload['trace']}")
        self.payload = payload


def _requests(batch: int, input_len: int) -> list[Any]:
    from sglang.benchmark import one_batch

    inputs = [[(7 * r + 3 * i) % 500 + 4 for i in range(input_len + r % 7)] for r in range(batch)]
    return one_batch.prepare_synthetic_inputs_for_latency_test(batch, input_len, inputs)


def _kernel_counts() -> dict[str, int]:
    import torch_npu

    from sglang_ascend_fia import ops

    return torch_npu.standin_call_counts() or ops.launch_counts()


def _reset_counts() -> None:
    import torch_npu

    from sglang_ascend_fia import ops

    torch_npu.reset_standin_call_counts()
    ops.reset_launch_counts()


def _wrap_forward(runner: Any, on_forward: Any) -> None:
    torch_runner = runner.torch_runner
    original = torch_runner.forward
    started = 0

    def forward(forward_batch: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal started
        index, started = started, started + 1
        try:
            return on_forward(original, forward_batch, *args, **kwargs)
        except Exception as exc:
            where = {
                "mode": forward_batch.forward_mode.name,
                "batch_size": int(forward_batch.batch_size),
                "index": index,
            }
            setattr(exc, _FAILED_FORWARD, where)
            raise

    torch_runner.forward = forward


def scenario_launches(runner: Any, args: dict[str, Any]) -> dict[str, Any]:
    forwards: list[dict[str, Any]] = []

    def on_forward(original: Any, forward_batch: Any, *a: Any, **kw: Any) -> Any:
        mode, batch = forward_batch.forward_mode.name, int(forward_batch.batch_size)
        _reset_counts()
        out = original(forward_batch, *a, **kw)
        forwards.append({"mode": mode, "batch_size": batch, "calls": _kernel_counts()})
        return out

    _wrap_forward(runner, on_forward)
    for batch in args["batch_sizes"]:
        runner.clear()
        next_ids, _, schedule_batch = runner.extend(_requests(batch, args.get("input_len", 40)))
        forwards[-1]["tokens"] = next_ids.tolist()
        next_ids, _ = runner.decode(next_ids, schedule_batch)
        forwards[-1]["tokens"] = next_ids.tolist()
    return {"forwards": forwards, **_describe(runner)}


def scenario_syncs(runner: Any, args: dict[str, Any]) -> dict[str, Any]:
    from host_syncs import counting

    forwards: list[dict[str, Any]] = []
    torch_runner = runner.torch_runner

    def on_forward(original: Any, forward_batch: Any, *a: Any, **kw: Any) -> Any:
        mode = forward_batch.forward_mode.name
        with counting(forward_batch, torch_runner.attn_backend) as counter:
            out = original(forward_batch, *a, **kw)
        forwards.append({"mode": mode, "syncs": counter.syncs})
        return out

    _wrap_forward(runner, on_forward)
    next_ids, _, batch = runner.extend(_requests(args.get("batch", 4), args.get("input_len", 40)))
    for _ in range(2):
        next_ids, _ = runner.decode(next_ids, batch)
    return {"forwards": forwards, **_describe(runner)}


def _plugin_on_npu_dispatch() -> None:
    """Send the plugin's ops down their torch_npu branch (validator, launch count, kernel lookup,
    as on an NPU), where the zero-cost stand-in serves them. The tensors stay on the CPU, so the
    dispatch's device test is overridden; it is ``ops._dispatch``'s own seam for that, which the
    ops tests use too."""
    from sglang_ascend_fia.ops import _dispatch

    _dispatch.is_npu = lambda tensor: tensor is not None


def scenario_host_us(runner: Any, args: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch_npu
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

    if not torch_npu.zero_cost_enabled():
        raise RuntimeError("host_us needs NPU_STANDIN_ZERO_COST=1 in the runner's environment")
    if args["path"] == "plugin":
        _plugin_on_npu_dispatch()
    torch_runner = runner.torch_runner
    backend = torch_runner.attn_backend
    layers = [layer.self_attn.attn for layer in torch_runner.model.model.layers]
    iters, result = args.get("iters", 50), {}
    for batch_size in args["batch_sizes"]:
        runner.clear()
        next_ids, _, batch = runner.extend(_requests(batch_size, args.get("input_len", 24)))
        batch.input_ids = next_ids.to("cpu").long()
        batch.prepare_for_decode()
        fb = ForwardBatch.init_new(batch, torch_runner, return_hidden_states_before_norm=False)
        first = layers[0]
        # As RadixAttention.forward hands them to a backend (radix_attention.py:124-132): q
        # [tokens, H*D], k and v viewed as [tokens, H, D].
        q = torch.zeros(batch_size, first.tp_q_head_num * first.qk_head_dim)
        k = torch.zeros(batch_size, first.tp_k_head_num, first.qk_head_dim)
        v = torch.zeros(batch_size, first.tp_v_head_num, first.v_head_dim)

        def step(fb: Any = fb, q: Any = q, k: Any = k, v: Any = v) -> None:
            backend.init_forward_metadata(fb)
            for layer in layers:
                backend.forward(q, k, v, layer, fb)

        step()  # warm-up
        rounds = []
        for _ in range(args.get("rounds", 7)):
            start = time.perf_counter()
            for _ in range(iters):
                step()
            rounds.append((time.perf_counter() - start) / iters / len(layers) * 1e6)
        result[str(batch_size)] = min(rounds)
    return {"decode_us_per_layer": result, **_describe(runner)}


def _describe(runner: Any) -> dict[str, Any]:
    torch_runner = runner.torch_runner
    return {
        "backend": type(torch_runner.attn_backend).__name__,
        "num_layers": torch_runner.model_config.num_hidden_layers,
        "plugin_imported": "sglang_ascend_fia.plugin" in sys.modules,
    }


SCENARIOS = {"launches": scenario_launches, "syncs": scenario_syncs, "host_us": scenario_host_us}


def _run_scenarios(runner: Any, args: dict[str, Any]) -> dict[str, Any]:
    """One scenario's result, or ``{"scenarios": {name: result}}`` for a list run in turn, each
    on an emptied runner with the unwrapped forward."""
    if isinstance(args["scenario"], str):
        return SCENARIOS[args["scenario"]](runner, args)
    results = {}
    torch_runner = runner.torch_runner
    unwrapped = torch_runner.forward
    for name in args["scenario"]:
        if name == "host_us":
            raise ValueError("scenario host_us replaces the ops: run it on its own runner")
        runner.clear()
        torch_runner.forward = unwrapped
        results[name] = SCENARIOS[name](runner, args)
    return {"scenarios": results}


def _payload(args: dict[str, Any]) -> dict[str, Any]:
    """Load the runner for ``args`` and run its scenarios; the result, or how it failed."""
    import fia_runner

    stage = "load"
    try:
        import torch

        torch.set_num_threads(1)  # tiny tensors: threads only add spin-waits
        runner = fia_runner.load_runner(args)
        stage = "scenario"
        return {"ok": True, **_run_scenarios(runner, args)}
    except BaseException as exc:
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc(),
            "stage": stage,
            "failed_forward": getattr(exc, _FAILED_FORWARD, None),
        }


def _import_sglang() -> None:
    """What every runner imports first (about half of a runner's start-up), done once before
    the forks; a scheduler process, too, imports sglang before it loads the plugins."""
    import torch

    torch.set_num_threads(1)
    import sglang.srt.model_executor.model_runner  # noqa: F401
    from sglang.benchmark import one_batch  # noqa: F401


def _forked(args: dict[str, Any]) -> dict[str, Any]:
    """``_payload(args)`` in a forked child, so each run gets a fresh runner and process state
    (sglang's globals, the plugin's patches, the kernel counters) without a fresh import."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, hand the payload back, exit without the parent's atexit
        os.close(read_fd)
        with os.fdopen(write_fd, "w") as out:
            out.write(json.dumps(_payload(args)))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as result:
        text = result.read()
    _, status = os.waitpid(pid, 0)
    if text:
        payload: dict[str, Any] = json.loads(text)
        return payload
    return {
        "ok": False,
        "error": f"RuntimeError: runner child ended with wait status {status} and no result",
        "trace": "",
        "stage": "load",
        "failed_forward": None,
    }


def main() -> None:
    args = json.loads(sys.argv[1])
    if "runs" in args:
        _import_sglang()
        payload = {"ok": True, "runs": [_forked(run) for run in args["runs"]]}
    else:
        payload = _payload(args)
    sys.stdout.write(MARK + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _child(path: str, args: dict[str, Any], timeout: float, env: dict[str, str]) -> dict[str, Any]:
    from side_by_side import path_env

    log = Path("/dev/null")  # the per-forward probe log is for engines; this driver counts itself
    proc = subprocess.run(
        [sys.executable, "-m", "side_by_side_runner", json.dumps(args)],
        env=path_env(path, log, NPU_STANDIN_LOG=None, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            result: dict[str, Any] = json.loads(line[len(MARK) :])
            return result
    raise RuntimeError(f"side_by_side_runner exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def run(path: str, args: dict[str, Any], *, timeout: float = 300.0, **env: str) -> dict[str, Any]:
    """Run ``args["scenario"]`` for ``path`` in a fresh child process and return its result;
    raise :class:`RunnerError` when the runner failed."""
    result = _child(path, {**args, "path": path}, timeout, env)
    if not result["ok"]:
        raise RunnerError(result)
    return result


def run_many(
    path: str, runs: list[dict[str, Any]], *, timeout: float = 600.0, **env: str
) -> list[dict[str, Any]]:
    """Each of ``runs`` for ``path``, one forked runner each in one child process that imports
    sglang once; each entry is a result or a failed runner's payload (``ok`` says which)."""
    result = _child(path, {"runs": [{**args, "path": path} for args in runs]}, timeout, env)
    return list(result["runs"])


if __name__ == "__main__":
    main()
