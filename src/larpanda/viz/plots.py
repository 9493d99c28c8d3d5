"""Plotly figures for the report: label efficiency, per-class IoU, confusion matrices, training curves,
PCA-to-RGB feature views.

Every function takes plain Python/numpy data (the rows of ``results.json``, arrays) and returns a
``plotly.graph_objects.Figure``; nothing here writes files (``viz/report.py`` assembles the page).
3D event displays coloured by class/particle/interaction come from ``viz/display.py``.
"""

from __future__ import annotations

import numpy as np

# Colour per semantic-segmentation mode, fixed so that every plot of the report agrees.
MODE_COLORS = {
    "linear": "#1f77b4",
    "decoder": "#2ca02c",
    "full": "#9467bd",
    "scratch": "#d62728",
    "uresnet": "#7f7f7f",
}
MODE_ORDER = ("linear", "decoder", "full", "scratch", "uresnet")
FONT = dict(family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif", size=13)


def _layout(fig, title=None, height=380, **kw):
    fig.update_layout(
        template="plotly_white",
        title=dict(text=title, x=0.0, xanchor="left") if title else None,
        height=height,
        margin=dict(l=60, r=20, t=50 if title else 20, b=50),
        font=FONT,
        **kw,
    )
    return fig


def mode_sort_key(mode: str):
    return (MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER), mode)


def label_efficiency_figure(rows, metric: str = "mIoU", title: str | None = None):
    """mIoU (or ``metric``) in % vs label fraction in % (log x), one line per mode.

    Args:
        rows: ``results["semantic"]`` rows with ``mode``, ``label_fraction`` (0..1), ``metric`` (0..1).
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    modes = sorted({r["mode"] for r in rows}, key=mode_sort_key)
    for mode in modes:
        pts = sorted(
            (r["label_fraction"], r[metric]) for r in rows if r["mode"] == mode and r.get(metric) is not None
        )
        if not pts:
            continue
        x = [100.0 * f for f, _ in pts]
        y = [100.0 * v for _, v in pts]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                name=mode,
                line=dict(color=MODE_COLORS.get(mode), width=2.5, dash="dot" if mode == "scratch" else None),
                marker=dict(size=9),
                hovertemplate=f"{mode}<br>labels %{{x:.3g}} %<br>{metric} %{{y:.1f}} %<extra></extra>",
            )
        )
    _layout(fig, title, height=400)
    fig.update_xaxes(type="log", title="labelled training events (%)", ticksuffix=" %")
    fig.update_yaxes(title=f"{metric} (%)", rangemode="tozero")
    return fig


def per_class_iou_figure(rows, class_names, title: str | None = None):
    """Grouped bars: IoU per class (%, the rows' ``IoU_<class>``), one bar group per row (label ``mode @ fraction``)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in rows:
        label = f"{r['mode']} @ {100 * r['label_fraction']:g} %"
        fig.add_trace(
            go.Bar(
                x=list(class_names),
                y=[np.nan if r.get(f"IoU_{c}") is None else 100.0 * r[f"IoU_{c}"] for c in class_names],  # null in results.json
                name=label,
                marker_color=MODE_COLORS.get(r["mode"]),
                hovertemplate=f"{label}<br>%{{x}}: %{{y:.1f}} %<extra></extra>",
            )
        )
    # every class on the axis even where a row has no value (a null IoU must not drop the category), and
    # the legend under the plot so that many rows do not squeeze the bars out of the figure
    _layout(fig, title, height=420, barmode="group", legend=dict(orientation="h", yanchor="top", y=-0.15, x=0))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=list(class_names), range=[-0.5, len(class_names) - 0.5])
    fig.update_yaxes(title="IoU (%)", range=[0, 100])
    return fig


def confusion_figure(matrix, class_names, title: str | None = None, normalize: str = "row",
                     xlabel: str = "predicted", ylabel: str = "truth"):
    """Heatmap of a confusion matrix (rows = truth, columns = prediction).

    ``normalize="row"`` shows each row as % of the true class (efficiency); the raw counts are in the hover.
    """
    import plotly.graph_objects as go

    m = np.asarray(matrix, dtype=np.float64)
    k = m.shape[0]
    names = list(class_names)[:k]
    if normalize == "row":
        z = 100.0 * m / np.maximum(m.sum(axis=1, keepdims=True), 1e-12)
    elif normalize == "col":
        z = 100.0 * m / np.maximum(m.sum(axis=0, keepdims=True), 1e-12)
    else:
        z = m
    text = [[f"{z[i, j]:.1f}" if normalize else f"{int(m[i, j])}" for j in range(k)] for i in range(k)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            text=text,
            texttemplate="%{text}",
            customdata=m,
            colorscale="Blues",
            zmin=0,
            zmax=100 if normalize else None,
            hovertemplate=f"{ylabel} %{{y}}<br>{xlabel} %{{x}}<br>%{{z:.1f}} %<br>count %{{customdata:.0f}}<extra></extra>",
            colorbar=dict(title="%" if normalize else "count", thickness=12),
        )
    )
    _layout(fig, title, height=360 + 12 * k)
    fig.update_xaxes(title=xlabel, side="bottom")
    fig.update_yaxes(title=ylabel, autorange="reversed")
    return fig


