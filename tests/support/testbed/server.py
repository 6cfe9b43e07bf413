"""Run the real ``python -m sglang.launch_server`` on loopback, time-bounded, always torn down.

The server runs in its own session (process group), so closing kills it and every scheduler /
detokenizer child it started, whatever state they are in. Its log goes to a file the test can
read for the plugin's lines or a refusal message.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from testbed.engine import CPU_ENGINE_DEFAULTS, testbed_env

# The CPU engine defaults of testbed.engine, as launch_server flags (the server logs at its
# default level: the tests read its log).
CPU_SERVER_ARGS: dict[str, Any] = {
    **{k: v for k, v in CPU_ENGINE_DEFAULTS.items() if k != "log_level"},
    # The tiny tokenizer has no chat template; chatml is one of sglang's built-in ones.
    "chat_template": "chatml",
    "enable_cache_report": True,  # usage.prompt_tokens_details.cached_tokens: radix hits
}


class ServerError(RuntimeError):
    pass


# Below Linux's ephemeral range (32768-60999 by default, /proc/sys/net/ipv4/ip_local_port_range):
# a port the kernel hands out for gloo's connections or an HTTP client of a server started on the
# other test worker can be taken between picking it here and the server binding it (seen with a
# two-node start, which binds its HTTP port tens of seconds after the pick).
_PORTS = range(20000, 32000)
# Not the seedable global generator: two test workers seeded alike would pick alike.
_RANDOM = random.SystemRandom()


def free_port() -> int:
    """A loopback TCP port that binds now, outside the ephemeral range."""
    for _ in range(200):
        port = _RANDOM.choice(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {_PORTS.start}-{_PORTS.stop - 1}")


def server_argv(
    model_path: Path | str, port: int, *, testbed_defaults: bool = True, **server_args: Any
) -> list[str]:
    """The launch_server command line; ``testbed_defaults=False`` passes ``server_args`` alone
    (the NPU suite: sglang's own defaults there, graph mode included)."""
    argv = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(model_path)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    defaults = CPU_SERVER_ARGS if testbed_defaults else {}
    for key, value in {**defaults, **server_args}.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    return argv


class ServerProcess:
    """One ``sglang.launch_server`` child; use as a context manager.

    ``testbed_defaults=False``: neither the CPU test bed's server flags nor its environment; the
    child gets ``server_args`` and ``env`` (the caller's environment when None) as given.
    """

    def __init__(
        self,
        model_path: Path | str,
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        startup_timeout: float = 240.0,
        testbed_defaults: bool = True,
        **server_args: Any,
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        if env is None:
            env = testbed_env() if testbed_defaults else dict(os.environ)
        self._proc = subprocess.Popen(
            server_argv(model_path, self.port, testbed_defaults=testbed_defaults, **server_args),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerError(f"server exited ({self._proc.returncode}):\n{self.log_tail()}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(self.base_url + "/v1/models", timeout=5) as reply,
            ):
                if reply.status == 200:
                    return
            time.sleep(1.0)
        raise ServerError(f"server not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The launch_server process, also its process group's id (its own session)."""
        return int(self._proc.pid)

    def post(self, path: str, timeout: float = 30.0) -> int:
        request = urllib.request.Request(self.base_url + path, data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return int(reply.status)

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=20)
        # Whatever is left of the group (a scheduler stuck in a step) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=20)
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_refusal(
    model_path: Path | str,
    log_path: Path,
    *,
    env: dict[str, str],
    timeout: float = 240.0,
    **server_args: Any,
) -> tuple[int | None, str]:
    """Start a server expected to refuse; return (exit code, log). Code None: it started."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            server_argv(model_path, free_port(), **server_args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return code, log_path.read_text(errors="replace")


class NodeProcess:
    """A second node's ``launch_server`` (``--node-rank`` > 0): it runs its scheduler ranks and
    serves no HTTP; use as a context manager beside the first node's :class:`ServerProcess`."""

    def __init__(
        self, model_path: Path | str, log_path: Path, *, env: dict[str, str], **server_args: Any
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self._proc = subprocess.Popen(
            server_argv(model_path, free_port(), **server_args),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=20)
        self._log.close()

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
