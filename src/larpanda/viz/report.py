"""The self-contained offline HTML report (``larpanda demo``, ``larpanda study``, ``larpanda evaluate --report``).

One HTML file, plotly.js inlined exactly once (``plotly.offline.get_plotlyjs()``), no CDN, no network.
The page is a list of sections; each section builder below takes plain data (rows of ``results.json``,
metric dicts, arrays) and returns a `Section`, so a command with partial results can write a page with
only what it has::

    from larpanda.viz import report
    secs = [report.label_efficiency_section(rows), report.summary_section(results)]
    report.write_page("study.html", secs, title="Label efficiency")

``build_report(results, out_html, events=None, extras=None)`` assembles the full demo report.

``results`` schema (``results.json``; metrics are fractions 0..1, extra keys are welcome)::

    {"semantic": [{"mode": "linear|decoder|full|scratch|uresnet", "label_fraction": 0.01, "pretrained": true,
                   "miou": .., "macro_f1": .., "per_class_iou": {"shower": .., ...},
                   "confusion": [[..]] (optional, rows truth), "run": "semantic/linear_0.01" (optional)}, ...],
     "panoptic": [{"level": "particle", "ari": .., "f1": .., "precision": .., "recall": .., "pq": ..,
                   "pid_confusion": [[..]] (optional), "pid_classes": [..] (optional)}, ...],
     "timings_s": {"simulate": .., ...}, "versions": {...}, "machine": {...}, "config": {...}}

``events``: list of dicts, one per displayed event, with per-point numpy arrays in raw event row order:
``voxel`` (N,3), ``energy`` (N,), ``segment_motif``, ``segment_pid``, ``instance_particle``,
``instance_interaction`` (N,) (truth), optional ``pred`` = dict of the same label keys (predictions, −1 for
rows removed by the energy cut), optional ``features`` (K, C) with ``feature_index`` (K,) raw rows (the
pretrained per-point features, for the PCA-to-RGB view), optional ``title``.
"""

from __future__ import annotations

import html
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..data.event import PID_CLASSES, SEMANTIC_CLASSES
from . import plots

LABEL_KEYS = ("segment_motif", "segment_pid", "instance_particle", "instance_interaction")


@dataclass
class Section:
    """One block of the page: ``title`` (also the table-of-contents entry), ``body`` HTML, ``anchor``."""

    title: str
    body: str
    anchor: str = ""

    def html(self) -> str:
        anchor = self.anchor or _slug(self.title)
        return f'<section id="{anchor}"><h2>{html.escape(self.title)}</h2>\n{self.body}\n</section>'


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s.lower()).strip("-") or "section"


_FIG_COUNTER = [0]


def fig_html(fig, div_id: str | None = None) -> str:
    """A plotly figure as a ``<div>`` + ``<script>`` (plotly.js is NOT included: the page has it once)."""
    import plotly.io as pio

    _FIG_COUNTER[0] += 1
    div_id = div_id or f"fig{_FIG_COUNTER[0]}"
    inner = pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )
    return f'<div class="fig">{inner}</div>'


