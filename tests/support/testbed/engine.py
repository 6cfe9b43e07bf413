"""Run a real ``sglang.Engine`` in a child process, with a time bound on every step.

When a scheduler dies, sglang kills its whole process tree; running the engine in a child keeps
that from taking the test process with it, so a crash becomes a clean test failure. One child
serves many requests, so a test module starts each engine configuration once.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SUPPORT_DIR = Path(__file__).resolve().parents[1]
PYTHONPATH_DIR = SUPPORT_DIR / "pythonpath"
MARK = "@@testbed@@"

# Engine arguments measured to work on a 2-core CPU (the test bed; docs/development.md,
# "The CPU test bed").
CPU_ENGINE_DEFAULTS: dict[str, Any] = {
    "device": "cpu",
    "dtype": "float32",
    "disable_cuda_graph": True,
    "mem_fraction_static": 0.05,
    "max_total_tokens": 4096,
    "max_running_requests": 16,
    "chunked_prefill_size": 256,
    "skip_server_warmup": True,
    "random_seed": 0,
    "log_level": "error",
    # An idle scheduler otherwise spins a whole core; on 2 cores that starves whatever runs
    # beside it (a second engine in a benchmark, the HF oracle in a test).
    "sleep_on_idle": True,
}


def testbed_env(**overrides: str | None) -> dict[str, str]:
    """The environment every test-bed sglang process needs; ``None`` removes a variable."""
    env = dict(os.environ)
    paths = [str(PYTHONPATH_DIR), str(SUPPORT_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["SGLANG_USE_CPU_ENGINE"] = "1"  # without it device="cpu" dies importing vllm ops
    env["TORCHDYNAMO_DISABLE"] = "1"  # skips a 10 s inductor compile; same tokens
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


testbed_env.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite its name


class EngineError(RuntimeError):
    pass


class EngineProcess:
    """A child process hosting one ``sglang.Engine``; use as a context manager."""

    def __init__(
        self,
        model_path: Path | str,
        *,
        env: dict[str, str] | None = None,
        startup_timeout: float = 240.0,
        **engine_kwargs: Any,
    ) -> None:
        kwargs = {**CPU_ENGINE_DEFAULTS, **engine_kwargs, "model_path": str(model_path)}
        self.engine_kwargs = kwargs
        self.log: list[str] = []
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "testbed.engine_child", json.dumps(kwargs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env if env is not None else testbed_env(),
            text=True,
            bufsize=1,
            start_new_session=True,  # sglang's tree-kill stays inside this session
        )
        first = self._read_reply(startup_timeout)
        if not first["ok"]:
            self.close()
            # The scheduler's own log lines (e.g. what it logged before failing) come too.
            raise EngineError(f"{first['error']}\nlog tail:\n{self.log_tail(200)}")
        self.startup_s: float = first["startup_s"]

    def _read_reply(self, timeout: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise EngineError(f"no reply within {timeout:.0f}s; log tail:\n{self.log_tail()}")
            ready, _, _ = select.select([self._proc.stdout], [], [], remaining)
            if not ready:
                continue
            line = self._proc.stdout.readline()
            if not line:
                code = self._proc.wait()
                raise EngineError(f"engine process exited ({code}); log tail:\n{self.log_tail()}")
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
            self.log.append(line.rstrip("\n"))

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log[-n:])

    def generate(
        self,
        input_ids: list[list[int]],
        max_new_tokens: int,
        *,
        timeout: float = 300.0,
        return_logprob: bool = False,
        **sampling: Any,
    ) -> dict[str, Any]:
        """Greedy generation; returns ``{"output_ids": [...], "meta": [...], "elapsed_s": s}``.

        ``return_logprob`` adds sglang's ``output_token_logprobs`` (``[(logprob, token_id,
        None), ...]`` per request) to each ``meta``."""
        params = {"temperature": 0.0, "max_new_tokens": max_new_tokens, "ignore_eos": True}
        params.update(sampling)
        request = {
            "op": "generate",
            "input_ids": input_ids,
            "sampling_params": params,
            "return_logprob": return_logprob,
        }
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        reply = self._read_reply(timeout)
        if not reply["ok"]:
            raise EngineError(f"{reply['error']}\n{reply.get('trace', '')}")
        return reply

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps({"op": "close"}) + "\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, 9)
            self._proc.wait()
        # Reap any sglang grandchildren left in the session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, 9)

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_error(
    model_path: Path | str, *, env: dict[str, str], timeout: float = 240.0, **engine_kwargs: Any
) -> str | None:
    """Start an engine expecting it to fail; return the error text (None if it started)."""
    try:
        with EngineProcess(model_path, env=env, startup_timeout=timeout, **engine_kwargs):
            return None
    except EngineError as exc:
        return str(exc)
