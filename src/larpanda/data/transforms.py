"""Per-event transforms of the reference Panda pipeline (docs/design.md §6).

Eval chain (``panda/data.py default_transform``), reproduced bit for bit on the fixture event:

1. energy cut ``E > 0.13`` MeV (strict; docs/design.md §6.1), done first;
2. `normalize_coord`: ``(xyz − 384) / (768·√3/2)`` in float32;
3. `log_transform`: ``2·(log10(E+0.01) − log10 0.01)/(log10 20.01 − log10 0.01) − 1`` in float32;
4. `grid_sample` (0.001): ``g = floor(coord/0.001) − min(...)`` per event, rows reordered by ``np.argsort``
   of the Pointcept FNV hash of ``g``; one point per occupied cell.

Augmentations (training) act AFTER GridSample on ``coord`` (and energy), never on ``grid_coord``, except
the optional ``lattice`` symmetry (docs/design.md §6.3). ``voxel_coord`` carries each kept point's raw voxel indices: ``grid_coord`` is a
0.665-voxel grid (0.001 in normalized units, as the reference), on which consecutive voxels are 1 or 2 cells
apart, so the kernel-3 convolutions of the UResNet baseline use ``voxel_coord`` instead (docs/model.md §3.5).
Each augmentation takes an explicit ``np.random.Generator`` so runs are reproducible.
"""

from __future__ import annotations

import math

import numpy as np

from ..constants import ENERGY_THRESHOLD_MEV
from .event import GRID_SIZE_VOXELS, Event, renumber_ids

CENTER = 384.0
SCALE = 768 * math.sqrt(3) / 2  # 665.1075..., docs/design.md §6.2
GRID_SIZE = 0.001
LOG_MIN, LOG_MAX = 0.01, 20.0
ENERGY_THRESHOLD = ENERGY_THRESHOLD_MEV  # the cut's former name here, kept importable (docs/design.md §6.1)

_F32 = np.float32
_LOG_LO = _F32(np.log10(LOG_MIN))
_LOG_HI = _F32(np.log10(LOG_MAX + LOG_MIN))
_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


def normalize_coord(xyz: np.ndarray) -> np.ndarray:
    """(N, 3) raw voxel coordinates → float32 ``(xyz − 384) / 665.1075`` (float32 arithmetic, as the
    reference's float32 arrays under numpy 1.26)."""
    xyz = np.asarray(xyz, dtype=_F32)
    return (xyz - _F32(CENTER)) / _F32(SCALE)


def log_transform(energy: np.ndarray, min_val: float = LOG_MIN, max_val: float = LOG_MAX) -> np.ndarray:
    """MeV → [−1, 1] (values above ``max_val`` are not clipped), float32 (docs/design.md §6.2)."""
    e = np.asarray(energy, dtype=_F32)
    lo = _F32(np.log10(min_val))
    hi = _F32(np.log10(max_val + min_val))
    return _F32(2) * ((np.log10(e + _F32(min_val)) - lo) / (hi - lo)) - _F32(1)


def fnv_hash_vec(arr: np.ndarray) -> np.ndarray:
    """Pointcept's ``GridSample.fnv_hash_vec`` (named FNV64-1A there; multiply then xor) on (N, D) ints."""
    arr = np.asarray(arr).astype(np.uint64, copy=False)
    h = np.full(arr.shape[0], _FNV_OFFSET, dtype=np.uint64)
    for j in range(arr.shape[1]):
        h *= _FNV_PRIME
        h ^= arr[:, j]
    return h


def grid_sample(coord: np.ndarray, grid_size: float = GRID_SIZE, rng: np.random.Generator | None = None):
    """GridSample(mode "train", hash "fnv", return_grid_coord) of one event.

    Args:
        coord: (N, 3) float32 normalized coordinates.
        rng: picks the kept point among duplicates in a cell; None keeps the first in argsort order.
    Returns:
        order: (K,) int64 rows of ``coord`` kept, in the reference's row order (argsort of the hash);
        grid_coord: (K, 3) int64 ``floor(coord/grid_size) − per-event min``.
    """
    n = coord.shape[0]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
    g = np.floor(coord / np.asarray(grid_size, dtype=coord.dtype)).astype(np.int64)
    g -= g.min(0)
    key = fnv_hash_vec(g)
    order = np.argsort(key)
    ks = key[order]
    new = np.empty(n, bool)
    new[0] = True
    np.not_equal(ks[1:], ks[:-1], out=new[1:])
    if not new.all():  # duplicates in a cell: keep one per cell (reference: a random one)
        start = np.flatnonzero(new)
        if rng is not None:
            count = np.diff(np.append(start, n))
            start = start + rng.integers(0, count.max(), count.size) % count
        order = order[start]
    return order, g[order]


