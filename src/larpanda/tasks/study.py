"""The label-efficiency study (issue 7 deliverable 4, issue 11): train every (mode, label fraction) pair
and tabulate test metrics as ``study.csv``, ``study.md``, ``study.html`` (plotly, offline) and, when
`larpanda.viz.report.build_report` exists, ``report.html``.

Each run is ``larpanda train semantic`` with the same label subset (nested across fractions, same seed for
every mode), then `evaluate_model` on the test files. Data: a ``larpanda simulate --split`` directory
(files with train/val/test in their names), or explicit ``--train-data/--val-data/--test-data``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from ..errors import UserError
from .common import resolve_data

COLUMNS = ("mode", "label_fraction", "labelled_events", "mIoU", "macro_F1", "allAcc", "mAcc",
           "IoU_shower", "IoU_track", "IoU_michel", "IoU_delta", "IoU_led", "train_s", "test_events")
PRETRAINED_MODES = ("linear", "decoder", "full")


def _split(args, name: str):
    given = getattr(args, f"{name}_data", None)
    if given:
        return resolve_data(given)
    files = resolve_data(args.data)
    chosen = [p for p in files if name in Path(p).stem or name in Path(p).parent.name]
    if not chosen:
        raise UserError(f"study: no '{name}' file under {args.data}; pass --{name}-data")
    return chosen


def run_study(args) -> list[dict]:
    """Run the grid; returns the table rows (also written to OUT)."""
    from .semantic import MODES, evaluate_model, load_semantic, run_train
    from .common import make_dataset

    fractions = [float(f) for f in str(args.fractions).split(",") if f.strip()]
    modes = [m.strip() for m in str(args.modes).split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise UserError(f"--modes: unknown {', '.join(bad)} (choose from {', '.join(MODES)})")
    if any(m in PRETRAINED_MODES for m in modes) and not args.weights:
        raise UserError(f"--modes {','.join(m for m in modes if m in PRETRAINED_MODES)} need --weights PRETRAINED")
    train_files, test_files = _split(args, "train"), _split(args, "test")
    try:
        val_files = _split(args, "val")
    except UserError:
        val_files = None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    test_set = None
    for mode in modes:
        for frac in fractions:
            run_dir = out / "runs" / f"{mode}_{frac:g}"
            targs = argparse.Namespace(
                mode=mode, label_fraction=frac, weights=args.weights if mode in PRETRAINED_MODES else None,
                data=train_files, val_data=None, out=str(run_dir), config=args.config, overrides=list(args.overrides or []),
                resume=(run_dir / "checkpoints" / "last.pt").exists(), seed=args.seed, max_events=None, quiet=args.quiet)
            t0 = time.perf_counter()
            summary = run_train(targs) if not (run_dir / "summary.json").exists() else json.loads((run_dir / "summary.json").read_text())
            train_s = time.perf_counter() - t0
            model = load_semantic(run_dir / "weights")
            if test_set is None:
                test_set = make_dataset(test_files, {"energy_threshold": model.energy_threshold,
                                                     "min_points": _min_points(args)}, train=False)
            m = evaluate_model(model, test_set, 4, args.max_test_events)
            row = {"mode": mode, "label_fraction": frac, "labelled_events": summary["run"]["labelled_events"],
                   "train_s": round(train_s, 2), "test_events": m["num_events"]}
            row.update({k: m[k] for k in COLUMNS if k in m and k not in row})
            rows.append(row)
            write_tables(rows, out)
    return rows


def _min_points(args) -> int:
    from ..config import apply_overrides

    cfg = apply_overrides({}, list(args.overrides or []))
    return int(cfg.get("data", {}).get("min_points", 1024))


def write_tables(rows: list[dict], out) -> None:
    """``study.csv``, ``study.md``, ``study.html`` (atomic), and ``report.html`` when the builder exists."""
    from ..atomic import atomic_write_text

    out = Path(out)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(out / "study.csv", buf.getvalue())
    atomic_write_text(out / "study.md", markdown_table(rows))
    atomic_write_text(out / "study.html", plot_html(rows))
    try:
        from ..viz.report import build_report
    except ImportError:
        return
    try:
        build_report(out, {"study": rows})
    except Exception as exc:  # the report is a convenience; the tables above are the result
        atomic_write_text(out / "report_error.txt", f"report not built: {exc}\n")


def markdown_table(rows: list[dict]) -> str:
    """Label-efficiency table: one row per mode, one column per label fraction, cells mIoU / macro-F1 (%)."""
    fracs = sorted({r["label_fraction"] for r in rows})
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    cell = {(r["mode"], r["label_fraction"]): r for r in rows}
    head = "| mode | " + " | ".join(f"{100 * f:g} % labels" for f in fracs) + " |"
    lines = ["# Semantic segmentation label-efficiency study", "",
             "Cells: test mIoU / macro-F1 in % (pooled over points, spec-data §6.1); n = labelled training events.", "",
             head, "|---" * (len(fracs) + 1) + "|"]
    for m in modes:
        cells = []
        for f in fracs:
            r = cell.get((m, f))
            cells.append("" if r is None else f"{100 * r['mIoU']:.1f} / {100 * r['macro_F1']:.1f} (n={r['labelled_events']})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_html(rows: list[dict]) -> str:
    """Offline plotly figure (mIoU vs label fraction, one line per mode); a plain table if plotly is absent."""
    try:
        import plotly.graph_objects as go
    except ImportError:  # pragma: no cover
        return "<html><body><pre>" + markdown_table(rows) + "</pre></body></html>"
    fig = go.Figure()
    for mode in dict.fromkeys(r["mode"] for r in rows):
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["label_fraction"])
        fig.add_trace(go.Scatter(x=[100 * r["label_fraction"] for r in rs], y=[100 * r["mIoU"] for r in rs],
                                 mode="lines+markers", name=mode))
    fig.update_layout(title="Semantic segmentation: test mIoU vs labelled fraction", xaxis_type="log",
                      xaxis_title="labelled training events (%)", yaxis_title="mIoU (%)")
    return fig.to_html(include_plotlyjs=True, full_html=True)


def toy_events(n: int, seed: int = 0, points: int = 1400):
    """Small synthetic 5-class events (straight tracks, Michel stubs, delta branches, shower blobs, scattered
    LED) built with `pilarnet.event_from_labels`, for tests and smoke runs when `larpanda.sim` is not wanted.
    Not physics: geometry makes the classes separable, so a model that learns anything scores high."""
    from ..data.pilarnet import event_from_labels

    rng = np.random.default_rng(seed)
    events = []
    for _ in range(n):
        vox, lab, inst = [], [], []
        pid = 0
        origin = rng.integers(200, 560, 3)
        for _t in range(2):  # tracks with a Michel at the end and a delta ray branch
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            L = rng.integers(120, 200)
            line = origin + np.outer(np.arange(L), d)
            vox.append(line); lab += [1] * L; inst += [pid] * L; pid += 1
            end = line[-1]
            d2 = rng.normal(size=3); d2 /= np.linalg.norm(d2)
            m = end + np.outer(np.arange(1, 25), d2)
            vox.append(m); lab += [2] * len(m); inst += [pid] * len(m); pid += 1
            mid = line[L // 2]
            d3 = rng.normal(size=3); d3 /= np.linalg.norm(d3)
            dl = mid + np.outer(np.arange(1, 10), d3)
            vox.append(dl); lab += [3] * len(dl); inst += [pid] * len(dl); pid += 1
        c = origin + rng.integers(-60, 60, 3)  # shower: a fat cone-like blob
        k = points // 2
        blob = c + rng.normal(scale=(6, 6, 18), size=(k, 3))
        vox.append(blob); lab += [0] * k; inst += [pid] * k; pid += 1
        led = origin + rng.integers(-120, 120, (60, 3))
        vox.append(led); lab += [4] * 60; inst += [-1] * 60
        v = np.clip(np.rint(np.concatenate(vox)), 0, 767).astype(np.int64)
        lab, inst = np.asarray(lab), np.asarray(inst)
        _, first = np.unique(v, axis=0, return_index=True)
        first = np.sort(first)
        v, lab, inst = v[first], lab[first], inst[first]
        energy = np.where(lab == 4, rng.uniform(0.14, 0.5, len(lab)), rng.uniform(0.5, 3.0, len(lab))).astype(np.float32)
        pids = np.where(lab == 1, 2, np.where(lab == 4, -1, 1))
        inter = np.where(inst >= 0, 0, -1)
        events.append(event_from_labels(v, energy, lab, pids, inst, inter))
    return events
