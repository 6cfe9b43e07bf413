"""``make npu-check``: verify-ops, then the NPU acceptance suite, then one JSON report to send back.

Runs, each in its own process with the plugin on and nothing of the CPU test bed in the
environment: ``sglang-ascend-fia doctor --json`` (versions, device, patch status),
``sglang-ascend-fia verify-ops`` (its table, read back into rows), and ``pytest -m npu tests/npu``
(the two GSM8K tests, each writing its model's record). The report says ``passed`` only when
doctor, every verify-ops case and both tests passed, ``failed`` when something ran and did not,
and ``not-run`` where the check cannot run here (no NPU, an input unset); the exit status is 0, 1
or 2 to match.

    python tools/npu_check.py [--report npu-report.json]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REPORT_VERSION = 1
EXIT = {"passed": 0, "failed": 1, "not-run": 2}
VERIFY_OPS_TIMEOUT_S = 3600
DOCTOR_TIMEOUT_S = 600


def _acceptance() -> ModuleType:
    """tests/npu/acceptance.py, loaded by path (it imports neither torch nor sglang)."""
    spec = importlib.util.spec_from_file_location(
        "npu_acceptance", REPO / "tests" / "npu" / "acceptance.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


acceptance = _acceptance()


# ------------------------------------------------------------------------------ versions
def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


DEFAULT_CANN_ROOTS = ("/usr/local/Ascend/ascend-toolkit/latest", "/usr/local/Ascend/cann")


def cann_version(env: Mapping[str, str], defaults: Sequence[str] = DEFAULT_CANN_ROOTS) -> str:
    """The CANN toolkit's version from its install record, ``<toolkit>/<arch>-linux/
    ascend_toolkit_install.info`` (``version=...``; CANN's installation guide, "File Paths":
    https://www.hiascend.com/document/detail/en/canncommercial/800/softwareinst/instg/instg_0044.html).
    The toolkit is where ``set_env.sh`` points ``ASCEND_TOOLKIT_HOME``/``ASCEND_HOME_PATH``, or
    the default root install."""
    roots = [env.get("ASCEND_TOOLKIT_HOME"), env.get("ASCEND_HOME_PATH"), *defaults]
    for root in filter(None, roots):
        for info in sorted(Path(root).glob("*-linux/ascend_toolkit_install.info")):
            found = re.search(r"^version=(\S+)", info.read_text(errors="replace"), re.M)
            if found:
                return found[1]
    return "not found (no ascend_toolkit_install.info under ASCEND_TOOLKIT_HOME or /usr/local)"


def versions(env: Mapping[str, str]) -> dict[str, str]:
    return {
        "sglang-ascend-fia": _version("sglang-ascend-fia"),
        "sglang": _version("sglang"),
        "torch": _version("torch"),
        "torch_npu": _version("torch-npu"),
        "cann": cann_version(env),
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------------- the child steps
def _probe() -> dict[str, Any]:
    """What this interpreter can run: verify-ops' own NPU test, the device, and the modules
    the suite needs. Run in a child, so the driver never holds an NPU context."""
    missing = [m for m in ("sglang", "pytest", "openai") if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("torch_npu") is None:
        return {"npu": None, "why": "torch_npu is not installed", "missing_modules": missing}
    from sglang_ascend_fia.verify import npu_device

    device, why = npu_device()
    if device is None:
        return {"npu": None, "why": why, "missing_modules": missing}
    import torch

    npu: Any = torch.npu  # type: ignore[attr-defined]
    name = f"npu ({npu.device_count()} x {npu.get_device_name(0)})"
    return {"npu": name, "why": "", "missing_modules": missing}


def _child(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout, cwd=REPO
        )
    except subprocess.TimeoutExpired as exc:
        return {"exit_code": None, "stdout": exc.stdout or "", "stderr": f"timed out: {exc}"}
    return {"exit_code": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def probe(env: Mapping[str, str]) -> dict[str, Any]:
    ran = _child([sys.executable, __file__, "--probe"], env, 300)
    try:
        # The last line: an import may print before it.
        return dict(json.loads(ran["stdout"].strip().splitlines()[-1]))
    except (json.JSONDecodeError, TypeError, IndexError):
        return {"npu": None, "why": f"the NPU probe failed: {ran['stderr'][-2000:]}"}


def doctor(env: Mapping[str, str]) -> dict[str, Any]:
    ran = _child(
        [sys.executable, "-m", "sglang_ascend_fia.cli", "doctor", "--json"], env, DOCTOR_TIMEOUT_S
    )
    # From its first line that opens the object: an import may print before it.
    start = re.search(r"^\{", ran["stdout"], re.M)
    try:
        report = json.loads(ran["stdout"][start.start() :]) if start else None
    except json.JSONDecodeError:
        report = None
    return {"exit_code": ran["exit_code"], "report": report, "stderr": ran["stderr"][-4000:]}


_VERIFY_HEADER = re.compile(r"^case\s+dtype\s+max abs\s+max rel\s+atol/rtol\s+result$")
_VERIFY_SUMMARY = re.compile(r"^(\d+)/(\d+) cases within tolerance$")


def parse_verify_table(text: str) -> list[dict[str, Any]]:
    """The rows of the table ``verify-ops`` prints (``verify.format_table``): columns start
    where the header's do, so a case name may hold spaces."""
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if _VERIFY_HEADER.match(line)), None)
    if header is None:
        return []
    dtype_at = lines[header].index("dtype")
    rows = []
    for line in lines[header + 1 :]:
        if _VERIFY_SUMMARY.match(line):
            break
        dtype, max_abs, max_rel, atol, status = line[dtype_at:].split(maxsplit=4)
        rows.append(
            {
                "case": line[:dtype_at].rstrip(),
                "dtype": dtype,
                "max_abs": float(max_abs),
                "max_rel": float(max_rel),
                "atol": float(atol),
                "ok": status == "ok",
                "detail": status.removeprefix("FAIL").strip(),
            }
        )
    return rows


