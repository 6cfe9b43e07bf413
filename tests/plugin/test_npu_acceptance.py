"""The NPU acceptance suite's own parts on CPU: the served-by check on fake server logs, GSM8K as
sglang scores it, the timing, the server's flags and environment, and ``tools/npu_check.py``'s
report (its status logic, its verify-ops reader, and a real run off an NPU)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from npu.acceptance import (
    HANDOFF_LINE,
    MODELS,
    ModelSpec,
    TimedReply,
    answer_value,
    npu_server_env,
    prompts,
    question_count,
    read_gsm8k,
    record_problems,
    score,
    served_by_problems,
    timing,
)
from testbed.engine import PYTHONPATH_DIR, SUPPORT_DIR, testbed_env
from testbed.server import CPU_SERVER_ARGS, server_argv

from sglang_ascend_fia.fia_backend import handoff
from sglang_ascend_fia.fia_backend.base import SERVED_LOG_PREFIX

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tools" / "npu_check.py"
QWEN, DEEPSEEK = MODELS


def _driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("npu_check_under_test", DRIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


npu_check = _driver()


# --------------------------------------------------------------------- fake server logs
def _line(message: str, tags: str = "") -> str:
    """One log line as sglang writes it: configure_logger's format with the scheduler's rank
    prefix (sglang utils/common.py:2629-2637, managers/scheduler.py:6279-6291)."""
    formatter = logging.Formatter(f"[%(asctime)s{tags}] %(message)s", "%Y-%m-%d %H:%M:%S")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None)
    return formatter.format(record)


MLA_LINE = SERVED_LOG_PREFIX["fia-mla"] + (
    "page_size=128, 8 query heads per rank, padded to 8 for prefill and 8 for decode)"
)
MHA_LINE = SERVED_LOG_PREFIX["fia"] + "page_size=128, kv_heads=2, head_dim=128)"
STOCK_LINE = HANDOFF_LINE + "DSA (the indexer) is not implemented by the FIA MLA backend"


def _log(*lines: str) -> str:
    return "\n".join(
        [
            _line("server_args=ServerArgs(model_path='/models/DeepSeek-V2-Lite-W8A8', ...)"),
            *lines,
            _line("Load weight end. type=DeepseekV2ForCausalLM", " TP1"),
            "INFO:     Uvicorn running on http://127.0.0.1:30000 (Press CTRL+C to quit)",
        ]
    )


def test_a_deepseek_served_by_fia_mla_on_both_ranks_passes() -> None:
    log = _log(_line(MLA_LINE, " TP0"), _line(MLA_LINE, " TP1"))
    assert served_by_problems(log, "fia-mla", 2) == []


def test_the_check_reads_ranks_behind_other_tags_and_milliseconds() -> None:
    log = _log(
        "[2026-01-02 03:04:05.678 DP0 TP0 EP0] " + MLA_LINE,
        "[2026-01-02 03:04:05.679 DP0 TP1 EP1] " + MLA_LINE,
    )
    assert served_by_problems(log, "fia-mla", 2) == []


def test_a_stock_served_deepseek_fails() -> None:
    log = _log(_line(STOCK_LINE, " TP0"), _line(STOCK_LINE, " TP1"))
    problems = served_by_problems(log, "fia-mla", 2)
    assert any("TP rank 0 logged no" in p for p in problems), problems
    assert any("TP rank 1 logged no" in p for p in problems), problems
    assert sum(p.startswith("handed off: ") for p in problems) == 2, problems


def test_a_hand_off_on_one_rank_fails_even_with_both_fia_lines() -> None:
    handed_off = _line(STOCK_LINE, " TP1")
    log = _log(_line(MLA_LINE, " TP0"), _line(MLA_LINE, " TP1"), handed_off)
    assert served_by_problems(log, "fia-mla", 2) == [f"handed off: {handed_off}"]


def test_an_mha_line_for_deepseek_fails() -> None:
    log = _log(_line(MHA_LINE, " TP0"), _line(MHA_LINE, " TP1"))
    problems = served_by_problems(log, "fia-mla", 2)
    assert len(problems) == 3, problems
    assert "the fia backend's line" in problems[2]
    # And an MLA line alongside does not make it pass.
    both = _log(*(_line(x, f" TP{r}") for r in (0, 1) for x in (MLA_LINE, MHA_LINE)))
    assert served_by_problems(both, "fia-mla", 2) == [problems[2]]


def test_an_mla_line_for_qwen_fails() -> None:
    log = _log(_line(MHA_LINE, " TP0"), _line(MHA_LINE, " TP1"), _line(MLA_LINE, " TP1"))
    assert served_by_problems(log, "fia", 2) == [
        f"the fia-mla backend's line {SERVED_LOG_PREFIX['fia-mla']!r}... is in the log"
    ]
    assert served_by_problems(log.replace(_line(MLA_LINE, " TP1"), ""), "fia", 2) == []


def test_one_of_two_ranks_fails() -> None:
    log = _log(_line(MLA_LINE, " TP0"))
    assert served_by_problems(log, "fia-mla", 2) == [
        f"TP rank 1 logged no {SERVED_LOG_PREFIX['fia-mla']!r}... line"
    ]


def test_an_untagged_line_is_no_rank_at_tp2_but_is_the_scheduler_at_tp1() -> None:
    log = _log(_line(MLA_LINE), _line(MLA_LINE, " TP0"))
    assert len(served_by_problems(log, "fia-mla", 2)) == 1
    assert served_by_problems(_log(_line(MLA_LINE)), "fia-mla", 1) == []
    # The line must open the message: quoted inside another message it does not count.
    quoted = _log(_line("echo: " + MLA_LINE, " TP0"), _line(MLA_LINE, " TP1"))
    assert len(served_by_problems(quoted, "fia-mla", 2)) == 1


def test_the_check_refuses_a_backend_or_tp_size_it_does_not_know() -> None:
    with pytest.raises(ValueError, match=r"backend='mla' is not a backend kind; use one of"):
        served_by_problems("", "mla", 2)
    with pytest.raises(ValueError, match=r"tp_size=0 is not a TP size"):
        served_by_problems("", "fia", 0)


def test_the_two_backend_lines_cannot_be_taken_for_each_other() -> None:
    fia, mla = SERVED_LOG_PREFIX["fia"], SERVED_LOG_PREFIX["fia-mla"]
    assert fia not in mla and mla not in fia
    assert {spec.backend for spec in MODELS} == set(SERVED_LOG_PREFIX)


def test_the_hand_off_line_is_what_handoff_record_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handoff, "_decisions", [])  # this process's real decisions stay
    with caplog.at_level(logging.WARNING, logger="sglang_ascend_fia.handoff"):
        handoff.record(handoff.Decision("sglang", "a reason", "ATB mode"))
    assert caplog.messages == [HANDOFF_LINE + "a reason (in its ATB mode)"]


# ------------------------------------------------------------------------------ GSM8K
def test_answers_are_read_as_sglangs_few_shot_gsm8k_reads_them() -> None:
    from sglang.test.few_shot_gsm8k import INVALID, get_answer_value

    texts = [
        " She has 3 + 4 = 7 apples.\n#### 7",
        " 1,234 dollars",
        " It costs $12.50, so 20 in all.",
        " no number here",
        " 5\n\nQuestion",
        "",
    ]
    for text in texts:
        want = get_answer_value(text)
        assert answer_value(text) == (None if want == INVALID else want), text
    assert answer_value(" 1,234 dollars") == 1234


def test_prompts_are_sglangs_few_shot_prompts() -> None:
    from sglang.test.few_shot_gsm8k import get_few_shot_examples, get_one_example

    rows = [
        {"question": f"What is {i} + {i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"}
        for i in range(9)
    ]
    shots = get_few_shot_examples(rows, 5)
    assert prompts(rows, 7) == [shots + get_one_example(rows, i, False) for i in range(7)]


def test_score_counts_a_failed_request_as_wrong() -> None:
    rows = [{"question": "q", "answer": f"... #### {n}"} for n in (7, 8, 9, 10)]
    replies: list[TimedReply | BaseException] = [
        TimedReply(" 3 + 4 = 7", 5, 0.1, 0.5),
        TimedReply(" it is 80", 5, 0.1, 0.5),
        TimedReply(" no idea", 3, 0.1, 0.3),
        TimeoutError("request timed out"),
    ]
    assert score(rows, replies) == {
        "questions": 4,
        "correct": 1,
        "accuracy": 0.25,
        "invalid": 0.5,
    }


def test_read_gsm8k_refuses_bad_input_naming_the_line(tmp_path: Path) -> None:
    good = [json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) for i in range(6)]
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(good) + "\n\n")
    assert len(read_gsm8k(path)) == 6
    path.write_text("\n".join([*good[:2], "{not json", *good[2:]]))
    with pytest.raises(ValueError, match=r"FIA_GSM8K_JSONL=.* line 3: not JSON"):
        read_gsm8k(path)
    path.write_text("\n".join([*good, json.dumps({"question": "q"})]))
    with pytest.raises(ValueError, match=r"line 7: expected an object with string 'question'"):
        read_gsm8k(path)
    path.write_text("\n".join(good[:5]))
    with pytest.raises(ValueError, match=r"holds 5 questions; at least 6 are needed"):
        read_gsm8k(path)
    with pytest.raises(ValueError, match=r"FIA_GSM8K_JSONL=.*missing.jsonl' cannot be read"):
        read_gsm8k(tmp_path / "missing.jsonl")


def test_question_count_takes_all_by_default_and_refuses_what_is_not_a_count() -> None:
    assert question_count(None, 1319) == 1319
    assert question_count("200", 1319) == 200
    for bad in ("abc", "0", "1320", "-5", "2.5"):
        with pytest.raises(ValueError, match=rf"FIA_GSM8K_QUESTIONS='{bad}' .* from 1 to 1319"):
            question_count(bad, 1319)


# ----------------------------------------------------------------------------- timing
def test_timing_reports_throughput_ttft_and_tpot() -> None:
    replies: list[TimedReply | BaseException] = [
        TimedReply("a", 11, 0.100, 1.100),  # 10 tokens after the first in 1 s: 100 ms each
        TimedReply("b", 21, 0.300, 1.300),  # 20 in 1 s: 50 ms
        TimedReply("c", 1, 0.200, 0.200),  # one token: no TPOT
        RuntimeError("the stream closed without its usage chunk: it ended early"),
    ]
    got = timing(replies, wall_s=2.0)
    assert got["requests"] == 4 and got["errors"] == 1
    assert "ended early" in got["first_error"]
    assert got["output_tokens"] == 33
    assert got["output_throughput_tok_s"] == pytest.approx(16.5)
    assert got["ttft_ms"] == pytest.approx({"mean": 200.0, "median": 200.0, "p99": 300.0})
    assert got["tpot_ms"] == pytest.approx({"mean": 75.0, "median": 75.0, "p99": 100.0})
    assert timing([], 1.0)["ttft_ms"] is None


# ------------------------------------------------------------------- server and environment
def test_the_npu_servers_get_only_what_a_user_passes() -> None:
    argv = server_argv("/models/ds", 30000, testbed_defaults=False, **DEEPSEEK.server_args())
    flags = argv[argv.index("--port") + 2 :]
    assert flags == [
        "--attention-backend",
        "ascend",
        "--device",
        "npu",
        "--page-size",
        "128",
        "--mem-fraction-static",
        "0.8",
        "--tp-size",
        "2",
        "--quantization",
        "modelslim",
        "--trust-remote-code",
    ]
    qwen = server_argv("/models/qwen", 30000, testbed_defaults=False, **QWEN.server_args())
    assert "--quantization" not in qwen and "--tp-size" in qwen
    for flag in ("--disable-cuda-graph", "--max-total-tokens", "--chunked-prefill-size", "cpu"):
        assert flag not in argv + qwen
    # Existing callers keep the CPU test bed's defaults.
    cpu = server_argv("/models/qwen", 30000, page_size=128)
    assert "--disable-cuda-graph" in cpu and cpu[cpu.index("--device") + 1] == "cpu"
    assert CPU_SERVER_ARGS["disable_cuda_graph"] is True


def test_the_npu_server_env_carries_nothing_of_the_test_bed() -> None:
    base = testbed_env(PYTHONPATH=os.pathsep.join([str(PYTHONPATH_DIR), "/opt/site"]))
    base["PYTHONPATH"] += os.pathsep + str(SUPPORT_DIR / "npu_standin")
    assert base["SGLANG_USE_CPU_ENGINE"] == "1" and str(SUPPORT_DIR) in base["PYTHONPATH"]
    env = npu_server_env(base)
    assert "SGLANG_USE_CPU_ENGINE" not in env and "TORCHDYNAMO_DISABLE" not in env
    assert env["PYTHONPATH"] == "/opt/site"
    assert env["ASCEND_USE_FIA"] == "1"
    assert "PYTHONPATH" not in npu_server_env({"PYTHONPATH": str(PYTHONPATH_DIR)})


def test_the_models_are_the_seeds_two_at_tp2_with_sglangs_thresholds() -> None:
    assert [(s.backend, s.tp_size, s.min_accuracy) for s in MODELS] == [
        ("fia", 2, 0.85),
        ("fia-mla", 2, 0.34),
    ]
    assert DEEPSEEK.extra_args == {"quantization": "modelslim", "trust_remote_code": True}


# ---------------------------------------------------------------------------- the report
def _record(spec: ModelSpec, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "model": spec.name,
        "served_by": [],
        "questions": 1319,
        "accuracy": spec.min_accuracy + 0.01,
        "metrics": {"errors": 0, "first_error": None},
    }
    return {**record, **changes}


def _passing_report() -> dict[str, Any]:
    return {
        "patch_status": {"exit_code": 0, "report": {"schema_version": 1}},
        "verify_ops": {
            "exit_code": 0,
            "cases": [{"case": "swiglu bf16", "ok": True}],
            "within_tolerance": 1,
            "total": 1,
        },
        "suite": {"exit_code": 0, "tests": {s.test_id: "passed" for s in MODELS}},
        "models": {s.name: _record(s) for s in MODELS},
    }


def test_record_problems_name_each_shortfall() -> None:
    assert record_problems(DEEPSEEK, _record(DEEPSEEK)) == []
    low = record_problems(DEEPSEEK, _record(DEEPSEEK, accuracy=0.339))
    assert low == ["GSM8K accuracy 0.339 over 1319 questions is below 0.34"]
    stock = record_problems(DEEPSEEK, _record(DEEPSEEK, served_by=["handed off: ..."]))
    assert stock == ["served by: handed off: ..."]
    errors = _record(DEEPSEEK, metrics={"errors": 2, "first_error": "TimeoutError()"})
    assert record_problems(DEEPSEEK, errors) == ["2 requests failed (first: TimeoutError())"]
    stopped = record_problems(QWEN, {"model": QWEN.name, "error": "ServerError: exited (1)"})
    assert stopped[:3] == [
        "the test stopped: ServerError: exited (1)",
        "served by: no served-by check ran",
        "no requests ran",
    ]


@pytest.mark.parametrize(
    "break_it",
    [
        lambda r: r["patch_status"].update(exit_code=1),
        lambda r: r["patch_status"].update(report=None),
        lambda r: r.update(patch_status=None),
        lambda r: r["verify_ops"].update(exit_code=1),
        lambda r: r["verify_ops"].update(cases=[], within_tolerance=0, total=0),
        lambda r: r["verify_ops"].update(
            cases=[{"case": "swiglu bf16", "ok": False}], within_tolerance=0
        ),
        lambda r: r["suite"].update(exit_code=1),
        lambda r: r["suite"]["tests"].update({DEEPSEEK.test_id: "skipped"}),
        lambda r: r["suite"]["tests"].pop(QWEN.test_id),
        lambda r: r["models"].update({DEEPSEEK.name: None}),
        lambda r: r["models"][QWEN.name].update(accuracy=0.84),
        lambda r: r["models"][DEEPSEEK.name].update(served_by=["handed off: x"]),
        lambda r: r.update(error="KeyboardInterrupt: "),
    ],
)
def test_any_failure_is_not_success(break_it: Any, tmp_path: Path) -> None:
    assert npu_check.verdict(_passing_report()) == ("passed", [])
    report = _passing_report()
    break_it(report)
    written = npu_check.write_report(tmp_path / "r.json", report)
    assert written["status"] == "failed" and written["reasons"], written
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "failed"


def test_not_run_is_never_success(tmp_path: Path) -> None:
    report = {**_passing_report(), "cannot_run": ["no NPU: torch_npu is not installed"]}
    written = npu_check.write_report(tmp_path / "r.json", report)
    assert (written["status"], written["reasons"]) == ("not-run", report["cannot_run"])
    assert npu_check.EXIT["not-run"] == 2 and npu_check.EXIT["failed"] == 1


def test_the_verify_ops_table_reads_back_into_rows() -> None:
    from sglang_ascend_fia.verify import Result, format_table

    failed = "output 0: 3 elements over tolerance; output 1: NaN"
    results = [
        Result("FIA BSND paged decode GQA 32:4 D128 page128", torch.bfloat16, 1e-3, 2e-3, True),
        Result("swiglu fp16 3-D, split along dim 1", torch.float16, 0.5, 0.25, False, failed),
    ]
    text = "some import warning\n" + format_table(results) + "\n"
    rows = npu_check.parse_verify_table(text)
    assert [(r["case"], r["dtype"], r["ok"]) for r in rows] == [
        (results[0].name, "bfloat16", True),
        (results[1].name, "float16", False),
    ]
    assert rows[1]["detail"] == results[1].detail
    assert rows[1]["max_abs"] == pytest.approx(0.5) and rows[0]["max_rel"] == pytest.approx(2e-3)
    assert npu_check.parse_verify_table("verify-ops: no NPU available") == []


def test_junit_outcomes(tmp_path: Path) -> None:
    suite = ET.Element("testsuite")
    for name, child in [(QWEN.test_id, None), (DEEPSEEK.test_id, "skipped"), ("t3", "failure")]:
        case = ET.SubElement(suite, "testcase", name=name)
        if child:
            ET.SubElement(case, child)
    path = tmp_path / "junit.xml"
    ET.ElementTree(suite).write(path)
    assert npu_check.junit_outcomes(path) == {
        QWEN.test_id: "passed",
        DEEPSEEK.test_id: "skipped",
        "t3": "failed",
    }


def test_cann_version_from_the_toolkit_install_record(tmp_path: Path) -> None:
    info = tmp_path / "aarch64-linux" / "ascend_toolkit_install.info"
    info.parent.mkdir()
    info.write_text("package_name=Ascend-cann-toolkit\nversion=8.0.RC2\narch=aarch64\n")
    assert npu_check.cann_version({"ASCEND_TOOLKIT_HOME": str(tmp_path)}, ()) == "8.0.RC2"
    assert npu_check.cann_version({"ASCEND_HOME_PATH": str(tmp_path)}, ()) == "8.0.RC2"
    missing = npu_check.cann_version({"ASCEND_TOOLKIT_HOME": str(tmp_path / "x")}, ())
    assert missing.startswith("not found")


def test_a_run_reports_passed_only_when_every_step_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver's own sequence, with each step's child replaced by what it would return."""
    good = _passing_report()
    monkeypatch.setattr(npu_check, "probe", lambda env: {"npu": "npu (2 x Ascend910B)"})
    monkeypatch.setattr(npu_check, "preflight", lambda env, probed: [])
    monkeypatch.setattr(npu_check, "doctor", lambda env: good["patch_status"])
    monkeypatch.setattr(npu_check, "verify_ops", lambda env: good["verify_ops"])

    def suite(env: dict[str, str], results: Path) -> dict[str, Any]:
        assert env["ASCEND_USE_FIA"] == "1" and "SGLANG_USE_CPU_ENGINE" not in env
        for spec in MODELS:
            (results / f"{spec.name}.json").write_text(json.dumps(_record(spec)))
        return good["suite"]

    monkeypatch.setattr(npu_check, "suite", suite)
    path = tmp_path / "npu-report.json"
    assert npu_check.run(path, {"SGLANG_USE_CPU_ENGINE": "1"}) == 0
    report = json.loads(path.read_text())
    assert report["status"] == "passed"
    assert set(report) >= {"versions", "device", "patch_status", "verify_ops", "models"}
    assert report["models"][DEEPSEEK.name]["accuracy"] == DEEPSEEK.min_accuracy + 0.01
    # The suite writes no records this time; the last run's must not count: failed.
    monkeypatch.setattr(npu_check, "suite", lambda env, results: good["suite"])
    assert npu_check.run(path, {}) == 1
    assert json.loads(path.read_text())["status"] == "failed"


