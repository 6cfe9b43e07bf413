"""The start-up kernel check (``ops.kernels``) against the torch_npu stand-in lacking each kernel
in turn, and what each feature does about a missing kernel: the attention backends hand off to
sglang's own backend, a MoE model and ``w8a8_int8`` are refused at start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from sglang_ascend_fia.ops import kernels

SUPPORT = Path(__file__).resolve().parents[1] / "support"
ALL_KERNELS = sorted({k for names in kernels.FEATURE_KERNELS.values() for k in names})


@pytest.fixture(scope="module")
def lacking_each() -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(SUPPORT / "npu_standin"), str(Path(__file__).parent), os.environ["PYTHONPATH"]]
        ),
    }
    out = subprocess.run(
        [sys.executable, "-m", "kernel_check_child", *ALL_KERNELS],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("kernel", ALL_KERNELS)
def test_each_missing_kernel_is_named_by_every_feature_that_calls_it(
    lacking_each: dict[str, Any], kernel: str
) -> None:
    for feature, check in lacking_each[kernel].items():
        assert check["checked"] and check["torch_npu"] == "0.0.0+standin", check
        if kernel in kernels.FEATURE_KERNELS[feature]:
            assert check["problems"] == [{"kernel": kernel, "problem": "missing"}], check
            assert check["reason"] == (
                f"torch_npu 0.0.0+standin has no {kernel} (documented in torch_npu 2.14; "
                "install a torch_npu that provides it)"
            )
        else:
            assert check["problems"] == [], (feature, check)


def test_a_kernel_without_a_parameter_the_plugin_passes_is_named() -> None:
    fake = types.ModuleType("torch_npu")

    def npu_moe_init_routing_v2(x, expert_idx, active_num=-1, expert_num=-1):  # type: ignore[no-untyped-def]
        raise AssertionError("never called")

    fake.npu_moe_init_routing_v2 = npu_moe_init_routing_v2  # type: ignore[attr-defined]
    (problem,) = kernels.missing_in(fake, ["npu_moe_init_routing_v2"])
    assert problem.kernel == "npu_moe_init_routing_v2"
    assert problem.problem.startswith("takes no parameter active_expert_range")
    assert "quant_mode" in problem.problem


def test_without_torch_npu_nothing_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "torch_npu" else real(n, *a)
    )
    kernels.forget()
    try:
        result = kernels.check("mla")
        assert not result.checked and result.ok and result.torch_npu == "not installed"
    finally:
        kernels.forget()


def test_an_unknown_feature_is_refused_with_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown feature 'attn'; accepted: \['attention'"):
        kernels.check("attn")


def _lacking(feature: str, kernel: str) -> kernels.FeatureCheck:
    return kernels.FeatureCheck(feature, "2.1.0", True, (kernels.KernelProblem(kernel, "missing"),))


def test_w8a8_refuses_at_load_when_its_kernels_are_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sglang.srt.layers.quantization.w8a8_int8 import W8A8Int8Config, W8A8Int8LinearMethod

    from sglang_ascend_fia.w8a8 import methods

    monkeypatch.setattr(kernels, "check", lambda f: _lacking(f, "npu_quant_matmul"))
    config = W8A8Int8Config({})
    with pytest.raises(ValueError, match=r"w8a8_int8 cannot run: torch_npu 2.1.0 has no npu_q"):
        methods.get_quant_method(lambda *a: W8A8Int8LinearMethod(config), config, (), {})
