"""`larpanda demo`: the real ``larpanda demo --quick`` end to end, its results.json
(shape, strict JSON, fractions in 0..1), the offline report.html, the pretrain → semantic backbone hand-off,
and resuming (a second call skips every finished step); plus unit tests of the step plumbing.

The end-to-end run is one subprocess (~1-2 min on 2 shared cores: docs/benchmarks.md "Demo") shared by the
module's tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from larpanda.cli import build_parser
from larpanda.config import load_config
from larpanda.demo import Demo, _finished_run, job_plan, wall_of_steps

CLASSES = ("shower", "track", "michel", "delta", "led")
GRID = {(m, f) for m in ("linear", "decoder", "scratch") for f in (0.01, 0.1, 1.0)} | {("full", 0.01)}


def _demo(out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "larpanda", "demo", "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=900, env=env)
    return proc, time.perf_counter() - t0


def _strict_json(text: str):
    def reject(token):
        raise ValueError(f"results.json holds the non-standard JSON token {token}")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "q"
    proc, wall = _demo(out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc, wall


def test_quick_demo_results_json(quick):
    out, _, _ = quick
    text = (out / "results.json").read_text()
    res = _strict_json(text)  # NaN/Inf (e.g. an undefined ARI) must be written as null
    sem = res["semantic"]
    assert {(r["mode"], r["label_fraction"]) for r in sem} == GRID and len(sem) == len(GRID)
    for r in sem:
        assert isinstance(r["pretrained"], bool) and r["pretrained"] == (r["mode"] != "scratch"), r
        for k in ("mIoU", "macro_F1", "allAcc"):  # the metric names of metrics/semantic.py
            assert isinstance(r[k], float) and 0.0 <= r[k] <= 1.0, (k, r)
        per_class = {k[len("IoU_"):]: v for k, v in r.items() if k.startswith("IoU_")}
        assert set(per_class) == set(CLASSES), per_class
        for c, v in per_class.items():
            assert v is None or 0.0 <= v <= 1.0, (c, v)
        # mIoU is the mean of the defined class IoUs
        ious = [v for v in per_class.values() if v is not None]
        assert abs(r["mIoU"] - sum(ious) / len(ious)) < 1e-6, r
        assert r["test_events"] == 8
    # nested label subsets: 1 / 10 / 100 % of the 40 training events
    lab = {r["label_fraction"]: r["labelled_events"] for r in sem if r["mode"] == "linear"}
    assert lab == {0.01: 1, 0.1: 4, 1.0: 40}, lab

    (pan,) = res["panoptic"]
    assert pan["level"] == "particle" and pan["pretrained"] is True
    for k in ("f1", "precision", "recall", "pq"):
        assert isinstance(pan[k], float) and 0.0 <= pan[k] <= 1.0, (k, pan[k])
    assert pan["ari"] is None or -1.0 <= pan["ari"] <= 1.0  # null when undefined (no particle predicted)

    steps = {"simulate", "pretrain", "panoptic particle", "report"} | {f"semantic {m} @ {100 * f:g} %" for m, f in GRID}
    assert set(res["timings_s"]) == steps and all(v > 0 for v in res["timings_s"].values()), res["timings_s"]
    # with 2 or more usable cores the steps ran in two jobs side by side: the wall clock is the union of the
    # steps' intervals, less than their sum
    assert res["jobs"] == job_plan()[0]
    if res["jobs"] > 1:
        assert res["threads_per_job"] >= 1 and res["timings_s"]["report"] < res["wall_s"] < sum(res["timings_s"].values())
    else:
        assert abs(res["wall_s"] - sum(res["timings_s"].values())) < 0.1
    assert set(res["timings_cpu_s"]) == steps  # the 3-minute budget is measured in docs/benchmarks.md, not here
    assert {"larpanda", "torch", "numpy", "plotly"} <= set(res["versions"])
    assert res["quick"] is True and res["config"]["simulate"]["train"] == 40


def test_pretrained_backbone_hand_off(quick):
    """`larpanda pretrain` exports DIR/pretrain/backbone; the linear probes load it (frozen encoder: their
    saved backbone tensors equal the exported ones) and scratch does not."""
    import torch
    from safetensors.torch import load_file

    out, _, _ = quick
    backbone = out / "pretrain" / "backbone"
    assert (backbone / "config.json").exists() and json.loads((out / "pretrain" / "done.json").read_text())["backbone"]
    exported = load_file(str(backbone / "model.safetensors"))
    res = _strict_json((out / "results.json").read_text())
    for r in res["semantic"]:
        summary = json.loads((out / r["run"] / "summary.json").read_text())
        assert summary["fit"]["interrupted"] is False and summary["fit"]["step"] == summary["fit"]["total_steps"]
        weights = load_file(str(out / r["run"] / "weights" / "model.safetensors"))
        shared = [k for k in exported if f"backbone.{k}" in weights and exported[k].shape == weights[f"backbone.{k}"].shape]
        same = sum(torch.equal(exported[k], weights[f"backbone.{k}"]) for k in shared)
        if r["mode"] == "linear":
            assert r["backbone"] == "pretrain/backbone" and Path(summary["run"]["weights"]) == backbone
            assert len(shared) > 100 and same == len(shared)
        elif r["mode"] == "scratch":
            assert summary["run"]["weights"] is None and same < len(shared) / 2
    pan = json.loads((out / "panoptic" / "particle" / "summary.json").read_text())
    assert Path(pan["run"]["weights"]) == backbone


def test_quick_demo_report_is_self_contained(quick):
    from plotly.offline import get_plotlyjs

    out, _, _ = quick
    html = (out / "report.html").read_text()
    assert html.count(get_plotlyjs()[:2000]) == 1  # plotly.js inlined exactly once
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)="(https?:)?//', html)  # nothing from the network
    for anchor in ("summary", "label-efficiency", "classes", "panoptic", "events", "features", "training", "run"):
        assert f'id="{anchor}"' in html, anchor
    res = _strict_json((out / "results.json").read_text())
    lin = next(r for r in res["semantic"] if r["mode"] == "linear" and r["label_fraction"] == 0.01)
    assert f"{100 * lin['mIoU']:.1f}" in html  # the table shows the measured numbers


def test_rerun_skips_finished_steps(quick):
    out, first, _ = quick
    before = {p: p.stat().st_mtime_ns for p in (out / "results.json", out / "report.html")}
    results = (out / "results.json").read_bytes()
    proc, wall = _demo(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "running" not in proc.stderr, proc.stderr
    assert proc.stderr.count("done already") == 2 + len(GRID) + 1 + 1  # simulate, pretrain, grid, panoptic, report
    assert (out / "results.json").read_bytes() == results
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert wall < 60, wall  # startup and reading the markers only


# ------------------------------------------------------------------------------------------- units


def test_step_marker_skips_finished_step(tmp_path):
    d = Demo(tmp_path, {"seed": 0})
    calls = []
    r1 = d.step("x", tmp_path / "x" / "done.json", lambda: calls.append(1) or {"v": 3})
    r2 = d.step("x", tmp_path / "x" / "done.json", lambda: calls.append(2) or {"v": 4})
    assert calls == [1] and r1["v"] == r2["v"] == 3 and "wall_s" in r2 and "cpu_s" in r2
    assert d.steps_run == 1


def test_interrupted_training_is_not_marked_done(tmp_path):
    """A run stopped by a signal (fit saved its checkpoint and reports interrupted) must not get a marker,
    so that the next call resumes it instead of evaluating a half-trained model."""
    run = tmp_path / "semantic" / "linear_0.01"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"run": {"labelled_events": 1}, "fit": {"interrupted": True}}))
    d = Demo(tmp_path, {"seed": 0})
    marker = run / "result.json"
    with pytest.raises(KeyboardInterrupt):
        d.step("semantic", marker, lambda: {"summary": _finished_run(run)})
    assert not marker.exists()
    (run / "summary.json").write_text(json.dumps({"run": {"labelled_events": 1}, "fit": {"interrupted": False}}))
    assert _finished_run(run)["run"]["labelled_events"] == 1


def test_semantic_grid_from_config(tmp_path):
    cfg = load_config("default", "demo")
    runs = Demo(tmp_path, cfg).semantic_runs()
    assert ("linear", 0.01) in runs and ("scratch", 0.01) in runs and ("full", 0.01) in runs
    assert {m for m, _ in runs} >= {"linear", "decoder", "scratch", "full"}
    quick = load_config("quick", "demo")
    assert set(Demo(tmp_path, quick).semantic_runs()) == GRID
    assert quick["simulate"]["train"] < cfg["simulate"]["train"]


def test_cli_parses():
    args = build_parser().parse_args(["demo", "--quick", "--out", "x", "--set", "simulate.train=5"])
    assert args.quick and args.overrides == ["simulate.train=5"] and args.jobs is None
    assert build_parser().parse_args(["demo", "--out", "x", "--jobs", "1"]).jobs == 1


def test_tasks_put_pretraining_first_and_flag_what_needs_it(tmp_path):
    """The worker pool starts pretraining and the rows without a pretrained backbone (scratch, UResNet) at
    once; the pretrained rows and the detector wait for the backbone. Each step appears once."""
    cfg = load_config("default", "demo")
    d = Demo(tmp_path, cfg)
    tasks = d.tasks()
    assert tasks[0] == ("pretrain", None, False)
    sem = {a: needs for k, a, needs in tasks if k == "semantic"}
    assert set(sem) == set(d.semantic_runs()) and len(sem) == len(d.semantic_runs())
    assert all(needs == (mode not in ("scratch", "uresnet")) for (mode, _), needs in sem.items())
    assert ("panoptic", "particle", True) in tasks
    first_scratch = [a for k, a, _ in tasks if k == "semantic" and a[0] == "scratch"][0]
    assert first_scratch == ("scratch", 1.0)  # the longest rows first


def test_wall_of_steps_counts_overlapping_steps_once():
    rows = [{"wall_s": 5, "started": 100, "finished": 105}, {"wall_s": 5, "started": 102, "finished": 107},
            {"wall_s": 1, "started": 110, "finished": 111}, {"wall_s": 4}]  # the last: a marker of an older demo
    assert wall_of_steps(rows) == 7 + 1 + 4
