"""Event statistics compared with PILArNet-M and the simulator acceptance bands (docs/model.md §5.7).

``summarize(events)`` works on any list of ``Event`` (simulated or read from a file); its counts of points,
classes, particles and interactions are `larpanda.data.stats.EventCounts` (also behind ``larpanda info``),
the physics figures are added here. Path lengths for
the track rule of thumb come from column 7 (dx, mm: summed step length per voxel), which the simulator
fills exactly; on files without it the voxels/cm figure is NaN. The track rules of thumb are measured
on muon tracks (the PILArNet-M reference figure is a muon; protons near their Bragg peak are denser).
"""

from __future__ import annotations

import numpy as np

from ..constants import MIN_RAW_POINTS, SEMANTIC_CLASSES
from ..data.event import GRID_SIZE_VOXELS
from ..data.stats import EventCounts, fractions

# (key, low, high) acceptance bands of the simulator (docs/model.md §5.7)
TARGETS = {
    "median_points_after_cut": (2000, 5000),
    "frac_events_ge_1024_raw": (0.90, 1.0),
    "frac_shower": (0.30, 0.45),
    "frac_track": (0.30, 0.45),
    "frac_michel": (0.003, 0.015),
    "frac_delta": (0.01, 0.03),
    "frac_led": (0.15, 0.30),
    "median_voxel_energy_after_cut": (0.40, 0.65),
    "track_voxels_per_cm": (3.5, 5.0),
    "track_mev_per_voxel": (0.40, 0.65),
    "shower_voxels_per_mev": (1.2, 2.0),
    "michel_per_stopping_muon": (0.4, 0.85),
    "muon_bragg_ratio": (2.0, 50.0),
    "median_particles": (3, 60),
    "median_interactions": (1, 10),
}
REAL = {  # PILArNet-M reference values, docs/model.md §5.7
    "median_points_after_cut": 3400, "mean_points_raw": 4400, "frac_shower": 0.368, "frac_track": 0.389,
    "frac_michel": 0.0065, "frac_delta": 0.0176, "frac_led": 0.219, "median_voxel_energy_after_cut": 0.51,
    "track_voxels_per_cm": 4.2, "track_mev_per_voxel": 0.5, "shower_voxels_per_mev": 1.5,
    "michel_per_stopping_muon": 0.625,
}


def _contained(vox, margin=2):
    return bool((vox.min() >= margin).all() and (vox.max() <= GRID_SIZE_VOXELS - 1 - margin).all())