# ------------------------------------------------------------------------------------- augmentations


def center_shift(coord, axes=(0, 1, 2)):
    """Subtract the bounding-box center on the given axes (CenterShift)."""
    coord = coord.copy()
    for a in axes:
        coord[:, a] -= (coord[:, a].min() + coord[:, a].max()) / 2
    return coord


def random_rotate(coord, rng, axis="z", angle=(-1.0, 1.0), p=0.8, center=(0.0, 0.0, 0.0)):
    """RandomRotate about ``axis`` by U(angle)·π with probability p, around ``center``."""
    if rng.random() >= p:
        return coord
    t = rng.uniform(angle[0], angle[1]) * np.pi
    c, s = np.cos(t), np.sin(t)
    if axis == "x":
        m = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    elif axis == "y":
        m = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    else:
        m = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    ctr = np.asarray(center, coord.dtype)
    return ((coord - ctr) @ m.T.astype(coord.dtype) + ctr).astype(coord.dtype)


def random_flip(coord, rng, axes=(0, 1), p=0.5):
    """Independent sign flips per axis, each with probability p."""
    coord = coord.copy()
    for a in axes:
        if rng.random() < p:
            coord[:, a] = -coord[:, a]
    return coord


def random_scale(coord, rng, scale=(0.9, 1.1), anisotropic=False):
    s = rng.uniform(scale[0], scale[1], 3 if anisotropic else 1)
    return (coord * s.astype(coord.dtype)).astype(coord.dtype)


def random_jitter(coord, rng, sigma=0.00025, clip=0.001):
    """Additive clipped Gaussian (RandomJitter; pretrain σ = grid/4)."""
    noise = np.clip(sigma * rng.standard_normal(coord.shape), -clip, clip)
    return (coord + noise).astype(coord.dtype)


def multiplicative_jitter(x, rng, sigma=0.05, clip=0.05, p=0.8):
    """x·(1 + clip(N(0, σ²), ±clip)) with probability p (MultiplicativeRandomJitter, on log energy)."""
    if rng.random() >= p:
        return x
    noise = np.clip(sigma * rng.standard_normal(x.shape), -clip, clip)
    return (x * (1 + noise)).astype(x.dtype)


# Reference augmentation sets (docs/design.md §6.3). Keys are applied in the order of AUGMENT_ORDER.
AUGMENT_DOWNSTREAM = {"rotate": {"axes": ("z", "x", "y"), "p": 0.8}, "flip": {"axes": (0, 1), "p": 0.5}}
AUGMENT_PRETRAIN = {
    "energy_jitter": {"sigma": 0.05, "clip": 0.05, "p": 0.8},
    "center_shift": {"axes": (0, 1, 2)},
    "rotate": {"axes": ("z", "x", "y"), "p": 0.8},
    "flip": {"axes": (0, 1, 2), "p": 0.5},
    "jitter": {"sigma": 0.00025, "clip": 0.001},
}
AUGMENT_ORDER = ("lattice", "energy_jitter", "center_shift", "rotate", "flip", "scale", "jitter")


def lattice_symmetry(coord, grid_coord, voxel_coord, rng, p=1.0):
    """One of the 48 symmetries of the voxel cube (an axis permutation and sign flips), with probability p,
    applied to the event's geometry itself: ``grid_coord`` (mirrored as ``max − g``), ``voxel_coord``
    (``767 − v``) and ``coord`` (``−c``) alike. Unlike a rotation by any angle it maps the voxel lattice onto
    itself, so no point is resampled, merged or lost (a larpanda addition: the reference rotates
    ``coord`` only, docs/design.md §6.3)."""
    if rng.random() >= p:
        return coord, grid_coord, voxel_coord
    perm = rng.permutation(3)
    flip = np.flatnonzero(rng.random(3) < 0.5)
    coord, grid_coord, voxel_coord = coord[:, perm], grid_coord[:, perm], voxel_coord[:, perm]  # new arrays
    if len(flip) and len(coord):
        coord[:, flip] = -coord[:, flip]
        grid_coord[:, flip] = grid_coord[:, flip].max(0) - grid_coord[:, flip]
        voxel_coord[:, flip] = GRID_SIZE_VOXELS - 1 - voxel_coord[:, flip]
    return coord, grid_coord, voxel_coord


