"""The sections of the offline HTML report (`larpanda.viz.report` assembles them into a page).

Each builder takes plain data (rows of ``results.json``, metric dicts, arrays; schema in
`larpanda.viz.report`) and returns a `Section`, or None when it has nothing to show. Semantic rows and
metric dicts use the metric names of `larpanda.metrics.semantic`: ``mIoU``, ``macro_F1``, ``allAcc``,
``IoU_<class>`` (docs/design.md §7.1).
"""

from __future__ import annotations

import html
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import PID_CLASSES, SEMANTIC_CLASSES
from . import plots

LABEL_KEYS = ("segment_motif", "segment_pid", "instance_particle", "instance_interaction")


@dataclass
class Section:
    """One block of the page: ``title`` (also the table-of-contents entry), ``body`` HTML, ``anchor``."""

    title: str
    body: str
    anchor: str = ""

    @property
    def id(self) -> str:
        """The element id: ``anchor``, or one made from the title."""
        return self.anchor or _slug(self.title)

    def html(self) -> str:
        return f'<section id="{self.id}"><h2>{html.escape(self.title)}</h2>\n{self.body}\n</section>'


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


# ------------------------------------------------------------------------------------------- sections


def headline_section(results: dict) -> Section | None:
    """The one-sentence result: pretrained linear probe vs scratch at the smallest common label fraction."""
    rows = [r for r in results.get("semantic") or [] if _finite(r.get("mIoU"))]
    lin = {r["label_fraction"]: r for r in rows if r["mode"] == "linear"}
    scr = {r["label_fraction"]: r for r in rows if r["mode"] == "scratch"}
    common = sorted(set(lin) & set(scr))
    cards = []
    if common:
        f = common[0]
        d = 100 * (lin[f]["mIoU"] - scr[f]["mIoU"])
        cls = "good" if d >= 10 else ("ok" if d > 0 else "bad")
        cards.append(
            f'<div class="card {cls}"><div class="big">{d:+.1f}</div><div>mIoU points: pretrained linear probe '
            f"({_pct(lin[f]['mIoU'])} %) vs training from scratch ({_pct(scr[f]['mIoU'])} %) with "
            f"{_frac_label(f)} of the labels</div></div>"
        )
    best = max(rows, key=lambda r: r["mIoU"], default=None)
    if best is not None:
        cards.append(
            f'<div class="card"><div class="big">{_pct(best["mIoU"])} %</div><div>best mIoU '
            f"({html.escape(best['mode'])}, {_frac_label(best['label_fraction'])} labels)</div></div>"
        )
    for p in results.get("panoptic") or []:
        if p.get("level") == "particle":
            cards.append(
                f'<div class="card"><div class="big">{_num(p.get("ari"))}</div><div>particle '
                f"clustering ARI; detection F1 {_num(p.get('f1'))}"
                + (f" ({html.escape(str(p['head']))} head)" if p.get("head") else "") + "</div></div>"
            )
            break
    wall = results.get("wall_s")
    if wall:
        cards.append(f'<div class="card"><div class="big">{wall / 60:.1f} min</div><div>total wall time</div></div>')
    if not cards:
        return None
    return Section("Summary", f'<div class="cards">{"".join(cards)}</div>', "summary")


def label_efficiency_section(rows, metric: str = "mIoU") -> Section:
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
            f1, steps = r.get("macro_F1"), r.get("steps")
            detail = ([f"F1 {_pct(f1)}"] if f1 is not None else []) + ([f"{steps} steps"] if steps is not None else [])
            if steps is not None and r.get("best_step") not in (None, steps):
                detail[-1] += f" (best at {r['best_step']})"
            sub = f'<div class="muted small">{", ".join(detail)}</div>' if detail else ""
            cells.append(f"<b>{v}</b>{sub}" if strong else f"{v}{sub}")
        body_rows.append(cells)
    table = _table(["mode"] + [f"{_frac_label(f)} labels" for f in fracs], body_rows, "num")
    note = ('<p class="muted small">mIoU (%) on the test set, pooled over all points (docs/design.md §7.1); bold = best '
            "per column; the smaller line is macro-F1 (%) and the training steps the row had (the model kept is the "
            "best by validation mIoU). Label fraction = fraction of training events whose labels are used "
            "(nested subsets).</p>")
    fig = plots.label_efficiency_figure(rows, metric)
    return Section("Label efficiency", f'<div class="grid2"><div>{table}{note}</div>{fig_html(fig, "label-efficiency-plot")}</div>',
                   "label-efficiency")


