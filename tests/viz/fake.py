"""A realistic fake ``results.json`` and synthetic event arrays for report tests (no simulator needed)."""

from __future__ import annotations

import numpy as np

from larpanda.constants import SEMANTIC_CLASSES

FRACTIONS = (0.01, 0.1, 1.0)


def fake_results() -> dict:
    rng = np.random.default_rng(0)
    base = {"linear": 0.62, "decoder": 0.70, "full": 0.66, "scratch": 0.40, "uresnet": 0.45}
    rows = []
    for mode, b in base.items():
        for f in FRACTIONS if mode != "full" else (0.01,):
            miou = min(0.97, b + 0.12 * np.log10(f / 0.01))
            cm = rng.integers(5, 60, size=(5, 5)) + np.diag(rng.integers(800, 2000, size=5))
            rows.append({
                "mode": mode, "label_fraction": f, "pretrained": mode in ("linear", "decoder", "full"),
                "mIoU": float(miou), "macro_F1": float(min(0.99, miou + 0.08)),
                **{f"IoU_{c}": float(np.clip(miou + rng.normal(0, 0.08), 0, 1)) for c in SEMANTIC_CLASSES},
                "confusion": cm.tolist(),
            })
    pid = rng.integers(0, 10, size=(5, 5)) + np.diag([40, 30, 25, 12, 33])
    return {
        "semantic": rows,
        "panoptic": [{"level": "particle", "mode": "decoder", "label_fraction": 1.0, "ari": 0.83, "f1": 0.74,
                      "precision": 0.78, "recall": 0.71, "pq": 0.55, "sq": 0.80, "rq": 0.69,
                      "steps": 480, "best_step": 300, "best_metric": "pq", "pid_confusion": pid.tolist()}],
        "timings_s": {"simulate": 12.3, "pretrain": 301.0, "semantic": 250.2, "panoptic": 120.0, "report": 4.0},
        "versions": {"larpanda": "0.1.0", "torch": "2.13.0"},
        "machine": {"cpu_count": 2},
        "config": {"simulate": {"train": 200}, "pretrain": {"preset": "cpu-small"}},
        "wall_s": 690.0,
    }


def fake_events(n: int = 2, seed: int = 0) -> list[dict]:
    """Synthetic events: a few straight tracks and blob-like showers, LED specks, plausible labels."""
    rng = np.random.default_rng(seed)
    out = []
    for e in range(n):
        vox, mot, part, inter = [], [], [], []
        pid_ = []
        vtx = rng.uniform(200, 560, size=3)
        for p in range(5):
            if p % 2 == 0:  # track
                d = rng.normal(size=3); d /= np.linalg.norm(d)
                t = np.arange(0, rng.uniform(40, 150))
                pts = vtx + t[:, None] * d
                mot += [1] * len(t); pid_ += [2] * len(t)
            else:  # shower
                pts = vtx + rng.normal(size=3) * 30 + rng.normal(size=(300, 3)) * 6
                mot += [0] * len(pts); pid_ += [1] * len(pts)
            vox.append(pts); part += [p] * len(pts); inter += [0] * len(pts)
        led = rng.uniform(100, 660, size=(60, 3))
        vox.append(led); mot += [4] * 60; part += [-1] * 60; inter += [-1] * 60; pid_ += [5] * 60
        v = np.floor(np.concatenate(vox)).astype(np.int64)
        mot = np.array(mot); part = np.array(part); inter = np.array(inter)
        energy = rng.gamma(2.0, 0.3, size=len(v)).astype(np.float32)
        pred_mot = mot.copy(); flip = rng.random(len(v)) < 0.1
        pred_mot[flip] = rng.integers(0, 5, size=flip.sum())
        cut = energy < 0.13
        pred_mot[cut] = -1
        pred_part = part.copy(); pred_part[cut] = -1
        keep = ~cut
        out.append({
            "title": f"test event {e}", "voxel": v, "energy": energy, "segment_motif": mot,
            "segment_pid": np.array(pid_), "instance_particle": part, "instance_interaction": inter,
            "pred": {"segment_motif": pred_mot, "instance_particle": pred_part},
            "features": rng.normal(size=(int(keep.sum()), 16)) + mot[keep, None],
            "feature_index": np.flatnonzero(keep),
        })
    return out