def _pct(v, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{100.0 * float(v):.{digits}f}"


def _num(v, fmt: str = ".3f") -> str:
    """A metric as text; None (JSON null) and NaN/Inf as "–"."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return format(float(v), fmt)


def _finite(v) -> bool:
    return v is not None and np.isfinite(float(v))


def _frac_label(f: float) -> str:
    return f"{100.0 * f:g} %"


def _table(header, rows, cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ----------------------------------------------------------------------------------------------- rows


def semantic_row(metrics: dict, mode: str, label_fraction: float, pretrained: bool, **extra) -> dict:
    """A ``results["semantic"]`` row from a `larpanda.metrics.semantic.semantic_metrics` dict."""
    names = metrics.get("class_names") or list(SEMANTIC_CLASSES)
    row = {
        "mode": mode,
        "label_fraction": float(label_fraction),
        "pretrained": bool(pretrained),
        "miou": float(metrics["mIoU"]),
        "macro_f1": float(metrics["macro_F1"]),
        "per_class_iou": {n: float(metrics[f"IoU_{n}"]) for n in names if f"IoU_{n}" in metrics},
    }
    for k_src, k_dst in (("allAcc", "all_acc"), ("mAcc", "macc"), ("confusion", "confusion"), ("num_points", "num_points")):
        if k_src in metrics:
            row[k_dst] = metrics[k_src]
    row.update(extra)
    return row


# ------------------------------------------------------------------------------------------- sections


def headline_section(results: dict) -> Section | None:
    """The one-sentence result: pretrained linear probe vs scratch at the smallest common label fraction."""
    rows = [r for r in results.get("semantic") or [] if _finite(r.get("miou"))]
    lin = {r["label_fraction"]: r for r in rows if r["mode"] == "linear"}
    scr = {r["label_fraction"]: r for r in rows if r["mode"] == "scratch"}
    common = sorted(set(lin) & set(scr))
    cards = []
    if common:
        f = common[0]
        d = 100 * (lin[f]["miou"] - scr[f]["miou"])
        cls = "good" if d >= 10 else ("ok" if d > 0 else "bad")
        cards.append(
            f'<div class="card {cls}"><div class="big">{d:+.1f}</div><div>mIoU points: pretrained linear probe '
            f"({_pct(lin[f]['miou'])} %) vs training from scratch ({_pct(scr[f]['miou'])} %) with "
            f"{_frac_label(f)} of the labels</div></div>"
        )
    best = max(rows, key=lambda r: r["miou"], default=None)
    if best is not None:
        cards.append(
            f'<div class="card"><div class="big">{_pct(best["miou"])} %</div><div>best mIoU '
            f"({html.escape(best['mode'])}, {_frac_label(best['label_fraction'])} labels)</div></div>"
        )
    for p in results.get("panoptic") or []:
        if p.get("level") == "particle":
            cards.append(
                f'<div class="card"><div class="big">{_num(p.get("ari"))}</div><div>particle '
                f"clustering ARI; detection F1 {_num(p.get('f1'))}</div></div>"
            )
            break
    wall = results.get("wall_s")
    if wall:
        cards.append(f'<div class="card"><div class="big">{wall / 60:.1f} min</div><div>total wall time</div></div>')
    if not cards:
        return None
    return Section("Summary", f'<div class="cards">{"".join(cards)}</div>', "summary")


def label_efficiency_section(rows, metric: str = "miou") -> Section:
    """Table (modes × label fractions, mIoU % and macro-F1 %) and the mIoU-vs-fraction plot (log x)."""
    rows = [r for r in rows if r.get(metric) is not None]
    if not rows:
        return Section("Label efficiency", '<p class="muted">No semantic-segmentation results yet.</p>')
    fracs = sorted({r["label_fraction"] for r in rows})
    modes = sorted({r["mode"] for r in rows}, key=plots.mode_sort_key)
    cell = {(r["mode"], r["label_fraction"]): r for r in rows}
    best = {f: max((cell[m, f][metric] for m in modes if (m, f) in cell), default=None) for f in fracs}
    body_rows = []
    for m in modes:
        pre = next((cell[m, f].get("pretrained") for f in fracs if (m, f) in cell), None)
        tag = {True: "pretrained", False: "random init"}.get(pre, "")
        cells = [f'<span class="mode" style="border-color:{plots.MODE_COLORS.get(m, "#444")}">{html.escape(m)}</span>'
                 f' <span class="muted small">{tag}</span>']
        for f in fracs:
            r = cell.get((m, f))
            if r is None:
                cells.append('<span class="muted">–</span>')
                continue
            strong = r[metric] == best[f]
            v = _pct(r[metric])
            f1 = r.get("macro_f1")
            sub = f'<div class="muted small">F1 {_pct(f1)}</div>' if f1 is not None else ""
            cells.append(f"<b>{v}</b>{sub}" if strong else f"{v}{sub}")
        body_rows.append(cells)
    table = _table(["mode"] + [f"{_frac_label(f)} labels" for f in fracs], body_rows, "num")
    note = ('<p class="muted small">mIoU (%) on the test set, pooled over all points (docs/design.md §7.1); bold = best '
            "per column; the smaller line is macro-F1 (%). Label fraction = fraction of training events "
            "whose labels are used (nested subsets).</p>")
    fig = plots.label_efficiency_figure(rows, metric)
    return Section("Label efficiency", f'<div class="grid2"><div>{table}{note}</div>{fig_html(fig, "label-efficiency-plot")}</div>',
                   "label-efficiency")


def per_class_section(rows, class_names=SEMANTIC_CLASSES, confusion_of: dict | None = None) -> Section | None:
    """Per-class IoU bars (each mode at its smallest and largest label fraction) and one confusion matrix.

    ``confusion_of``: the row whose ``confusion`` is shown; default the best pretrained row at the smallest
    label fraction that has one.
    """
    rows = [r for r in rows if r.get("per_class_iou")]
    if not rows:
        return None
    fracs = sorted({r["label_fraction"] for r in rows})
    pick = [r for r in rows if r["label_fraction"] in (fracs[0], fracs[-1])]
    pick.sort(key=lambda r: (r["label_fraction"], plots.mode_sort_key(r["mode"])))
    parts = [fig_html(plots.per_class_iou_figure(pick, class_names, "IoU per class"))]
    if confusion_of is None:
        with_cm = [r for r in rows if r.get("confusion")]
        if with_cm:
            f0 = min(r["label_fraction"] for r in with_cm)
            at = [r for r in with_cm if r["label_fraction"] == f0]
            confusion_of = max(at, key=lambda r: (r.get("pretrained", False), r["miou"]))
    if confusion_of is not None and confusion_of.get("confusion"):
        t = f"Confusion, {confusion_of['mode']} @ {_frac_label(confusion_of['label_fraction'])} (row %)"
        parts.append(fig_html(plots.confusion_figure(confusion_of["confusion"], class_names, t)))
    return Section("Semantic classes", f'<div class="grid2">{"".join(parts)}</div>', "classes")


def semantic_metrics_section(metrics: dict, title: str = "Semantic segmentation") -> Section:
    """For ``larpanda evaluate --report``: one `semantic_metrics` dict → table, IoU bars, confusion."""
    row = semantic_row(metrics, mode=metrics.get("mode", "model"), label_fraction=metrics.get("label_fraction", 1.0),
                       pretrained=metrics.get("pretrained", True))
    names = metrics.get("class_names") or list(SEMANTIC_CLASSES)
    tab = _table(
        ["metric", "value (%)"],
        [["mIoU", _pct(row["miou"])], ["macro-F1", _pct(row["macro_f1"])], ["overall accuracy", _pct(metrics.get("allAcc"))]]
        + [[f"IoU {html.escape(n)}", _pct(row["per_class_iou"].get(n))] for n in names],
        "num",
    )
    parts = [f"<div>{tab}</div>"]
    if metrics.get("confusion"):
        parts.append(fig_html(plots.confusion_figure(metrics["confusion"], names, "Confusion (row %)")))
    return Section(title, f'<div class="grid2">{"".join(parts)}</div>')


def training_curves_section(runs: dict) -> Section | None:
    """``runs``: ``{name: metrics.jsonl path | list of rows}``; pretraining gets its own plot."""
    loaded = {}
    for name, src in runs.items():
        rows = src if isinstance(src, list) else plots.read_metrics_jsonl(src)
        if rows:
            loaded[name] = rows
    if not loaded:
        return None
    pre = {k: v for k, v in loaded.items() if k.startswith("pretrain")}
    rest = {k: v for k, v in loaded.items() if k not in pre}
    parts = []
    if pre:
        parts.append(fig_html(plots.training_curves_figure(pre, title="Self-distillation pretraining (no labels)")))
    if rest:
        fig = plots.training_curves_figure(rest, keys=["loss"] if all("loss" in r for v in rest.values() for r in v[:1]) else None,
                                           title="Supervised training")
        fig.update_yaxes(type="log")
        parts.append(fig_html(fig))
    return Section("Training curves", f'<div class="grid2">{"".join(parts)}</div>', "training")


def panoptic_section(rows) -> Section | None:
    """Particle/interaction detection and clustering table + PID confusion (matched particles)."""
    if not rows:
        return None
    keys = [("ari", "ARI"), ("f1", "F1"), ("precision", "precision"), ("recall", "recall"), ("pq", "PQ"),
            ("sq", "SQ"), ("rq", "RQ"), ("matched_iou", "matched IoU"), ("pid_f1", "PID macro-F1")]
    keys = [(k, n) for k, n in keys if any(r.get(k) is not None for r in rows)]
    body = []
    for r in rows:
        desc = html.escape(str(r.get("level", "?")))
        if r.get("mode"):
            desc += f' <span class="muted small">{html.escape(str(r["mode"]))}'
            if r.get("label_fraction") is not None:
                desc += f", {_frac_label(r['label_fraction'])} labels"
            desc += "</span>"
        body.append([desc] + [_num(r.get(k)) for k, _ in keys])
    parts = [f'<div>{_table(["level"] + [n for _, n in keys], body, "num")}'
             '<p class="muted small">Detection: predicted and true instances matched one-to-one at IoU ≥ 0.5 '
             "(docs/design.md §7.2), counts pooled over events; ARI per event (points predicted as LED dropped), "
             "averaged over events. Fractions 0..1.</p></div>"]
    for r in rows:
        if r.get("pid_confusion"):
            names = r.get("pid_classes") or list(PID_CLASSES[:5])
            parts.append(fig_html(plots.confusion_figure(
                r["pid_confusion"], names, f"PID of matched {r.get('level', '')}s (row % = efficiency)")))
            break
    return Section("Particles and interactions", f'<div class="grid2">{"".join(parts)}</div>', "panoptic")


def _event_figure(arrays: dict, color_by: str, title: str):
    """The package's one event display, `viz.display.event_figure`."""
    from .display import event_figure

    return event_figure(arrays, color_by=color_by, title=title)


def _with_labels(ev: dict, labels: dict) -> dict:
    out = {k: v for k, v in ev.items() if k not in ("pred", "features", "feature_index", "title")}
    out.update({k: np.asarray(v) for k, v in labels.items() if k in LABEL_KEYS})
    return out


def event_displays_section(events) -> Section | None:
    """Interactive 3D displays per event: energy; truth vs predicted semantic class; particles; interactions.

    Click a legend entry to hide/show a class or particle; drag to rotate. Predictions of points removed by
    the energy cut are −1 and are not drawn in the predicted panels.
    """
    if not events:
        return None
    blocks = []
    for i, ev in enumerate(events):
        title = html.escape(str(ev.get("title", f"event {i}")))
        pred = ev.get("pred") or {}
        panels = [(_event_figure(ev, "energy", "deposited energy (MeV)"), "energy")]
        panels.append((_event_figure(ev, "semantic", "truth: semantic class"), "truth-semantic"))
        if "segment_motif" in pred:
            keep = np.asarray(pred["segment_motif"]) >= 0
            pe = {k: (np.asarray(v)[keep] if np.ndim(v) >= 1 and len(v) == len(keep) else v)
                  for k, v in _with_labels(ev, pred).items()}
            panels.append((_event_figure(pe, "semantic", "predicted: semantic class"), "pred-semantic"))
        panels.append((_event_figure(ev, "particle", "truth: particles"), "truth-particle"))
        if "instance_particle" in pred:
            keep = np.asarray(pred["instance_particle"]) >= 0
            pe = {k: (np.asarray(v)[keep] if np.ndim(v) >= 1 and len(v) == len(keep) else v)
                  for k, v in _with_labels(ev, pred).items()}
            if keep.any():
                panels.append((_event_figure(pe, "particle", "predicted: particles"), "pred-particle"))
        panels.append((_event_figure(ev, "interaction", "truth: interactions"), "truth-interaction"))
        figs = "".join(f'<div class="evpanel">{fig_html(f, f"ev{i}-{tag}")}</div>' for f, tag in panels)
        n = len(np.asarray(ev["voxel"]))
        blocks.append(f'<h3>{title} <span class="muted small">{n:,} voxels</span></h3><div class="grid2">{figs}</div>')
    note = ('<p class="muted small">Drag to rotate, scroll to zoom, click a legend entry to hide it '
            "(double-click to show it alone).</p>")
    return Section("Event displays", note + "".join(blocks), "events")


def features_section(events) -> Section | None:
    """PCA-to-RGB of the pretrained per-point features, next to the truth semantic classes."""
    with_feat = [ev for ev in (events or []) if ev.get("features") is not None]
    if not with_feat:
        return None
    blocks = []
    for i, ev in enumerate(with_feat[:2]):
        feats = np.asarray(ev["features"])
        idx = np.asarray(ev.get("feature_index", np.arange(len(feats))))
        vox = np.asarray(ev["voxel"])[idx]
        fig = plots.feature_pca_figure(vox, feats, "pretrained features, first 3 principal components → RGB")
        truth = _with_labels({k: (np.asarray(v)[idx] if np.ndim(v) >= 1 and len(v) == len(ev["voxel"]) else v)
                              for k, v in ev.items() if k not in ("pred", "features", "feature_index")}, {})
        blocks.append(f'<div class="grid2">{fig_html(fig, f"pca{i}")}'
                      f'{fig_html(_event_figure(truth, "semantic", "truth: semantic class"), f"pca{i}-truth")}</div>')
    note = ("<p class=\"muted small\">No label was used to make these features: points of the same kind of "
            "activity (tracks, showers, Michel electrons...) get similar colours if the self-distillation learnt "
            "something physical. Colours are the 3 leading principal components of the per-point features.</p>")
    return Section("What the pretrained backbone sees", note + "".join(blocks), "features")


def _kv_table(d: dict, fmt=lambda v: html.escape(str(v))) -> str:
    return _table(["", ""], [[html.escape(str(k)), fmt(v)] for k, v in d.items()], "kv")


def machine_info() -> dict:
    """Host facts for the run summary (no network, no personal data beyond the CPU model)."""
    import os

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - the summary must not fail
        pass
    return info


def versions() -> dict:
    """Versions of larpanda and its main dependencies."""
    import importlib.metadata as md

    out = {}
    for name in ("larpanda", "torch", "numpy", "scipy", "h5py", "scikit-learn", "plotly", "safetensors"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def summary_section(results: dict) -> Section:
    """Run summary: wall time per step, versions, machine, resolved configs (collapsed)."""
    parts = []
    t = results.get("timings_s") or {}
    if t:
        total = sum(float(v) for v in t.values() if isinstance(v, (int, float)))
        rows = [[html.escape(k), f"{float(v):.1f}", f"{100 * float(v) / max(total, 1e-9):.0f} %"]
                for k, v in t.items() if isinstance(v, (int, float))]
        rows.append(["<b>total</b>", f"<b>{total:.1f}</b>", ""])
        parts.append(f"<div><h3>Wall time per step (s)</h3>{_table(['step', 's', 'share'], rows, 'num')}</div>")
    side = []
    if results.get("versions"):
        side.append(f"<h3>Versions</h3>{_kv_table(results['versions'])}")
    if results.get("machine"):
        side.append(f"<h3>Machine</h3>{_kv_table(results['machine'])}")
    if side:
        parts.append(f"<div>{''.join(side)}</div>")
    body = f'<div class="grid2">{"".join(parts)}</div>'
    if results.get("config"):
        import yaml

        txt = yaml.safe_dump(results["config"], sort_keys=False)
        body += f"<details><summary>Resolved configuration</summary><pre>{html.escape(txt)}</pre></details>"
    if results.get("created"):
        body += f'<p class="muted small">Created {html.escape(str(results["created"]))}.</p>'
    return Section("Run summary", body, "run")


# ----------------------------------------------------------------------------------------------- page

CSS = """
:root { --fg:#1d2329; --muted:#6b7480; --line:#e3e7ec; --bg:#f6f8fa; --accent:#1f77b4; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif; color:var(--fg); background:var(--bg); }
header { background:#14213d; color:#fff; padding:22px 32px 18px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:600; }
header p { margin:0; color:#c9d3e0; }
nav { position:sticky; top:0; z-index:10; background:#fff; border-bottom:1px solid var(--line); padding:8px 32px; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; font-size:14px; }
main { max-width:1400px; margin:0 auto; padding:8px 24px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; margin:18px 0; padding:14px 22px 18px; }
h2 { font-size:19px; margin:4px 0 12px; }
h3 { font-size:15px; margin:14px 0 6px; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit, minmax(520px, 1fr)); gap:14px; align-items:start; }
.fig { min-width:0; }
.grid2 > div:not(.fig) { min-width:0; overflow-x:auto; }
.evpanel { border:1px solid var(--line); border-radius:8px; }
table { border-collapse:collapse; margin:6px 0; font-size:14px; }
th, td { padding:6px 12px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { background:#f0f3f6; font-weight:600; }
table.num td:not(:first-child), table.num th:not(:first-child) { text-align:right; font-variant-numeric:tabular-nums; }
table.kv th { display:none; }
.mode { border-left:4px solid; padding-left:6px; font-weight:600; }
.muted { color:var(--muted); } .small { font-size:12px; }
.cards { display:flex; flex-wrap:wrap; gap:14px; }
.card { flex:1 1 220px; border:1px solid var(--line); border-radius:10px; padding:12px 16px; background:#fbfcfd; }
.card .big { font-size:28px; font-weight:700; color:var(--accent); }
.card.good .big { color:#2a9d4b; } .card.ok .big { color:#d08b00; } .card.bad .big { color:#c0392b; }
pre { background:#f6f8fa; padding:10px; border-radius:6px; overflow:auto; font-size:12px; }
details { margin-top:10px; } summary { cursor:pointer; color:var(--accent); }
footer { text-align:center; color:var(--muted); font-size:12px; padding:10px 0 30px; }
"""


def render_page(sections, title: str = "larpanda report", subtitle: str = "") -> str:
    """The full HTML text: CSS, plotly.js once, navigation, sections."""
    from plotly.offline import get_plotlyjs

    from .. import __version__

    secs = [s for s in sections if s is not None]
    nav = "".join(f'<a href="#{s.anchor or _slug(s.title)}">{html.escape(s.title)}</a>' for s in secs)
    body = "\n".join(s.html() for s in secs)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style>\n<script type=\"text/javascript\">{get_plotlyjs()}</script>\n</head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>\n{body}\n</main>"
        f"<footer>larpanda {html.escape(__version__)} · self-contained offline report (plotly.js inlined)</footer>"
        f"<script>{RESIZE_JS}</script></body></html>\n"
    )


# Each figure's inline script draws it while the page is still being parsed: the first figure of a two-column
# grid is drawn when its grid holds only that one item (full width) and kept that width after the second item
# arrived, overflowing under its neighbour. Once the page is laid out, fit every figure to its box.
RESIZE_JS = ("window.addEventListener('load',function(){document.querySelectorAll('.js-plotly-plot')"
             ".forEach(function(g){Plotly.Plots.resize(g);});});")


def write_page(out_html, sections, title: str = "larpanda report", subtitle: str = "") -> Path:
    """Write a page of ``sections`` atomically; returns the path."""
    out_html = Path(out_html)
    atomic_write_text(out_html, render_page(sections, title, subtitle))
    return out_html


def build_report(results: dict, out_html, events=None, extras=None) -> Path:
    """The full report of a demo (or study) run, written atomically to ``out_html``.

    Args:
        results: the ``results.json`` dict (schema in the module docstring); missing parts are skipped.
        events: event dicts for the 3D displays and the feature view (module docstring).
        extras: optional ``{"runs": {name: metrics.jsonl path | rows}, "title": str, "subtitle": str,
            "sections": [Section, ...] (appended before the run summary)}``.
    """
    results, out_html = _normalize(results, out_html)
    extras = extras or {}
    sem = results.get("semantic") or []
    sections = [
        headline_section(results),
        label_efficiency_section(sem) if sem else None,
        per_class_section(sem),
        panoptic_section(results.get("panoptic") or []),
        event_displays_section(events),
        features_section(events),
        training_curves_section(extras.get("runs") or {}),
        *(results.get("_sections") or []),
        *(extras.get("sections") or []),
        summary_section(results),
    ]
    subtitle = extras.get("subtitle") or (
        "Simulated LArTPC events → self-supervised pretraining without labels → semantic segmentation with few "
        "labels vs training from scratch → particles and interactions."
    )
    return write_page(out_html, sections, extras.get("title", "larpanda: a foundation model for LArTPC data"), subtitle)


def _normalize(results, out_html):
    """Accept the shapes the commands pass: (out, results) swapped, a directory as ``out_html``
    (→ ``DIR/report.html``), ``{"study": rows}`` from ``larpanda study`` (mIoU/macro_F1/IoU_* keys) and
    ``{"semantic": metrics_dict}`` from ``larpanda evaluate --report``."""
    if not isinstance(results, dict) and isinstance(out_html, dict):
        results, out_html = out_html, results
    out_html = Path(out_html)
    if out_html.is_dir() or out_html.suffix.lower() not in (".html", ".htm"):
        out_html = out_html / "report.html"
    results = dict(results)
    if "study" in results and "semantic" not in results:
        results["semantic"] = [
            {"mode": r["mode"], "label_fraction": float(r["label_fraction"]), "pretrained": r["mode"] in ("linear", "decoder", "full"),
             "miou": r.get("mIoU"), "macro_f1": r.get("macro_F1"),
             "per_class_iou": {c: r[f"IoU_{c}"] for c in SEMANTIC_CLASSES if r.get(f"IoU_{c}") is not None}}
            for r in results["study"]]
    if isinstance(results.get("semantic"), dict):  # one metrics dict (evaluate --report)
        m = results.pop("semantic")
        results.setdefault("_sections", []).append(semantic_metrics_section(m))
    return results, out_html


def load_results(path) -> dict:
    """Read a ``results.json``."""
    return json.loads(Path(path).read_text())