def read_metrics_jsonl(path) -> list[dict]:
    """Rows of a ``metrics.jsonl`` (one JSON object per logged step); unreadable lines are skipped."""
    import json
    from pathlib import Path

    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        if isinstance(obj, dict):
            rows.append(obj)
    return rows


def _numeric_keys(rows, skip=("step", "epoch", "time", "wall", "wall_s", "lr", "wd", "elapsed_s")):
    keys = []
    for r in rows:
        for k, v in r.items():
            if k in skip or k in keys or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)) and np.isfinite(v):
                keys.append(k)
    return keys


def training_curves_figure(runs: dict, keys=None, title: str | None = None):
    """Loss (and other logged scalars) vs step, one line per (run, key).

    Args:
        runs: ``{run_name: list of metrics.jsonl rows}``; rows need a ``step`` key.
        keys: scalars to plot; default every key containing "loss" (else every numeric key).
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, rows in runs.items():
        rows = [r for r in rows if "step" in r]
        if not rows:
            continue
        use = keys or [k for k in _numeric_keys(rows) if "loss" in k] or _numeric_keys(rows)[:3]
        for k in use:
            pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
            if not pts:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pts],
                    y=[p[1] for p in pts],
                    mode="lines",
                    name=f"{name}: {k}" if len(use) > 1 else name,
                    hovertemplate=f"{name}<br>step %{{x}}<br>{k} %{{y:.4g}}<extra></extra>",
                )
            )
    _layout(fig, title, height=360)
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="loss" if keys is None else ", ".join(keys))
    return fig


def pca_rgb(features, robust: float = 1.0) -> np.ndarray:
    """Project features (N, C) on their first 3 principal components and map each to 0..1 (RGB).

    Each component is clipped to its [robust, 100 − robust] percentiles before scaling, so a few outlier
    points do not wash out the colours (as the Panda/Sonata notebooks' ``torch.pca_lowrank`` view).
    Returns (N, 3) float64 in [0, 1].
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        return np.zeros((0, 3))
    x = x - x.mean(axis=0, keepdims=True)
    k = min(3, x.shape[1], x.shape[0])
    # Principal axes = top eigenvectors of the (C, C) scatter matrix: one GEMM + a small eigh instead of the
    # SVD of the (N, C) matrix (5.4k x 336: 0.11 s vs 1.9 s of CPU; the SVD was most of a quick demo's report).
    _, vecs = np.linalg.eigh(x.T @ x)  # ascending eigenvalues
    proj = x @ vecs[:, ::-1][:, :k]
    if k < 3:
        proj = np.concatenate([proj, np.zeros((proj.shape[0], 3 - k))], axis=1)
    lo = np.percentile(proj, robust, axis=0)
    hi = np.percentile(proj, 100 - robust, axis=0)
    rgb = (proj - lo) / np.maximum(hi - lo, 1e-12)
    return np.clip(rgb, 0.0, 1.0)


def feature_pca_figure(voxel, features, title: str | None = None, marker_size: float = 2.0):
    """3D scatter of the points coloured by the PCA-to-RGB of their features.

    Args:
        voxel: (N, 3) voxel coordinates; features: (N, C) per-point features (same rows).
    """
    import plotly.graph_objects as go

    v = np.asarray(voxel)
    rgb = (255 * pca_rgb(features)).astype(int)
    colors = [f"rgb({r},{g},{b})" for r, g, b in rgb]
    fig = go.Figure(
        go.Scatter3d(
            x=v[:, 0],
            y=v[:, 1],
            z=v[:, 2],
            mode="markers",
            marker=dict(size=marker_size, color=colors),
            name="features (PCA → RGB)",
            hoverinfo="skip",
        )
    )
    _layout(fig, title, height=460, showlegend=False)
    fig.update_layout(margin=dict(l=0, r=0, t=40 if title else 0, b=0),
                      scene=dict(aspectmode="data", xaxis_title="x", yaxis_title="y", zaxis_title="z"))
    return fig