def verify_ops(env: Mapping[str, str]) -> dict[str, Any]:
    ran = _child(
        [sys.executable, "-m", "sglang_ascend_fia.cli", "verify-ops"], env, VERIFY_OPS_TIMEOUT_S
    )
    print(ran["stdout"], end="", flush=True)
    cases = parse_verify_table(ran["stdout"])
    summary = next(
        (m for m in map(_VERIFY_SUMMARY.match, ran["stdout"].splitlines()) if m is not None), None
    )
    return {
        "exit_code": ran["exit_code"],
        "cases": cases,
        "within_tolerance": sum(c["ok"] for c in cases),
        "total": len(cases),
        # The tool's own count, so a row the parser missed shows as a mismatch.
        "summary": summary[0] if summary else None,
        "stderr": ran["stderr"][-4000:],
    }


def junit_outcomes(path: Path) -> dict[str, str]:
    """Each test case's outcome in a pytest junit xml: passed, failed, error or skipped."""
    if not path.is_file():
        return {}
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        outcome = next((t for t in ("failure", "error", "skipped") if t in tags), "passed")
        outcomes[case.get("name", "")] = {"failure": "failed"}.get(outcome, outcome)
    return outcomes


def suite(env: Mapping[str, str], results: Path) -> dict[str, Any]:
    junit = results / "junit.xml"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "npu",
        "tests/npu",
        "-rs",
        "-p",
        "no:cacheprovider",
    ]
    argv += [f"--junitxml={junit}"]
    # Streams to the terminal: the suite runs for a long time.
    code = subprocess.run(argv, env={**env, acceptance.RESULTS_ENV: str(results)}, cwd=REPO)
    return {"exit_code": code.returncode, "tests": junit_outcomes(junit)}


# ------------------------------------------------------------------------------ the report
def preflight(env: Mapping[str, str], probed: Mapping[str, Any]) -> list[str]:
    """Why the check cannot run here (empty: it can)."""
    reasons = []
    if probed.get("npu") is None:
        reasons.append(f"no NPU: {probed.get('why')}")
    missing = probed.get("missing_modules") or []
    if missing:
        reasons.append(f"not importable here: {', '.join(missing)} (the suite needs them)")
    rows = None
    for name in [acceptance.GSM8K_ENV, *(spec.path_env for spec in acceptance.MODELS)]:
        value = env.get(name)
        if not value:
            reasons.append(f"{name} is not set (the path of a local copy)")
        elif not Path(value).exists():
            reasons.append(f"{name}={value!r}: no such file or directory")
        elif name == acceptance.GSM8K_ENV:
            try:
                rows = acceptance.read_gsm8k(Path(value))
            except ValueError as exc:
                reasons.append(str(exc))
    if rows is not None:
        try:
            acceptance.question_count(env.get(acceptance.QUESTIONS_ENV), len(rows))
        except ValueError as exc:
            reasons.append(str(exc))
    return reasons