def summarize(events) -> dict:
    """Acceptance statistics over a list of events (plain floats; fractions in 0..1).

    Keys: n_events, median/mean points raw and after the cut, frac_events_ge_1024_raw, raw class
    fractions frac_<class>, median_voxel_energy_after_cut, track_voxels_per_cm (after cut / path),
    track_mev_per_voxel, shower_voxels_per_mev (after cut), michel_per_stopping_muon (Michel groups per
    contained muon group), muon_bragg_ratio (median over stopping muons of the mean energy of
    their last 5 voxels in time over their median voxel energy), median/mean particles and interactions, plus per-event lists under "per_event".
    """
    counts = EventCounts()
    e_cut_all = []
    trk_vox = trk_len = trk_e = 0.0
    sh_vox = sh_e = 0.0
    n_michel = n_stop_mu = 0
    bragg = []
    for ev in events:
        keep = counts.add(ev)
        E = ev.energy
        m = ev.segment_motif
        e_cut_all.append(E[keep])
        trk = (m == 1) & (ev.segment_pid == 2)  # muon tracks: the ~4.2 voxel/cm, 0.5 MeV/voxel rule (docs/model.md §5.7)
        trk_vox += (trk & keep).sum()
        trk_e += E[trk & keep].sum()
        trk_len += ev.point[trk, 7].sum() / 10.0
        sh = m == 0
        sh_vox += (sh & keep).sum()
        sh_e += E[sh & keep].sum()
        # Michel per stopping (contained) muon: groups with pid μ and track motif
        c = ev.cluster
        sizes = c[:, 0]
        row_of_point = np.repeat(np.arange(len(c)), sizes)
        groups = c[:, 2]
        for g in np.unique(groups[(c[:, 5] == 2) & (c[:, 4] == 1)]):
            pts = np.flatnonzero(np.isin(row_of_point, np.flatnonzero((groups == g) & (c[:, 4] == 1))))
            if pts.size == 0:
                continue
            end = pts[np.argmax(ev.point[pts, 5])]  # latest voxel (time column) = end of the track
            if _contained(ev.voxel[end : end + 1]):
                n_stop_mu += 1
                if pts.size >= 20:  # Bragg peak: last 5 voxels in time vs the track's median voxel
                    by_t = pts[np.argsort(ev.point[pts, 5])]
                    bragg.append(E[by_t[-5:]].mean() / np.median(E[by_t]))
        n_michel += int(np.unique(groups[(c[:, 4] == 2) & (sizes > 0)]).size)
    raw, cut = np.asarray(counts.raw), np.asarray(counts.after_cut)
    parts, inters = counts.particles, counts.interactions
    e_cut = np.concatenate(e_cut_all) if e_cut_all else np.zeros(0)
    out = {
        "n_events": len(raw),
        "median_points_raw": float(np.median(raw)),
        "mean_points_raw": float(raw.mean()),
        "median_points_after_cut": float(np.median(cut)),
        "mean_points_after_cut": float(cut.mean()),
        "frac_events_ge_1024_raw": float((raw >= MIN_RAW_POINTS).mean()),
        **{f"frac_{name}": v for name, v in fractions(counts.motif_raw, SEMANTIC_CLASSES).items()},
        "median_voxel_energy_after_cut": float(np.median(e_cut)) if e_cut.size else float("nan"),
        "track_voxels_per_cm": float(trk_vox / trk_len) if trk_len > 0 else float("nan"),
        "track_mev_per_voxel": float(trk_e / trk_vox) if trk_vox else float("nan"),
        "shower_voxels_per_mev": float(sh_vox / sh_e) if sh_e > 0 else float("nan"),
        "michel_per_stopping_muon": float(n_michel / n_stop_mu) if n_stop_mu else float("nan"),
        "n_stopping_muons": int(n_stop_mu),
        "muon_bragg_ratio": float(np.median(bragg)) if bragg else float("nan"),
        "median_particles": float(np.median(parts)),
        "mean_particles": float(np.mean(parts)),
        "median_interactions": float(np.median(inters)),
        "mean_interactions": float(np.mean(inters)),
        "per_event": {"points_raw": raw.tolist(), "points_after_cut": cut.tolist(), "particles": parts,
                      "interactions": inters},
    }
    return out


def check(summary: dict, targets: dict = TARGETS, widen: float = 0.0) -> dict:
    """{key: (value, lo, hi, ok)} for every target; ``widen`` enlarges each band by that fraction."""
    res = {}
    for k, (lo, hi) in targets.items():
        v = summary.get(k, float("nan"))
        w = widen * (hi - lo)
        res[k] = (v, lo - w, hi + w, bool(lo - w <= v <= hi + w))
    return res


def table(summary: dict) -> str:
    """Markdown table: quantity | target | real PILArNet-M | measured | ok."""
    lines = ["| quantity | target | PILArNet-M | measured | ok |", "|---|---|---|---|---|"]
    for k, (v, lo, hi, ok) in check(summary).items():
        real = REAL.get(k, "")
        lines.append(f"| {k} | {lo:g} – {hi:g} | {real} | {v:.4g} | {'yes' if ok else 'NO'} |")
    for k in ("mean_points_raw", "median_points_raw", "mean_points_after_cut", "mean_particles", "mean_interactions", "n_stopping_muons"):
        lines.append(f"| {k} | | {REAL.get(k, '')} | {summary[k]:.4g} | |")
    return "\n".join(lines)