def augment_point(coord, grid_coord, voxel_coord, energy, augment: dict, rng: np.random.Generator):
    """`lattice_symmetry` (when ``augment`` names it), then `augment_coord_energy`; returns all four arrays."""
    kw = augment.get("lattice")
    if kw is not None and kw is not False:
        coord, grid_coord, voxel_coord = lattice_symmetry(coord, grid_coord, voxel_coord, rng,
                                                          **(dict(kw) if isinstance(kw, dict) else {}))
    coord, energy = augment_coord_energy(coord, energy, augment, rng)
    return coord, grid_coord, voxel_coord, energy


def augment_coord_energy(coord, energy, augment: dict, rng: np.random.Generator):
    """Apply the augmentations named in ``augment`` (dict name → kwargs) in AUGMENT_ORDER, except ``lattice``
    (which moves ``grid_coord`` too: `augment_point`)."""
    unknown = set(augment) - set(AUGMENT_ORDER)
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; known: {AUGMENT_ORDER}")
    for name in AUGMENT_ORDER:
        if name == "lattice" or name not in augment or augment[name] is None or augment[name] is False:
            continue
        kw = dict(augment[name]) if isinstance(augment[name], dict) else {}
        if name == "energy_jitter":
            energy = multiplicative_jitter(energy, rng, **kw)
        elif name == "center_shift":
            coord = center_shift(coord, **kw)
        elif name == "rotate":
            axes = kw.pop("axes", ("z", "x", "y"))
            for ax in axes:
                coord = random_rotate(coord, rng, axis=ax, **kw)
        elif name == "flip":
            coord = random_flip(coord, rng, **kw)
        elif name == "scale":
            coord = random_scale(coord, rng, **kw)
        elif name == "jitter":
            coord = random_jitter(coord, rng, **kw)
    return coord, energy


# ------------------------------------------------------------------------------------- prepare


def prepare(event: Event, energy_threshold: float = ENERGY_THRESHOLD_MEV, augment: dict | None = None, rng=None) -> dict:
    """One event → model inputs (numpy), rows in GridSample order.

    Returns a dict with ``coord`` (N,3) f32 normalized (augmented if ``augment``), ``grid_coord`` (N,3)
    int64 (moved only by the ``lattice`` augmentation), ``voxel_coord`` (N,3) int64 raw voxel indices, ``energy`` (N,1) f32 log-scaled,
    ``feat`` (N,4) = [coord, energy],
    ``index`` (N,) int64 row of each point in the raw event (``pred_event[index] = pred_rows``),
    ``segment_motif``, ``segment_pid`` (0..5), ``instance_particle``, ``instance_interaction`` (N,)
    int64 (renumbered 0..K−1 among the points that survive the cut, −1 LED), ``offset`` = [N].
    """
    if augment and rng is None:
        raise ValueError("prepare: augment needs an explicit rng (np.random.Generator)")
    p = event.point
    keep = np.flatnonzero(p[:, 3] > _F32(energy_threshold)) if energy_threshold is not None else np.arange(len(p))
    coord = normalize_coord(p[keep, :3])
    order, grid_coord = grid_sample(coord, GRID_SIZE, rng if augment else None)
    index = keep[order]
    coord = coord[order]
    energy = log_transform(p[index, 3])[:, None]
    voxel_coord = p[index, :3].astype(np.int64)
    if augment:
        coord, grid_coord, voxel_coord, energy = augment_point(coord, grid_coord, voxel_coord, energy, augment, rng)
    cl = event.cluster
    row = np.repeat(np.arange(len(cl)), cl[:, 0])[index]
    pid = cl[row, 5].astype(np.int64)
    pid[pid < 0] = 5
    return {
        "coord": coord,
        "grid_coord": grid_coord,
        "voxel_coord": voxel_coord,
        "energy": energy,
        "feat": np.concatenate([coord, energy], axis=1),
        "index": index.astype(np.int64),
        "segment_motif": cl[row, 4].astype(np.int64),
        "segment_pid": pid,
        "instance_particle": renumber_ids(cl[row, 2]),
        "instance_interaction": renumber_ids(cl[row, 3]),
        "offset": np.array([len(index)], np.int64),
    }


