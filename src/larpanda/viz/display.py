"""Plotly event displays and simulator statistics report (offline HTML, plotly.js embedded).

* ``event_figure(event_or_arrays, color_by=..., title=...)``: 3D scatter of one event, one trace per
  category so that a legend click toggles a class / particle / interaction; equal aspect (voxel units).
* ``stats_report(path_or_events, out_html)``: a self-contained page with a few events coloured by
  semantic class, particle and interaction, plus histograms of the PILArNet-M statistics (docs/model.md §5.7)
  (used by ``larpanda info --plot``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..constants import ENERGY_THRESHOLD_MEV, PID_CLASSES, SEMANTIC_CLASSES

COLOR_KEYS = {"semantic": "segment_motif", "particle": "instance_particle", "interaction": "instance_interaction",
              "pid": "segment_pid"}
SEMANTIC_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#b0b0b0"]  # shower track Michel delta LED
PID_COLORS = ["#17becf", "#1f77b4", "#d62728", "#9467bd", "#8c564b", "#b0b0b0"]
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1"]


def _arrays(ev) -> dict:
    """Event or dict -> dict of numpy arrays (voxel, energy, label keys present)."""
    if isinstance(ev, dict):
        return {k: np.asarray(v) for k, v in ev.items() if not isinstance(v, (dict, str))}
    out = {"voxel": ev.voxel, "energy": np.asarray(ev.energy)}
    for key in COLOR_KEYS.values():
        out[key] = np.asarray(getattr(ev, key))
    return out


def event_figure(event_or_arrays, color_by: str = "semantic", title: str | None = None,
                 energy_threshold: float = 0.0, marker_size: float = 2.0, height: int = 520):
    """3D display of one event.

    Args:
        event_or_arrays: an ``Event`` or a dict with ``voxel`` (N,3) and ``energy`` (N,) and the label
            arrays (``segment_motif``, ``segment_pid``, ``instance_particle``, ``instance_interaction``).
            Labels < 0 on semantic/PID (e.g. predictions for rows removed by the energy cut) are shown
            as "not predicted".
        color_by: "semantic" | "particle" | "interaction" | "energy" | "pid".
        title: figure title.
        energy_threshold: hide points with energy <= this (MeV); 0 shows all.
    Returns:
        plotly ``Figure``.
    """
    import plotly.graph_objects as go

    if color_by not in (*COLOR_KEYS, "energy"):
        raise ValueError(f"color_by must be one of {', '.join((*COLOR_KEYS, 'energy'))}, not {color_by!r}")
    a = _arrays(event_or_arrays)
    v = np.asarray(a["voxel"]).reshape(-1, 3)
    e = np.asarray(a.get("energy", np.ones(len(v))), dtype=np.float64).reshape(-1)
    keep = e > energy_threshold if energy_threshold > 0 else np.ones(len(v), bool)
    v, e = v[keep], e[keep]
    fig = go.Figure()
    hover = "x %{x}<br>y %{y}<br>z %{z}<br>E %{customdata:.3f} MeV<extra>%{fullData.name}</extra>"

    def add(mask, name, color):
        fig.add_trace(go.Scatter3d(
            x=v[mask, 0], y=v[mask, 1], z=v[mask, 2], mode="markers", name=name, customdata=e[mask],
            hovertemplate=hover, marker=dict(size=marker_size, color=color, line=dict(width=0)),
        ))

    if color_by == "energy":
        fig.add_trace(go.Scatter3d(
            x=v[:, 0], y=v[:, 1], z=v[:, 2], mode="markers", name="energy", customdata=e, hovertemplate=hover,
            marker=dict(size=marker_size, color=np.log10(np.maximum(e, 1e-3)), colorscale="Viridis",
                        colorbar=dict(title="log10 E [MeV]", thickness=12), line=dict(width=0)),
        ))
    else:
        lab = np.asarray(a[COLOR_KEYS[color_by]]).reshape(-1)[keep].astype(np.int64)
        if color_by == "semantic":
            lab = np.where(lab >= len(SEMANTIC_CLASSES), -1, lab)
        for c in np.unique(lab):
            m = lab == c
            if color_by == "semantic":
                name, col = (SEMANTIC_CLASSES[c], SEMANTIC_COLORS[c]) if c >= 0 else ("not predicted", "#000000")
            elif color_by == "pid":
                name, col = (PID_CLASSES[c], PID_COLORS[c]) if 0 <= c < len(PID_CLASSES) else ("not predicted", "#000000")
            else:
                name = "LED (none)" if c < 0 else f"{color_by} {c}"
                col = "#b0b0b0" if c < 0 else PALETTE[c % len(PALETTE)]
            add(m, name, col)
    axis = dict(showbackground=False, gridcolor="#e5e5e5", zeroline=False)
    fig.update_layout(
        template="plotly_white", height=height, title=dict(text=title, x=0.0) if title else None,
        margin=dict(l=0, r=0, t=40 if title else 0, b=0),
        scene=dict(aspectmode="data", xaxis=dict(title="x [voxel]", **axis), yaxis=dict(title="y [voxel]", **axis),
                   zaxis=dict(title="z [voxel]", **axis)),
        legend=dict(itemsizing="constant"),
    )
    return fig


def stats_figures(summary: dict, events) -> list:
    """Histograms of points per event (raw / after cut), voxel energy, class fractions, particles."""
    import plotly.graph_objects as go

    per = summary["per_event"]
    figs = []
    f = go.Figure()
    f.add_trace(go.Histogram(x=per["points_raw"], name="raw", opacity=0.6, nbinsx=40))
    f.add_trace(go.Histogram(x=per["points_after_cut"], name=f"E > {ENERGY_THRESHOLD_MEV} MeV", opacity=0.6, nbinsx=40))
    f.update_layout(barmode="overlay", title="points per event", xaxis_title="points", yaxis_title="events")
    figs.append(f)
    e = np.concatenate([np.asarray(ev.energy) for ev in events])
    motif = np.concatenate([ev.segment_motif for ev in events])
    f = go.Figure()
    bins = dict(start=-2.5, end=1.5, size=0.05)
    for c, name in enumerate(SEMANTIC_CLASSES):
        m = motif == c
        if m.any():
            f.add_trace(go.Histogram(x=np.log10(np.maximum(e[m], 1e-4)), name=name, xbins=bins, opacity=0.7,
                                     marker_color=SEMANTIC_COLORS[c]))
    f.add_vline(x=np.log10(ENERGY_THRESHOLD_MEV), line_dash="dash")
    f.update_layout(barmode="stack", title=f"voxel energy by class (raw; dashed: {ENERGY_THRESHOLD_MEV} MeV cut)",
                    xaxis_title="log10 E [MeV]", yaxis_title="voxels")
    figs.append(f)
    f = go.Figure(go.Bar(x=list(SEMANTIC_CLASSES), y=[summary[f"frac_{c}"] for c in SEMANTIC_CLASSES],
                         marker_color=SEMANTIC_COLORS, name="measured"))
    from ..sim.stats import REAL

    f.add_trace(go.Scatter(x=list(SEMANTIC_CLASSES), y=[REAL.get(f"frac_{c}") for c in SEMANTIC_CLASSES],
                           mode="markers", marker=dict(symbol="line-ew-open", size=30, color="black"),
                           name="PILArNet-M"))
    f.update_layout(title="raw class fractions", yaxis_title="fraction", yaxis_tickformat=".0%")
    figs.append(f)
    f = go.Figure()
    f.add_trace(go.Histogram(x=per["particles"], name="particles", opacity=0.6))
    f.add_trace(go.Histogram(x=per["interactions"], name="interactions", opacity=0.6))
    f.update_layout(barmode="overlay", title="particles and interactions per event", xaxis_title="count")
    figs.append(f)
    for g in figs:
        g.update_layout(template="plotly_white", height=340, margin=dict(l=50, r=10, t=40, b=40))
    return figs


def stats_report(path_or_events, out_html, n_display: int = 3, max_events: int = 500, title: str | None = None) -> Path:
    """Write a self-contained HTML page (plotly.js inlined): event displays + statistics.

    ``path_or_events``: an HDF5 path (the first ``max_events`` events are read) or a list of ``Event``.
    Returns the output path.
    """
    import html

    import plotly.io as pio

    from ..atomic import atomic_write_text
    from ..sim.stats import summarize, table

    if isinstance(path_or_events, (str, Path)):
        from ..data import pilarnet

        n = pilarnet.num_events(path_or_events)
        events = pilarnet.read_events(path_or_events, 0, min(n, max_events))
        name = str(path_or_events)
    else:
        events = list(path_or_events)[:max_events]
        name = f"{len(events)} events"
    if not events:
        from ..errors import UserError

        raise UserError(f"{name}: no events to report")
    s = summarize(events)
    parts, first = [], True

    def fig_html(fig):
        nonlocal first
        out = pio.to_html(fig, full_html=False, include_plotlyjs=True if first else False,
                          config={"displaylogo": False})
        first = False
        return f'<div class="fig">{out}</div>'

    for i, ev in enumerate(events[:n_display]):
        row = [fig_html(event_figure(ev, c, f"event {i}: {c}", marker_size=1.6, height=420))
               for c in ("semantic", "particle", "interaction")]
        parts.append(f'<div class="row3">{"".join(row)}</div>')
    stats = "".join(fig_html(f) for f in stats_figures(s, events))
    tbl = html.escape(table(s))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title or name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:16px;color:#222}} .row3{{display:grid;grid-template-columns:repeat(3,1fr);gap:8px}}
.grid2{{display:grid;grid-template-columns:repeat(2,1fr);gap:8px}} pre{{background:#f6f6f6;padding:8px;font-size:12px}}</style>
</head><body><h1>{html.escape(title or "Event statistics")}</h1><p>{html.escape(name)}: {len(events)} events.
Colours: semantic class, particle instance, interaction; click a legend entry to hide it.</p>
{"".join(parts)}<h2>Statistics (docs/model.md §5.7)</h2><div class="grid2">{stats}</div>
<h2>Targets vs measured</h2><pre>{tbl}</pre></body></html>"""
    out = Path(out_html)
    atomic_write_text(out, page)
    return out