def per_class_section(rows, class_names=SEMANTIC_CLASSES, confusion_of: dict | None = None) -> Section | None:
    """Per-class IoU bars (each mode at its smallest and largest label fraction) and one confusion matrix.

    ``confusion_of``: the row whose ``confusion`` is shown; default the best pretrained row at the smallest
    label fraction that has one.
    """
    rows = [r for r in rows if any(f"IoU_{c}" in r for c in class_names)]
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
            confusion_of = max(at, key=lambda r: (r.get("pretrained", False), r["mIoU"]))
    if confusion_of is not None and confusion_of.get("confusion"):
        t = f"Confusion, {confusion_of['mode']} @ {_frac_label(confusion_of['label_fraction'])} (row %)"
        parts.append(fig_html(plots.confusion_figure(confusion_of["confusion"], class_names, t)))
    return Section("Semantic classes", f'<div class="grid2">{"".join(parts)}</div>', "classes")


def semantic_metrics_section(metrics: dict, title: str = "Semantic segmentation") -> Section:
    """For ``larpanda evaluate --report``: one `semantic_metrics` dict → table, IoU bars, confusion."""
    names = metrics.get("class_names") or list(SEMANTIC_CLASSES)
    tab = _table(
        ["metric", "value (%)"],
        [["mIoU", _pct(metrics["mIoU"])], ["macro-F1", _pct(metrics["macro_F1"])], ["overall accuracy", _pct(metrics.get("allAcc"))]]
        + [[f"IoU {html.escape(n)}", _pct(metrics.get(f"IoU_{n}"))] for n in names],
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
            if r.get("head"):
                desc += f", {html.escape(str(r['head']))} head"
            if r.get("label_fraction") is not None:
                desc += f", {_frac_label(r['label_fraction'])} labels"
            if r.get("steps") is not None:
                desc += f", {int(r['steps'])} steps"
                if r.get("best_step") not in (None, r["steps"]):
                    by = f" {str(r['best_metric']).upper()}" if r.get("best_metric") else ""
                    desc += f" (best val{by} at {int(r['best_step'])})"
            desc += "</span>"
        body.append([desc] + [_num(r.get(k)) for k, _ in keys])
    # the table spans the section (ten columns do not fit half of it); the PID confusion goes below
    table = (f'<div class="wide">{_table(["level"] + [n for _, n in keys], body, "num compact")}'
             '<p class="muted small">Detection: predicted and true instances matched one-to-one at IoU ≥ 0.5 '
             "(docs/design.md §7.2), counts pooled over events; ARI per event (points predicted as LED dropped), "
             "averaged over events. Fractions 0..1.</p></div>")
    figs = []
    for r in rows:
        if r.get("pid_confusion"):
            names = r.get("pid_classes") or list(PID_CLASSES[:5])
            figs.append(fig_html(plots.confusion_figure(
                r["pid_confusion"], names, f"PID of matched {r.get('level', '')}s (row % = efficiency)")))
            break
    return Section("Particles and interactions", table + (f'<div class="grid2">{"".join(figs)}</div>' if figs else ""),
                   "panoptic")


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
        jobs = results.get("jobs") or 1
        if jobs > 1 and results.get("wall_s"):
            rows.append([f"<b>wall clock</b> ({jobs} jobs side by side)", f"<b>{float(results['wall_s']):.1f}</b>", ""])
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