def prepare_batch(events, energy_threshold: float = ENERGY_THRESHOLD_MEV, augment: dict | None = None, rngs=None,
                  packed=None):
    """Vectorized ``collate([prepare(e, ...) for e in events])`` (identical output, tested).

    The cut, normalization, GridSample, log transform, label gathers and instance renumbering run once over
    the concatenated batch, in column-major (3, N) layout (1-D gathers are several times faster than numpy
    row gathers); only the per-event sort and the augmentations loop over events. A batch where two points
    of an event share a grid cell (duplicate voxels) takes the per-event path. ``rngs``: one Generator per
    event when ``augment`` is given. ``packed`` = (points (N,8), clusters (M,6), points per event (B,),
    cluster rows per event (B,)[, points' first 4 columns as (4, N)]) of the same events already
    concatenated (see `pilarnet.check_chunk`).
    """
    import torch

    from .point import Point, collate

    B = len(events)
    if augment and (rngs is None or len(rngs) != B):
        raise ValueError("prepare_batch: augment needs one rng per event")
    cl, npts, nrows, P = _packed_tables(events, packed)
    cells = _grid_sample_batch(P, npts, energy_threshold)
    if cells is None:  # a shared cell: the reference path keeps one point of it (a random one when augmenting)
        return collate([prepare(ev, energy_threshold, augment, None if rngs is None else rngs[i]) for i, ev in enumerate(events)])
    index, counts, coord_cols, grid_coord = cells
    voxel_coord = np.stack([P[j].take(index) for j in range(3)], axis=1).astype(np.int64)
    out = _features_batch(coord_cols, log_transform(P[3].take(index)), counts, augment, rngs, grid_coord, voxel_coord)
    out.update(_labels_batch(cl, nrows, index))
    ends, p_end = np.cumsum(counts).tolist(), np.cumsum(npts).tolist()
    for b in np.flatnonzero(counts):  # rows of the batch -> rows of each event
        index[ends[b] - counts[b] : ends[b]] -= p_end[b] - npts[b]
    out["index"] = index
    batch = Point({k: torch.from_numpy(v) for k, v in out.items()})
    batch["offset"] = torch.from_numpy(np.cumsum(counts))
    batch["batch"] = torch.from_numpy(np.repeat(np.arange(B), counts))
    return batch


def _packed_tables(events, packed):
    """(clusters (M,6), points per event, rows per event, (4, N) x/y/z/E of all points) of a batch."""
    if packed is not None:
        pts, cl, npts, nrows = packed[:4]
        return cl, npts, nrows, (packed[4] if len(packed) > 4 else np.ascontiguousarray(pts[:, :4].T))
    B = len(events)
    npts = np.fromiter((len(e.point) for e in events), np.int64, B)
    nrows = np.fromiter((len(e.cluster) for e in events), np.int64, B)
    pts = np.concatenate([e.point for e in events]) if B else np.zeros((0, 8), _F32)
    cl = np.concatenate([e.cluster for e in events]) if B else np.zeros((0, 6), np.int64)
    return cl, npts, nrows, np.ascontiguousarray(pts[:, :4].T)


