"""Child side of :mod:`testbed.engine`: one real ``sglang.Engine`` serving JSON-line requests.

Run as ``python -m testbed.engine_child '<engine kwargs json>'``. Replies are printed on stdout
as ``@@testbed@@<json>`` lines so sglang's own output cannot be mistaken for a reply.
"""

from __future__ import annotations

import json
import sys
import time
import traceback

MARK = "@@testbed@@"


def _reply(payload: dict) -> None:
    sys.stdout.write(MARK + json.dumps(payload) + "\n")
    sys.stdout.flush()


def main() -> None:
    kwargs = json.loads(sys.argv[1])
    started = time.perf_counter()
    try:
        import sglang

        engine = sglang.Engine(**kwargs)
    except BaseException as exc:  # SystemExit included: the toggle error is one
        _reply(
            {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        )
        return
    _reply({"ok": True, "startup_s": time.perf_counter() - started})
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "close":
            break
        try:
            t0 = time.perf_counter()
            outs = engine.generate(
                input_ids=request["input_ids"],
                sampling_params=request["sampling_params"],
                return_logprob=request.get("return_logprob", False),
            )
            elapsed = time.perf_counter() - t0
            if isinstance(outs, dict):
                outs = [outs]
            _reply(
                {
                    "ok": True,
                    "output_ids": [o["output_ids"] for o in outs],
                    "meta": [o.get("meta_info", {}) for o in outs],
                    "elapsed_s": elapsed,
                }
            )
        except Exception as exc:
            _reply(
                {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "trace": traceback.format_exc(),
                }
            )
    engine.shutdown()


if __name__ == "__main__":
    main()
