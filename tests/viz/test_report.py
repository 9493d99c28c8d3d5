"""The HTML report builder: self-contained, every section present, numbers rendered, atomic write."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake import fake_events, fake_results  # noqa: E402

from larpanda.viz import plots, report, sections  # noqa: E402


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("r") / "sub" / "report.html"
    runs = {"pretrain": [{"step": i, "loss": 5.0 - 0.1 * i} for i in range(20)]}
    p = report.build_report(fake_results(), out, events=fake_events(1), extras={"runs": runs})
    return p, p.read_text()


def test_self_contained_offline(page):
    path, html = page
    assert path.exists() and not list(path.parent.glob(".*.tmp"))  # atomic: no temp file left
    assert html.count("plotly.js v") == 1  # plotly.js inlined exactly once
    # no network: no external script/stylesheet/image reference (http(s) URLs only inside plotly.js itself)
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', html)
    assert "cdn.plot.ly" not in html.split("</script>", 1)[1]


def test_sections_and_numbers(page):
    _, html = page
    for anchor in ("summary", "label-efficiency", "classes", "panoptic", "events", "features", "training", "run"):
        assert f'id="{anchor}"' in html, anchor
    res = fake_results()
    lin = next(r for r in res["semantic"] if r["mode"] == "linear" and r["label_fraction"] == 0.01)
    scr = next(r for r in res["semantic"] if r["mode"] == "scratch" and r["label_fraction"] == 0.01)
    assert f"{100 * lin['mIoU']:.1f}" in html
    assert f"{100 * (lin['mIoU'] - scr['mIoU']):+.1f}" in html  # the headline delta
    assert "0.830" in html  # particle ARI
    assert "480 steps (best val PQ at 300)" in html  # how long the detector trained, and the model kept (by which metric)
    for div in ("label-efficiency-plot", "ev0-truth-semantic", "ev0-pred-semantic", "ev0-truth-particle",
                "ev0-truth-interaction", "ev0-energy", "pca0"):
        assert f'id="{div}"' in html, div


def test_element_ids_are_unique(page):
    """Plotly draws into ``getElementById(div_id)``: a figure whose id repeats a section anchor was drawn into
    the section itself (over its heading and table)."""
    _, html = page
    ids = re.findall(r'\bid="([^"]+)"', html)
    dup = sorted({i for i in ids if ids.count(i) > 1})
    assert not dup, dup


def test_report_from_results_json_with_nulls(tmp_path):
    """Undefined metrics (NaN: no particle predicted, a class absent) are null in results.json; a report
    built from the file shows them as "–" instead of failing."""
    import json

    from larpanda.atomic import json_text

    res = fake_results()
    res["panoptic"][0]["ari"] = float("nan")
    res["semantic"][0]["IoU_michel"] = float("nan")
    loaded = json.loads(json_text(res))
    assert loaded["panoptic"][0]["ari"] is None
    html = report.build_report(loaded, tmp_path / "r.html").read_text()
    assert "particle clustering ARI" in html and '<div class="big">–</div>' in html


def test_partial_results_and_sections(tmp_path):
    """study / evaluate --report use the same builder with only what they have."""
    p = report.build_report({"semantic": fake_results()["semantic"][:2]}, tmp_path / "a.html")
    html = p.read_text()
    assert 'id="label-efficiency"' in html and 'id="panoptic"' not in html and 'id="events"' not in html
    metrics = {"mIoU": 0.5, "macro_F1": 0.6, "allAcc": 0.9, "class_names": ["shower", "track", "michel", "delta", "led"],
               "confusion": np.eye(5, dtype=int).tolist(), **{f"IoU_{c}": 0.5 for c in ("shower", "track", "michel", "delta", "led")}}
    p2 = report.write_page(tmp_path / "b.html", [sections.semantic_metrics_section(metrics)], title="eval")
    assert "50.0" in p2.read_text() and p2.read_text().count("plotly.js v") == 1


def test_label_efficiency_figure_log_axis_and_percent():
    rows = fake_results()["semantic"]
    fig = plots.label_efficiency_figure(rows)
    assert fig.layout.xaxis.type == "log"
    lin = next(t for t in fig.data if t.name == "linear")
    assert list(lin.x) == [1.0, 10.0, 100.0]
    exp = [100 * r["mIoU"] for r in sorted((r for r in rows if r["mode"] == "linear"), key=lambda r: r["label_fraction"])]
    assert np.allclose(lin.y, exp)


def test_pca_rgb_separates_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8)) * 0.1
    b = rng.normal(size=(200, 8)) * 0.1 + 3.0
    rgb = plots.pca_rgb(np.concatenate([a, b]))
    assert rgb.shape == (400, 3) and rgb.min() >= 0 and rgb.max() <= 1
    # the first component splits the two groups to opposite ends of the colour range
    assert abs(rgb[:200, 0].mean() - rgb[200:, 0].mean()) > 0.8


def test_confusion_figure_row_normalised():
    fig = plots.confusion_figure([[3, 1], [0, 4]], ["a", "b"])
    assert np.allclose(np.asarray(fig.data[0].z), [[75, 25], [0, 100]])


def test_read_metrics_jsonl_skips_torn_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0}\n{"step": 3, "lo')
    assert [r["step"] for r in plots.read_metrics_jsonl(p)] == [1, 2]