def verdict(report: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The report's status and why it is not ``passed``; ``passed`` needs every step to have
    run and passed, both models included."""
    if report.get("cannot_run"):
        return "not-run", list(report["cannot_run"])
    reasons = []
    doc = report.get("patch_status")
    if doc is None or doc["exit_code"] != 0 or doc["report"] is None:
        reasons.append(f"doctor --json did not pass (exit {doc and doc['exit_code']})")
    ops = report.get("verify_ops")
    if ops is None or ops["exit_code"] != 0 or not ops["cases"]:
        reasons.append(f"verify-ops did not pass (exit {ops and ops['exit_code']})")
    elif ops["within_tolerance"] != ops["total"]:
        failed = [c["case"] for c in ops["cases"] if not c["ok"]]
        reasons.append(f"verify-ops: {len(failed)} cases over tolerance: {'; '.join(failed)}")
    run = report.get("suite")
    if run is None or run["exit_code"] != 0:
        reasons.append(f"the suite did not pass (pytest exit {run and run['exit_code']})")
    tests = (run or {}).get("tests", {})
    models = report.get("models") or {}
    for spec in acceptance.MODELS:
        outcome = tests.get(spec.test_id, "not run")
        if outcome != "passed":
            reasons.append(f"{spec.test_id}: {outcome}")
        record = models.get(spec.name)
        if record is None:
            reasons.append(f"{spec.name}: no result recorded")
        else:
            reasons += [f"{spec.name}: {p}" for p in acceptance.record_problems(spec, record)]
    if report.get("error"):
        reasons.append(f"npu-check stopped: {report['error']}")
    return ("failed" if reasons else "passed"), reasons


def write_report(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Decide the status, then write ``report`` to ``path`` whole (a temporary file renamed)."""
    report["status"], report["reasons"] = verdict(report)
    report["finished_at"] = _now()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
    return report


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run(report_path: Path, base_env: Mapping[str, str]) -> int:
    env = acceptance.npu_server_env(base_env)
    results = report_path.with_name(report_path.stem + "-files")
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "started_at": _now(),
        "versions": versions(env),
        "thresholds": {spec.name: spec.min_accuracy for spec in acceptance.MODELS},
        "files": str(results),
        # Filled in as the steps run; null in a report where a step never ran.
        "device": None,
        "patch_status": None,
        "verify_ops": None,
        "suite": None,
        "models": None,
    }
    probed = probe(env)
    report["device"] = probed.get("npu") or f"no NPU ({probed.get('why')})"
    cannot = preflight(env, probed)
    if cannot:
        report["cannot_run"] = cannot
        write_report(report_path, report)
        print("npu-check: cannot run here, nothing was checked:", file=sys.stderr)
        for reason in cannot:
            print(f"  - {reason}", file=sys.stderr)
        print(f"npu-check: report (status not-run) written to {report_path}", file=sys.stderr)
        return EXIT["not-run"]
    try:
        results.mkdir(parents=True, exist_ok=True)
        for stale in results.glob("*"):
            stale.unlink()  # records of an earlier run must not count for this one
        print("npu-check: doctor --json", flush=True)
        report["patch_status"] = doctor(env)
        print("npu-check: verify-ops", flush=True)
        report["verify_ops"] = verify_ops(env)
        print("npu-check: pytest -m npu tests/npu", flush=True)
        report["suite"] = suite(env, results)
        report["models"] = acceptance.read_records(results)
    except BaseException as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        write_report(report_path, report)
        raise
    written = write_report(report_path, report)
    print(f"npu-check: {written['status']}; report written to {report_path}")
    for reason in written["reasons"]:
        print(f"  - {reason}")
    return EXIT[written["status"]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="npu_check", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--report", type=Path, default=Path("npu-report.json"), help="where to write the report"
    )
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(_probe()))
        return 0
    return run(args.report.resolve(), os.environ)


if __name__ == "__main__":
    sys.exit(main())
