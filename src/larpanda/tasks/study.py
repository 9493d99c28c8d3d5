"""The label-efficiency study (docs/model.md §3.4): train every (mode, label fraction) pair
and tabulate test metrics as ``study.csv``, ``study.md``, ``study.html`` (plotly, offline) and
``report.html`` (`larpanda.viz.report.build_report`).

Each run is ``larpanda train semantic`` with the same label subset (nested across fractions, same seed for
every mode), then `evaluate_model` on the test files. Data: a ``larpanda simulate --split`` directory
(files with train/val/test in their names), or explicit ``--train-data/--val-data/--test-data``.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from ..constants import MIN_RAW_POINTS, SEMANTIC_CLASSES
from ..errors import UserError
from .common import resolve_data

COLUMNS = ("mode", "label_fraction", "labelled_events", "mIoU", "macro_F1", "allAcc", "mAcc",
           *(f"IoU_{c}" for c in SEMANTIC_CLASSES), "train_s", "test_events")
PRETRAINED_MODES = ("linear", "decoder", "full")
ROW_METRICS = ("mIoU", "macro_F1", "allAcc", "mAcc", "confusion", "num_points")


def semantic_row(metrics: dict, mode: str, label_fraction: float, pretrained: bool, **extra) -> dict:
    """One label-efficiency row (``study.csv``, the ``results.json`` "semantic" rows, the report's input) from a
    `larpanda.metrics.semantic.semantic_metrics` dict: ``mode``, ``label_fraction``, ``pretrained``, then the
    metrics under their own names (``mIoU``, ``macro_F1``, ``IoU_<class>``, ``allAcc``, ``mAcc``,
    ``confusion``, ``num_points``), then ``extra``."""
    names = metrics.get("class_names") or list(SEMANTIC_CLASSES)
    row = {"mode": mode, "label_fraction": float(label_fraction), "pretrained": bool(pretrained),
           "mIoU": float(metrics["mIoU"]), "macro_F1": float(metrics["macro_F1"])}
    row.update({k: metrics[k] for k in (*(f"IoU_{n}" for n in names), *ROW_METRICS) if k in metrics and k not in row})
    row.update(extra)
    return row


def _split(args, name: str):
    given = getattr(args, f"{name}_data")  # --train-data, --val-data, --test-data
    if given:
        return resolve_data(given)
    files = resolve_data(args.data)
    chosen = [p for p in files if name in Path(p).stem or name in Path(p).parent.name]
    if not chosen:
        raise UserError(f"study: no '{name}' file under {args.data}; pass --{name}-data")
    return chosen


def run_study(args) -> list[dict]:
    """Run the grid; returns the table rows (also written to OUT)."""
    from .common import make_dataset
    from .semantic import MODES

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
    test_set = make_dataset(test_files, {"min_points": _min_points(args)}, train=False)
    rows: list[dict] = []
    for mode in modes:
        for frac in fractions:
            sets = sum((["--set", s] for s in args.overrides or []), [])
            summary, metrics, train_s = semantic_run(
                out / "runs" / f"{mode}_{frac:g}", mode, frac, train_files, val_files, test_set,
                weights=args.weights if mode in PRETRAINED_MODES else None, seed=args.seed, config=args.config,
                extra_args=sets, quiet=args.quiet, max_test_events=args.max_test_events)
            rows.append(semantic_row(metrics, mode, frac, mode in PRETRAINED_MODES,
                                     labelled_events=summary["run"]["labelled_events"], train_s=round(train_s, 2),
                                     test_events=metrics["num_events"]))
            write_tables(rows, out)
    return rows


def run_cli(argv: list) -> int:
    """Run a larpanda sub-command in this process, through the same parser as the console script."""
    from ..cli import build_parser

    args = build_parser().parse_args([str(a) for a in argv])
    return args.func(args)


def semantic_run(run_dir, mode: str, frac: float, train_files, val_files, test_set, weights=None, seed: int = 0,
                 config=None, extra_args=(), quiet: bool = True, max_test_events=None):
    """One cell of a label-efficiency grid (``larpanda study`` and ``larpanda demo``): ``larpanda train
    semantic`` in ``run_dir`` (resumed from its checkpoint, or skipped when its ``summary.json`` exists),
    then the test metrics of its weights. Returns (summary, test metrics, training seconds). A run stopped
    by a signal raises KeyboardInterrupt, so that the caller does not record it as done."""
    from .semantic import evaluate_model
    from .weights import load_task_model

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    done = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else None
    if done is None or done["fit"].get("interrupted"):
        argv = ["train", "semantic", "--mode", mode, "--label-fraction", frac, "--data", *train_files,
                "--out", run_dir, "--seed", seed, *extra_args]
        argv += ["--val-data", *val_files] if val_files else []
        argv += ["--config", config] if config else []
        argv += ["--weights", weights] if weights else []
        argv += ["--quiet"] if quiet else []
        argv += ["--resume"] if (run_dir / "checkpoints" / "last.pt").exists() else []
        run_cli(argv)
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary["fit"].get("interrupted"):
        raise KeyboardInterrupt
    train_s = time.perf_counter() - t0
    model = load_task_model(run_dir / "weights", "semantic")
    return summary, evaluate_model(model, test_set, 4, max_test_events), train_s


def _min_points(args) -> int:
    from ..config import apply_overrides

    cfg = apply_overrides({}, list(args.overrides or []))
    return int(cfg.get("data", {}).get("min_points", MIN_RAW_POINTS))


def write_tables(rows: list[dict], out) -> None:
    """``study.csv``, ``study.md``, ``study.html`` and ``report.html`` (each atomic)."""
    from ..atomic import atomic_write_text
    from ..viz.report import build_report

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
        build_report({"semantic": rows}, out / "report.html")
    except Exception as exc:  # the report is a convenience; the tables above are the result
        atomic_write_text(out / "report_error.txt", f"report not built: {exc}\n")


def markdown_table(rows: list[dict]) -> str:
    """Label-efficiency table: one row per mode, one column per label fraction, cells mIoU / macro-F1 (%)."""
    fracs = sorted({r["label_fraction"] for r in rows})
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    cell = {(r["mode"], r["label_fraction"]): r for r in rows}
    head = "| mode | " + " | ".join(f"{100 * f:g} % labels" for f in fracs) + " |"
    lines = ["# Semantic segmentation label-efficiency study", "",
             "Cells: test mIoU / macro-F1 in % (pooled over points, docs/design.md §7.1); n = labelled training events.", "",
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
