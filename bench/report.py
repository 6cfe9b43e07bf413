"""``python -m bench.report``: docs/benchmarks.md's "Latest run" table, from bench-results.json.

``make bench`` runs it after ``bench.run`` has written ``bench-results.json``. It rewrites only the
lines between the two ``bench-results:`` markers of the page and leaves the hand-written text
around them as it is; a page without both markers is an error, not a silent no-op.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results.json"
PAGE = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- bench-results: begin"
END = "<!-- bench-results: end -->"


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            rows += _flatten(value, name)
        else:
            rows.append((name, value))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def render(results: dict[str, Any], written: dt.date) -> str:
    """The generated block's body: where it ran, then one row per figure, as ``make bench``
    prints them (nested keys joined with dots)."""
    machine = results.get("machine", {})
    figures = {k: v for k, v in results.items() if k != "machine"}
    where = ", ".join(f"{k} {_fmt(v)}" for k, v in machine.items()) or "machine not recorded"
    lines = [
        f"`bench-results.json` of {written.isoformat()} ({where}).",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| `{key}` | {_fmt(value)} |" for key, value in _flatten(figures)),
    ]
    return "\n".join(lines)


def update(page: str, body: str) -> str:
    """``page`` with the lines between the markers replaced by ``body``."""
    lines = page.splitlines()
    begins = [i for i, line in enumerate(lines) if line.startswith(BEGIN)]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise ValueError(f"the page needs one {BEGIN!r} line followed by one {END!r} line")
    new = [*lines[: begins[0] + 1], body, *lines[ends[0] :]]
    return "\n".join(new) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("--results", type=Path, default=RESULTS, help="bench-results.json")
    parser.add_argument("--page", type=Path, default=PAGE, help="the page holding the markers")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        parser.error(f"{args.results} does not exist: run `make bench` (or python -m bench.run)")
    results = json.loads(args.results.read_text())
    written = dt.date.fromtimestamp(args.results.stat().st_mtime)
    args.page.write_text(update(args.page.read_text(), render(results, written)))
    print(f"updated {args.page} from {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
