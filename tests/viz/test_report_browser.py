"""The report in a real browser: headless Chromium screenshot is not blank, no JavaScript errors, and a
legend click on a 3D event display hides the trace."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import browser  # noqa: E402
from fake import fake_events, fake_results  # noqa: E402

pytestmark = pytest.mark.skipif(
    browser.find_chromium() is None,
    reason="no Chromium browser installed (Debian: apt-get install -y chromium; .ci/run installs it)",
)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    from larpanda.viz.report import build_report

    d = tmp_path_factory.mktemp("report")
    runs = {"pretrain": [{"step": i, "loss": 6.0 / (1 + i)} for i in range(30)],
            "linear @ 1 %": [{"step": i, "loss": 1.5 / (1 + i)} for i in range(30)]}
    return build_report(fake_results(), d / "report.html", events=fake_events(1), extras={"runs": runs})


def test_report_runs_without_js_errors_and_legend_toggles(report_html, tmp_path):
    result, stderr = browser.probe(report_html, tmp_path)
    assert not result.get("missing"), f"the probe did not run (chromium rc {result.get('rc')}): {stderr[-2000:]}"
    assert "exc" not in result, result
    assert result["errs"] == [], result["errs"]
    assert browser.console_errors(stderr) == []
    assert result["n_plots"] >= 8  # label efficiency, classes, confusion, panoptic, event displays, curves
    assert result["too_wide"] == [], result["too_wide"]  # every figure fits its column (none hidden under its neighbour)
    assert result["n3d"] >= 3 and result["gl"], result
    # A user's legend click hides the first class of the first 3D display.
    assert result["before"] == "true" and result.get("clicked") == 1, result
    assert result["after"] == "legendonly", result


def test_probe_detects_a_javascript_error(tmp_path):
    """The error probe is not vacuous: a page that throws is reported."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head></head><body><p>x</p><script>undefinedFunction();</script></body></html>")
    result, stderr = browser.probe(page, tmp_path)
    assert any("undefinedFunction" in e for e in result["errs"]), (result, stderr[-1000:])


def test_screenshot_is_not_blank(report_html, tmp_path):
    png = browser.screenshot(report_html, tmp_path / "shot.png", tmp_path, size=(1280, 1400), scale=0.5)
    assert png.exists() and png.stat().st_size > 5000
    st = browser.image_stats(png)
    assert st["width"] == 640 and st["height"] == 700, st
    assert st["distinct_colors"] >= 50, st  # text, plots and coloured points, not one flat colour
    assert st["dominant_fraction"] < 0.9, st
