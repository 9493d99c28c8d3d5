"""``benchmarks/gpu_check.py --device cpu --quick``: every section runs on the CPU and the JSON and the
Markdown report have their schema (the dry run of the check that a GPU machine runs in full)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ("environment", "device_tests", "throughput", "profile", "pretrain")


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, OMP_NUM_THREADS="1", LARPANDA_TEST_THREADS="1")
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick", "--threads", "1",
           "--out", str(out)]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text(), out


def test_every_section_ran(check):
    report = check[0]
    assert report["schema"] == "larpanda.gpu_check/1" and report["device"] == "cpu" and report["quick"]
    for name in SECTIONS:
        s = report["sections"][name]
        assert s["status"] in ("ok", "error", "skipped")
        assert s["status"] == "ok", (name, s.get("error"), s.get("traceback"))
        assert s["wall_s"] >= 0 and s["budget_s"] > 0
    assert report["wall_s"] > 0


def test_environment(check):
    env = check[0]["sections"]["environment"]
    assert env["torch"] and env["device"] == "cpu" and env["python"]
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    assert set(env["section_wall_s"]) == set(SECTIONS)
    assert env["plotly_imported"] is False  # the GPU machine has no plotly


def test_device_tests_listed_and_passed(check):
    d = check[0]["sections"]["device_tests"]
    names = [t["name"] for t in d["tests"]]
    for expected in ("test_sparse_conv.py::test_forward_backward_equals_dense", "test_ptv3_fixture.py::test_small_fixture",
                     "test_device.py::test_patch_attention_matches_naive", "test_device.py::test_small_fixture_bf16_autocast",
                     "test_device.py::test_eval_bit_identical"):
        assert any(expected in n for n in names), expected
    assert all(t["outcome"] in ("passed", "failed", "error", "skipped") and t["time_s"] >= 0 for t in d["tests"])
    assert d["counts"]["failed"] == d["counts"]["error"] == 0, [t for t in d["tests"] if t["outcome"] != "passed"]
    assert d["all_passed"] and d["returncode"] == 0 and d["counts"]["passed"] >= 20
    assert (check[2] / "device_tests.xml").exists()


def test_throughput_numbers(check):
    t = check[0]["sections"]["throughput"]
    for task in ("semantic", "panoptic", "embed"):
        for dtype in ("fp32", "bf16"):
            one = [r for r in t["rows"] if r["task"] == task and r["dtype"] == dtype and r["batch"] == 1]
            assert len(one) == 1 and one[0]["events_per_s"] > 0 and one[0]["ms_per_event"] > 0, (task, dtype)
            assert one[0]["peak_gb"] is None and one[0]["rss_mb"] > 0  # CPU: RSS instead of device memory
        best = t["summary"][task]["best"]
        assert best["events_per_s"] > 0 and best["batch"] in (1, 2)
    assert t["summary"]["semantic"]["target_events_per_s"] == 240 and t["summary"]["panoptic"]["target_events_per_s"] == 60
    assert t["summary"]["semantic"]["meets_target"] is None  # judged only on a GPU with panda-base
    assert t["summary"]["panoptic"]["anchor_a100"]["events_per_s"] == 29
    assert [r for r in t["rows"] if r["task"] == "panoptic" and "events_per_s" in r][0]["instances_per_event"] >= 0


def test_profile_and_pretrain_numbers(check):
    p = check[0]["sections"]["profile"]
    assert 1 <= len(p["top_ops"]) <= 15 and all(r["self_ms"] >= 0 and r["calls"] > 0 for r in p["top_ops"])
    assert 0 < p["sparse_conv_share"] < 1 and 0 < p["shares_fp32"]["attention_share"] < 1
    assert p["shares_fp32"]["sparse_conv_calls"] > 0 and p["clock"] == "cpu"
    pre = check[0]["sections"]["pretrain"]
    ok = [r for r in pre["rows"] if "step_s" in r]
    assert ok and ok[0]["batch"] == 2 and all(r["step_s"] > 0 and r["points_per_step"] > 0 for r in ok)
    # batch 4 is skipped only when the machine is so loaded that it would overrun the section's budget
    assert pre["largest_batch_fitting"] in (2, 4) and pre["stopped"] in ("cap", "budget") and pre["largest_is_lower_bound"]
    assert pre["anchor_a100"] == {"batch": 12, "step_s": 0.895, "peak_gb": 34.3}


def test_pretrain_batch_search_doubles_then_bisects(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_check_measure import next_batch

    tried, seq = {}, []
    while (b := next_batch(tried, 12, 1024)) is not None:  # a device where 70 events fit and 71 do not
        seq.append(b)
        tried[b] = b <= 70
    assert seq == [12, 24, 48, 96, 72, 60, 66]
    assert next_batch({2: True}, 2, 4) == 4 and next_batch({2: True, 4: True}, 2, 4) is None
    assert next_batch({12: False}, 12, 1024) is None


def test_markdown_tables(check):
    md = check[1]
    for name in SECTIONS:
        assert f"| {name} | ok |" in md, name
    for row in ("| semantic | fp32 | 1 |", "| panoptic | bf16 | 1 |", "| embed | fp32 | 1 |", "| 2 | "):
        assert row in md, row
    for title in ("## Throughput", "## Pretraining step", "## Profile", "## Device tests"):
        assert title in md
    assert "| tests/nn/test_device.py::test_small_fixture_bf16_autocast | passed |" in md


def test_markdown_of_a_partial_report_with_errors(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_check_report import markdown

    best = {"dtype": "bf16", "batch": 8, "events_per_s": 300.0, "ms_per_event": 3.33, "peak_gb": 2.1}
    rows = [{"task": "semantic", "dtype": "bf16", "batch": 8, "events_per_s": 300.0, "ms_per_event": 3.33, "peak_gb": 2.1},
            {"task": "panoptic", "dtype": "fp32", "error": "ValueError: a|b"}]
    report = {"device": "cuda", "quick": False, "started": "now", "anchors": {"semantic": {"events_per_s": 120}},
              "targets": {"semantic": 240},
              "sections": {"environment": {"status": "error", "error": "RuntimeError: boom", "wall_s": 0.1},
                           "throughput": {"status": "ok", "wall_s": 9.0, "rows": rows, "summary": {"semantic": {"best": best}}}}}
    md = markdown(report)
    assert "| environment | error | 0.1 | RuntimeError: boom |" in md and "unfinished" in md
    assert "| semantic | bf16 | 8 | 300.0 | 3.33 | 2.1 | 120 | 240 |  |" in md
    assert "| panoptic | fp32 |  |  |  |  |  |  | ValueError: a\\|b |" in md
    assert "panoptic fp32: ValueError: a\\|b; semantic best 300.0 ev/s (bf16, batch 8)" in md
