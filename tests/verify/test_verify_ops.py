"""verify-ops on the CPU: the reference against itself must pass, and an injected error must not."""

from __future__ import annotations

import importlib
import math
import pkgutil

import pytest
import torch

from sglang_ascend_fia import verify as verify_ops
from sglang_ascend_fia.verify import cases as verify_cases
from sglang_ascend_fia.verify.case import TOLERANCES, Case, CaseFactory, Outputs
from sglang_ascend_fia.verify.cases.attention import CASES as ATTENTION_CASES

ALL_CASES = verify_ops.all_cases()


@pytest.fixture(scope="module")
def cases() -> list[CaseFactory]:
    return verify_ops.all_cases()


def test_registry_collects_every_case_module(cases: list[CaseFactory]) -> None:
    """Names are unique, every module in ``verify.cases`` with a ``CASES`` list is registered, and
    its cases are collected (which ops they call, and with which arguments, is audited in
    test_verify_coverage.py)."""
    names = [make()[0] for make in cases]
    assert len(names) == len(set(names))
    package = verify_cases.__name__
    modules = [
        importlib.import_module(f"{package}.{m.name}")
        for m in pkgutil.iter_modules(verify_cases.__path__)
    ]
    with_cases = [module for module in modules if hasattr(module, "CASES")]
    assert set(with_cases) == set(verify_ops.CASE_MODULES), "register new case modules"
    for module in verify_ops.CASE_MODULES:
        listed = module.CASES
        assert listed and {make()[0] for make in listed} <= set(names), module.__name__


@pytest.mark.parametrize("make", ALL_CASES, ids=lambda make: make.__name__)
def test_case_is_deterministic_and_fully_defined(make: CaseFactory) -> None:
    name, run, dtype = make()
    first, second = run("cpu"), run("cpu")
    assert dtype in TOLERANCES and len(first) > 0
    for a, b in zip(first, second, strict=True):
        assert a.device.type == "cpu"
        assert torch.equal(a, b)
        assert bool(torch.isfinite(a.float()).all()), f"{name}: output depends on undefined rows"


def test_reference_against_itself_passes_every_case(cases: list[CaseFactory]) -> None:
    results = verify_ops.verify(cases, "cpu")
    assert all(r.ok for r in results), verify_ops.format_table(results)
    assert all(r.max_abs == 0.0 for r in results)
    table = verify_ops.format_table(results)
    assert f"{len(results)}/{len(results)} cases within tolerance" in table


def _perturb(outputs: Outputs, dtype: torch.dtype) -> Outputs:
    """Move one element of the first output by three tolerances (or one integer step)."""
    first = outputs[0].clone()
    flat = first.view(-1)
    if first.is_floating_point():
        atol, rtol = TOLERANCES[dtype]
        value = float(flat[0])
        flat[0] = value + 3 * (atol + rtol * abs(value)) + 0.02 * abs(value)
    else:
        flat[0] += 1
    return (first, *outputs[1:])


def test_injected_perturbation_fails_every_case(cases: list[CaseFactory]) -> None:
    results = verify_ops.verify(cases, "cpu", perturb=_perturb)
    missed = [r.name for r in results if r.ok]
    assert not missed, f"perturbation not caught: {missed}"
    assert "FAIL" in verify_ops.format_table(results)


def test_compare_rules() -> None:
    f32 = torch.float32
    want = torch.tensor([1.0, -math.inf, 3.0])
    assert verify_ops.compare((want.clone(),), (want,), f32)[2]
    assert not verify_ops.compare((torch.tensor([1.0, 0.0, 3.0]),), (want,), f32)[2]  # inf lost
    assert not verify_ops.compare((torch.tensor([1.0, -math.inf, math.nan]),), (want,), f32)[2]
    assert not verify_ops.compare((want[:2],), (want,), f32)[2]  # shape
    assert not verify_ops.compare((want, want), (want,), f32)[2]  # output count
    ok_abs, ok_rel, ok, _ = verify_ops.compare(
        (torch.tensor([1.00005]),), (torch.tensor([1.0]),), f32
    )
    assert (
        ok and ok_abs == pytest.approx(5e-5, rel=1e-2) and ok_rel == pytest.approx(5e-5, rel=1e-2)
    )
    ints = torch.tensor([1, 2, 3], dtype=torch.int32)
    assert verify_ops.compare((ints,), (ints.clone(),), f32)[2]
    assert not verify_ops.compare((ints + 1,), (ints,), f32)[2]


def test_a_raising_case_is_reported_not_fatal() -> None:
    def broken() -> Case:
        def run(device: str) -> Outputs:
            raise RuntimeError("kernel refused")

        return "broken", run, torch.float32

    results = verify_ops.verify([broken, ATTENTION_CASES[0]], "cpu")
    assert [r.ok for r in results] == [False, True]
    assert "kernel refused" in results[0].detail


def test_main_without_npu_says_so_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_ops.main([]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "no NPU available" in out[0]


def test_main_lists_cases(capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_ops.main(["--list", "-k", "scatter"]) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert listed and all("scatter" in line for line in listed)


def test_main_on_a_device_prints_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The NPU path end to end, with the CPU standing in for the device."""
    monkeypatch.setattr(verify_ops, "npu_device", lambda: ("cpu", ""))
    assert verify_ops.main(["-k", "scatter_pa_kv_cache 'PA_NZ'"]) == 0
    assert "1/1 cases within tolerance" in capsys.readouterr().out
    monkeypatch.setattr(verify_ops, "all_cases", lambda: [_broken_case])
    assert verify_ops.main([]) == 1


def _broken_case() -> Case:
    calls = {"n": 0}

    def run(device: str) -> Outputs:
        calls["n"] += 1  # the device side runs first and comes out wrong
        return (torch.tensor([1.0 if calls["n"] == 1 else 2.0]),)

    return "wrong on the device", run, torch.float32
