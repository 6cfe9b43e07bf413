"""TEST-ONLY single-process sglang ``ModelRunner`` driver for the FIA backend (tests and bench).

``python -m fia_runner '<json>'`` builds sglang's real ``ModelRunner`` the way
``sglang.benchmark.one_batch`` does (no scheduler, no tokenizer process), loads the plugins like
a scheduler process would, and runs one scenario on real ``ScheduleBatch``/``ForwardBatch``
objects. It prints one ``@@fia_runner@@<json>`` line with the result.

Scenarios:

- ``syncs``: one extend and two decode forwards; counts ``Tensor.tolist/.item/.cpu`` calls per
  forward (outside the ops references, which stand in for device kernels) and FIA launches.
- ``metadata``: per-step host time of the attention backend's ``init_forward_metadata`` on
  decode batches of the given sizes.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MARK = "@@fia_runner@@"
SYNC_METHODS = ("tolist", "item", "cpu")


@contextmanager
def count_syncs(calls: list[str]):
    """Record every Tensor.tolist/.item/.cpu call made outside ``sglang_ascend_fia/ops``."""
    import os

    import torch

    originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}
    ops_dir = f"sglang_ascend_fia{os.sep}ops{os.sep}"

    def wrap(name: str, original: Any) -> Any:
        def counted(tensor: Any, *args: Any, **kwargs: Any) -> Any:
            frames = traceback.extract_stack(limit=24)[:-1]
            if not any(ops_dir in f.filename for f in frames):
                calls.append(f"{name}@{Path(frames[-1].filename).name}:{frames[-1].lineno}")
            return original(tensor, *args, **kwargs)

        return counted

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def load_runner(args: dict[str, Any]) -> Any:
    """sglang's ModelRunner for ``args`` (model_path, attention_backend, page_size, ...)."""
    from sglang.srt.plugins import load_plugins

    load_plugins()  # as run_scheduler_process does first (scheduler.py:6323)

    from sglang.benchmark import one_batch
    from sglang.srt.runtime_context import SpawnRanks, publish, spawn_world_rank
    from sglang.srt.server_args import PortArgs, ServerArgs

    server_args = ServerArgs(
        model_path=args["model_path"],
        device="cpu",
        dtype="float32",
        attention_backend=args["attention_backend"],
        page_size=args.get("page_size", 128),
        disable_cuda_graph=True,
        mem_fraction_static=0.05,
        max_total_tokens=args.get("max_total_tokens", 8192),
        max_running_requests=args.get("max_running_requests", 64),
        chunked_prefill_size=args.get("chunked_prefill_size", 8192),
        random_seed=0,
        log_level="error",
    )
    server_args.resolve_once()
    one_batch._set_envs_and_config(server_args)
    port_args = PortArgs.init_new(server_args)
    publish(
        server_args,
        role="scheduler",
        ranks=SpawnRanks(world_rank=spawn_world_rank(server_args, tp_rank=0, pp_rank=0), gpu_id=0),
    )
    one_batch._init_process_global_configs()
    runner, _ = one_batch.load_model(server_args, port_args, 0, 0)
    return runner


def _requests(batch: int, input_len: int) -> list[Any]:
    from sglang.benchmark import one_batch

    # Token ids below the tiny vocab (512), distinct per request.
    inputs = [[(7 * r + 3 * i) % 500 + 4 for i in range(input_len + r % 7)] for r in range(batch)]
    return one_batch.prepare_synthetic_inputs_for_latency_test(batch, input_len, inputs)


def scenario_syncs(runner: Any, args: dict[str, Any]) -> dict[str, Any]:
    from sglang_ascend_fia import ops

    torch_runner = runner.torch_runner
    forwards: list[dict[str, Any]] = []
    original_forward = torch_runner.forward

    def counted_forward(forward_batch: Any, *a: Any, **kw: Any) -> Any:
        calls: list[str] = []
        mode = forward_batch.forward_mode.name
        ops.reset_launch_counts()
        with count_syncs(calls):
            out = original_forward(forward_batch, *a, **kw)
        forwards.append({"mode": mode, "syncs": calls, "launches": ops.launch_counts()})
        return out

    torch_runner.forward = counted_forward
    next_ids, _, batch = runner.extend(_requests(args.get("batch", 4), args.get("input_len", 40)))
    for _ in range(2):
        next_ids, _ = runner.decode(next_ids, batch)
    return {
        "num_layers": torch_runner.model_config.num_hidden_layers,
        "backend": type(torch_runner.attn_backend).__name__,
        "forwards": forwards,
    }


def scenario_metadata(runner: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Mean host microseconds of ``init_forward_metadata`` on a decode batch of each size."""
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

    torch_runner = runner.torch_runner
    backend = torch_runner.attn_backend
    iters = args.get("iters", 200)
    result: dict[str, float] = {}
    for batch_size in args["batch_sizes"]:
        runner.clear()
        next_ids, _, batch = runner.extend(_requests(batch_size, args.get("input_len", 24)))
        batch.input_ids = next_ids.to("cpu").long()
        batch.prepare_for_decode()
        fb = ForwardBatch.init_new(batch, torch_runner, return_hidden_states_before_norm=False)
        assert fb.batch_size == batch_size, (fb.batch_size, batch_size)
        backend.init_forward_metadata(fb)  # warm-up
        rounds = []
        for _ in range(5):  # best of 5 rounds: the host time without scheduler noise
            start = time.perf_counter()
            for _ in range(iters):
                backend.init_forward_metadata(fb)
            rounds.append((time.perf_counter() - start) / iters * 1e6)
        result[str(batch_size)] = min(rounds)
    return {"backend": type(backend).__name__, "init_forward_metadata_us": result}


SCENARIOS = {"syncs": scenario_syncs, "metadata": scenario_metadata}


def main() -> None:
    args = json.loads(sys.argv[1])
    try:
        runner = load_runner(args)
        payload = {"ok": True, **SCENARIOS[args["scenario"]](runner, args)}
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        payload = {"ok": False, "error": error, "trace": traceback.format_exc()}
    sys.stdout.write(MARK + json.dumps(payload) + "\n")
    sys.stdout.flush()


def run(args: dict[str, Any], *, env: dict[str, str], timeout: float = 300.0) -> dict[str, Any]:
    """Run one scenario in a fresh child process and return its result."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "fia_runner", json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            result = json.loads(line[len(MARK) :])
            if not result["ok"]:
                raise RuntimeError(f"{result['error']}\n{result['trace']}")
            return result
    tail = proc.stdout[-3000:] + proc.stderr[-3000:]
    raise RuntimeError(f"fia_runner exited {proc.returncode}:\n{tail}")


if __name__ == "__main__":
    main()