def _run_driver(
    tmp_path: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], Any]:
    report = tmp_path / "npu-report.json"
    proc = subprocess.run(
        [sys.executable, str(DRIVER), "--report", str(report)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, json.loads(report.read_text())


def test_off_an_npu_the_driver_says_it_cannot_run_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIA_")}
    proc, report = _run_driver(tmp_path, env)
    assert proc.returncode == 2, proc.stderr
    assert "npu-check: cannot run here, nothing was checked:" in proc.stderr
    assert "no NPU: torch_npu is not installed" in proc.stderr
    assert report["status"] == "not-run"
    assert "no NPU: torch_npu is not installed" in report["reasons"]
    assert report["versions"]["sglang-ascend-fia"] != "absent"
    assert report["verify_ops"] is None and report["models"] is None


def test_a_set_up_machine_without_an_npu_device_still_cannot_pass(tmp_path: Path) -> None:
    """Every input set, and a torch_npu that imports but sees no device (torch.npu absent)."""
    fake = tmp_path / "site" / "torch_npu"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text((json.dumps({"question": "q", "answer": "#### 1"}) + "\n") * 8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIA_")}
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), env.get("PYTHONPATH", "")])
    env |= {"FIA_GSM8K_JSONL": str(jsonl)} | {s.path_env: str(tmp_path) for s in MODELS}
    started = time.monotonic()
    proc, report = _run_driver(tmp_path, env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert report["reasons"] == ["no NPU: torch.npu.is_available() is False"], report
    assert report["status"] == "not-run" and report["suite"] is None
    assert time.monotonic() - started < 300
