"""``python -m bench.report`` (run by ``make bench``): docs/benchmarks.md's "Latest run" table is
generated from bench-results.json between two markers, and nothing else on the page changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report

RESULTS = {
    "machine": {"platform": "Linux-x86_64", "cpus": 2, "torch": "2.13.0"},
    "ops": {"paged_decode_bw_ratio": 0.1834567},
    "moe": {"launches_per_layer_b1": 6, "layer_us": {"plugin_b64": 650.0}},
}


def _page(tmp_path: Path, middle: str = "stale table") -> Path:
    page = tmp_path / "benchmarks.md"
    page.write_text(
        f"# Benchmarks\n\nhand-written\n\n{report.BEGIN} (generated) -->\n{middle}\n{report.END}\n"
        "\nafter\n"
    )
    return page


def test_the_table_is_rewritten_between_the_markers_only(tmp_path: Path) -> None:
    results = tmp_path / "bench-results.json"
    results.write_text(json.dumps(RESULTS))
    page = _page(tmp_path)
    assert report.main(["--results", str(results), "--page", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written\n\n")
    assert text.endswith(f"{report.END}\n\nafter\n")
    assert "stale table" not in text
    assert "(platform Linux-x86_64, cpus 2, torch 2.13.0)" in text
    assert "| `ops.paged_decode_bw_ratio` | 0.1835 |" in text
    assert "| `moe.layer_us.plugin_b64` | 650 |" in text
    assert "| `moe.launches_per_layer_b1` | 6 |" in text
    # a second run over the generated page gives the same page
    assert report.main(["--results", str(results), "--page", str(page)]) == 0
    assert page.read_text() == text


def test_a_page_without_the_markers_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n")
    with pytest.raises(ValueError, match="needs one"):
        report.update(page.read_text(), "body")


def test_missing_results_say_how_to_make_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        report.main(["--results", str(tmp_path / "none.json"), "--page", str(_page(tmp_path))])
    assert "run `make bench`" in capsys.readouterr().err


def test_the_real_page_has_the_markers() -> None:
    report.update(report.PAGE.read_text(), "body")  # raises without them
