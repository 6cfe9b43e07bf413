"""``make demo``'s verdict: any token mismatch or a forward with other than one FIA launch per
layer must fail it (the generation itself is covered by the e2e engine tests).

``tests/demo`` has no ``__init__.py`` on purpose: as a package it would be named ``demo`` and
shadow the repository's ``demo`` package that this module tests.
"""

from __future__ import annotations

from demo.run import Row, main, render

TOKENS = list(range(10, 26))


def rows(**changes: list[int]) -> list[Row]:
    good = [
        Row(5, 0, TOKENS, TOKENS, TOKENS),
        Row(300, 256, TOKENS[::-1], TOKENS[::-1], TOKENS[::-1]),
    ]
    for field, value in changes.items():
        setattr(good[1], field, value)
    return good


def test_all_matching_passes() -> None:
    text, ok = render(rows(), {1.0}, {"plugin generate": 1.5})
    assert ok
    assert "✗" not in text
    assert "all tokens match" in text
    assert "plugin generate 1.50s" in text
    assert " 256 " in text  # the cached-token column


def test_hf_mismatch_fails() -> None:
    text, ok = render(rows(hf=[*TOKENS[:-1], 0]), {1.0}, {})
    assert not ok
    assert "MISMATCH" in text
    line = text.splitlines()[2]
    assert line.rstrip().endswith("✗     ✓"), line


def test_stock_mismatch_fails() -> None:
    text, ok = render(rows(stock=[0, *TOKENS[1:]]), {1.0}, {})
    assert not ok
    assert text.splitlines()[2].rstrip().endswith("✓     ✗")


def test_extra_launches_fail() -> None:
    text, ok = render(rows(), {1.0, 2.0}, {})
    assert not ok
    assert "[1.0, 2.0] ✗" in text


def test_no_arguments_accepted(capsys) -> None:  # type: ignore[no-untyped-def]
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["--fast"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --fast" in capsys.readouterr().err


def _load(**changes: object):  # type: ignore[no-untyped-def]
    from testbed.load_vs_stock import LoadComparison, ServedLoad

    load = LoadComparison(
        requests=64,
        concurrency=16,
        plugin=ServedLoad(tokens_per_s=150.0, retracted=7),
        stock=ServedLoad(tokens_per_s=100.0, retracted=6),
        differ_from_one_at_a_time=None,
        differ_from_stock=0,
    )
    for name, value in changes.items():
        setattr(load, name, value)
    return load


def test_load_report_shows_requests_errors_and_throughput_against_stock() -> None:
    from demo.run import render_load

    text, ok = render_load(_load())
    assert ok
    assert "requests: 64 per server (16 at a time), errors/drops/truncations: 0 ✓" in text
    assert "plugin 150.0 tok/s, stock torch_native 100.0 tok/s, ratio 1.50" in text
    assert "plugin 7, stock 6" in text


def test_load_errors_or_differences_from_stock_fail() -> None:
    from testbed.load_vs_stock import ServedLoad

    from demo.run import render_load

    broken = ServedLoad(tokens_per_s=1.0, problems=["#3 chat stream=True: ReadTimeout: x"])
    text, ok = render_load(_load(plugin=broken))
    assert not ok
    assert "errors/drops/truncations: 1 ✗" in text and "#3 chat stream=True" in text
    text, ok = render_load(_load(differ_from_stock=2))
    assert not ok
    assert "differ from stock's: 2 ✗" in text
