"""Exact voxel traversal of straight step segments, energy split by chord length (docs/model.md §5.4).

This is the Amanatides–Woo traversal written in a vectorised form: every segment is cut at all the
voxel planes it crosses (parameters t ∈ (0, 1) along the segment), the pieces between consecutive
cuts lie inside exactly one voxel, and each piece receives dE × (piece length / segment length).
Lengths are cm, voxel pitch 0.3 cm, grid origin 0.
"""

from __future__ import annotations

import numpy as np

from .physics import GRID, VOXEL_CM


def split_long(p0, p1, max_len=VOXEL_CM):
    """Split segments longer than ``max_len`` into equal pieces (exact for chords: cutting a line
    does not move the voxel boundaries).

    Returns (p0, p1, parent_index, f0, f1): pieces and their start/end parameters on the parent.
    """
    L = np.linalg.norm(p1 - p0, axis=1)
    n = np.maximum(np.ceil(L / max_len).astype(np.int64), 1)
    if (n == 1).all():
        idx = np.arange(len(p0))
        return p0, p1, idx, np.zeros(len(p0)), np.ones(len(p0))
    idx = np.repeat(np.arange(len(p0)), n)
    start = np.cumsum(n) - n
    k = np.arange(idx.size) - start[idx]
    f0 = k / n[idx]
    f1 = (k + 1) / n[idx]
    d = p1 - p0
    return p0[idx] + f0[:, None] * d[idx], p0[idx] + f1[:, None] * d[idx], idx, f0, f1


def traverse(p0, p1, voxel=VOXEL_CM):
    """Cut segments (S, 3) at voxel planes.

    Returns (seg, ijk, chord, t_mid): for every piece, the index of its segment, the integer voxel
    (P, 3) it lies in (may be outside the grid), its chord length (cm) and its mid parameter t.
    Segments of any length are accepted (long ones are pre-split at ≤ 1 voxel).
    """
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    q0, q1, parent, f0, f1 = split_long(p0, p1, voxel)
    d = q1 - q0
    a = np.floor(q0 / voxel)
    b = np.floor(q1 / voxel)
    # with pieces ≤ 1 voxel long at most one plane is crossed per axis
    plane = np.maximum(a, b) * voxel
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(a != b, (plane - q0) / d, 1.0)
    t = np.clip(np.nan_to_num(t, nan=1.0), 0.0, 1.0)
    cuts = np.sort(np.concatenate([np.zeros((len(q0), 1)), t, np.ones((len(q0), 1))], axis=1), axis=1)
    dt = np.diff(cuts, axis=1)  # (S', 4)
    tm = 0.5 * (cuts[:, 1:] + cuts[:, :-1])
    keep = dt > 0
    sub, col = np.nonzero(keep)
    tmid = tm[sub, col]
    mid = q0[sub] + tmid[:, None] * d[sub]
    ijk = np.floor(mid / voxel).astype(np.int64)
    L = np.linalg.norm(d, axis=1)
    chord = dt[sub, col] * L[sub]
    seg = parent[sub]
    t_orig = f0[sub] + tmid * (f1 - f0)[sub]  # parameter along the original segment
    return seg, ijk, chord, t_orig


def deposit_segments(p0, p1, dE, voxel=VOXEL_CM):
    """Split each segment's dE over the voxels it crosses by chord length.

    Returns (seg, ijk, e, chord): per piece. Σ e over the pieces of a segment equals its dE exactly
    (up to float rounding) when the segment has non-zero length; zero-length segments give one piece.
    """
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    dE = np.asarray(dE, dtype=np.float64)
    L = np.linalg.norm(p1 - p0, axis=1)
    zero = L <= 0
    seg, ijk, chord, _ = traverse(p0[~zero], p1[~zero], voxel)
    nz = np.flatnonzero(~zero)
    seg = nz[seg]
    e = dE[seg] * chord / L[seg]
    if zero.any():
        z = np.flatnonzero(zero)
        seg = np.concatenate([seg, z])
        ijk = np.concatenate([ijk, np.floor(p0[z] / voxel).astype(np.int64)])
        e = np.concatenate([e, dE[z]])
        chord = np.concatenate([chord, np.zeros(len(z))])
    return seg, ijk, e, chord


def inside(ijk, grid=GRID):
    return ((ijk >= 0) & (ijk < grid)).all(axis=1)


def voxel_key(ijk, grid=GRID):
    """Flatten (P, 3) voxel indices into int64 keys (x-major)."""
    return (ijk[:, 0] * grid + ijk[:, 1]) * grid + ijk[:, 2]


def key_to_ijk(key, grid=GRID):
    return np.stack([key // (grid * grid), (key // grid) % grid, key % grid], axis=1)
