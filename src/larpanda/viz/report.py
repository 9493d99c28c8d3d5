"""The self-contained offline HTML report (``larpanda demo``, ``larpanda study``, ``larpanda evaluate --report``).

One HTML file, plotly.js inlined exactly once (``plotly.offline.get_plotlyjs()``), no CDN, no network.
The page is a list of sections (`larpanda.viz.sections`); each section builder takes plain data (rows of
``results.json``, metric dicts, arrays) and returns a `Section`, so a command with partial results can
write a page with only what it has::

    from larpanda.viz import report, sections
    secs = [sections.label_efficiency_section(rows), sections.summary_section(results)]
    report.write_page("study.html", secs, title="Label efficiency")

``build_report(results, out_html, events=None, extras=None)`` assembles the full demo report.

``results`` schema (``results.json``; metrics are fractions 0..1, extra keys are welcome)::

    {"semantic": [{"mode": "linear|decoder|full|scratch|uresnet", "label_fraction": 0.01, "pretrained": true,
                   "mIoU": .., "macro_F1": .., "IoU_shower": .., "IoU_track": .., ... (one per class),
                   "allAcc": .., "mAcc": .. (optional), "confusion": [[..]] (optional, rows truth),
                   "run": "semantic/linear_0.01" (optional)}, ...],
     "panoptic": [{"level": "particle", "ari": .., "f1": .., "precision": .., "recall": .., "pq": ..,
                   "pid_confusion": [[..]] (optional), "pid_classes": [..] (optional)}, ...],
     "timings_s": {"simulate": .., ...}, "versions": {...}, "machine": {...}, "config": {...}}

Semantic rows carry the metric names of `larpanda.metrics.semantic` (docs/design.md §7.1); one row is made
from a metrics dict by `larpanda.tasks.study.semantic_row`.

``events``: list of dicts, one per displayed event, with per-point numpy arrays in raw event row order:
``voxel`` (N,3), ``energy`` (N,), ``segment_motif``, ``segment_pid``, ``instance_particle``,
``instance_interaction`` (N,) (truth), optional ``pred`` = dict of the same label keys (predictions, −1 for
rows removed by the energy cut), optional ``features`` (K, C) with ``feature_index`` (K,) raw rows (the
pretrained per-point features, for the PCA-to-RGB view), optional ``title``.
"""

from __future__ import annotations

import html
from pathlib import Path

from ..atomic import atomic_write_text
from .sections import (
    event_displays_section,
    features_section,
    headline_section,
    label_efficiency_section,
    panoptic_section,
    per_class_section,
    summary_section,
    training_curves_section,
)

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
.wide { max-width:100%; overflow-x:auto; }
table.compact th, table.compact td { padding:5px 9px; }
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
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in secs)
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
        out_html: the page's path; a directory, or a path not ending in ``.html``/``.htm``, gets ``report.html``
            inside it (``evaluate --report DIR``).
        events: event dicts for the 3D displays and the feature view (module docstring).
        extras: optional ``{"runs": {name: metrics.jsonl path | rows}, "title": str, "subtitle": str,
            "sections": [Section, ...] (appended before the run summary)}``.
    """
    out_html = Path(out_html)
    if out_html.is_dir() or out_html.suffix.lower() not in (".html", ".htm"):
        out_html = out_html / "report.html"
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
        *(extras.get("sections") or []),
        summary_section(results),
    ]
    subtitle = extras.get("subtitle") or (
        "Simulated LArTPC events → self-supervised pretraining without labels → semantic segmentation with few "
        "labels vs training from scratch → particles and interactions."
    )
    return write_page(out_html, sections, extras.get("title", "larpanda: a foundation model for LArTPC data"), subtitle)