def _grid_sample_batch(P, npts, energy_threshold):
    """Energy cut, `normalize_coord` and `grid_sample` of every event of a batch at once (in place where
    possible: large temporaries cost page faults).

    Returns (kept rows of the concatenated points in each event's GridSample order, kept points per event,
    the 3 sorted normalized coordinate columns, ``grid_coord`` (K, 3) int64), or None when two points of one
    event share a grid cell."""
    thr = -np.inf if energy_threshold is None else _F32(energy_threshold)
    kidx = np.flatnonzero(P[3] > thr)
    k_off = np.searchsorted(kidx, np.concatenate([[0], np.cumsum(npts)])).tolist()
    counts = np.diff(k_off)
    coord = P[:3].take(kidx, axis=1)
    coord -= _F32(CENTER)
    coord /= _F32(SCALE)  # normalize_coord, elementwise identical
    g = np.divide(coord, _F32(GRID_SIZE))
    g = np.floor(g, out=g).astype(np.int32)  # voxels 0..767: |g| < 600 (the int64 cast is ~20x slower)
    nonempty = np.flatnonzero(counts).tolist()
    for b in nonempty:
        sl = g[:, k_off[b] : k_off[b + 1]]
        sl -= sl.min(axis=1, keepdims=True)
    key = np.full(g.shape[1], _FNV_OFFSET, dtype=np.uint64)
    for j in range(3):  # fnv_hash_vec on the columns (g >= 0: the uint64 values of the int64 grid)
        key *= _FNV_PRIME
        key ^= g[j].astype(np.uint64)
    order = np.empty(len(key), np.int64)
    for b in nonempty:
        a, e = k_off[b], k_off[b + 1]
        o, ks = _argsort_keys(key[a:e])
        if (ks[1:] == ks[:-1]).any():
            return None
        np.add(o, a, out=order[a:e])
    grid_coord = np.stack([c.take(order) for c in g], axis=1, dtype=np.int64)
    return kidx.take(order), counts, [c.take(order) for c in coord], grid_coord


def _argsort_keys(key):
    """(``np.argsort(key, kind="stable")``, the sorted keys) of uint64 hashes (np.argsort's order too, the
    keys being distinct when it is used), in two passes ~2-5x faster: a radix sort on the top 16 bits, then
    timsort of the keys in that order, which are then almost sorted."""
    first = np.argsort((key >> np.uint64(48)).astype(np.uint16), kind="stable")
    k1 = key.take(first)
    second = np.argsort(k1, kind="stable")
    return first.take(second), k1.take(second)


def _features_batch(cols, energy, counts, augment, rngs, grid_coord, voxel_coord):
    """``coord`` (K,3), ``energy`` (K,1), ``feat`` (K,4), ``grid_coord`` and ``voxel_coord`` (K,3) from the
    sorted coordinate columns, the log energies and the two integer grids; augmentations act per event on
    copies, as `prepare` does."""
    coord = np.stack(cols, axis=1)
    if not augment:
        return {"coord": coord, "energy": energy[:, None], "feat": np.stack(cols + [energy], axis=1),
                "grid_coord": grid_coord, "voxel_coord": voxel_coord}
    energy = energy[:, None].copy()
    k_off = np.concatenate([[0], np.cumsum(counts)])
    for b in np.flatnonzero(counts):
        sl = slice(k_off[b], k_off[b + 1])
        coord[sl], grid_coord[sl], voxel_coord[sl], energy[sl] = augment_point(
            coord[sl].copy(), grid_coord[sl], voxel_coord[sl], energy[sl].copy(), augment, rngs[b])
    return {"coord": coord, "energy": energy, "feat": np.concatenate([coord, energy], axis=1),
            "grid_coord": grid_coord, "voxel_coord": voxel_coord}


def _labels_batch(cl, nrows, index):
    """Per-point labels of a batch: the cluster row of each kept point (rows are in event order and their
    sizes sum to the point counts), motif, pid (−1 → 5), instances renumbered 0..K−1 per event among the
    rows that keep a point (`renumber_ids`), −1 for LED; gathered from one (4, rows) table."""
    row = np.repeat(np.arange(len(cl)), cl[:, 0]).take(index)
    present = np.zeros(len(cl), bool)
    present[row] = True
    row_event = np.repeat(np.arange(len(nrows)), nrows)
    table = np.empty((4, len(cl)), np.int64)
    table[0] = cl[:, 4]
    table[1] = cl[:, 5]
    table[1][table[1] < 0] = 5
    for j, col in ((2, 2), (3, 3)):
        ids = cl[:, col].astype(np.int64)
        use = np.flatnonzero(present & (ids >= 0))
        table[j] = -1
        if len(use):
            packed_ids = (row_event[use] << 40) + ids[use]  # raw ids < 2**40 assumed (Supera ids are small)
            uniq, inv = np.unique(packed_ids, return_inverse=True)
            inv = inv.reshape(-1)
            first = np.searchsorted(uniq >> 40, uniq >> 40, side="left")
            table[j][use] = inv - first[inv]
    names = ("segment_motif", "segment_pid", "instance_particle", "instance_interaction")
    return dict(zip(names, table.take(row, axis=1)))  # contiguous rows of one (4, K) array
