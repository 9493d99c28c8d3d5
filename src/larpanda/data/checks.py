"""The cheap sanity checks every reader runs on a chunk of PILArNet-M events (docs/design.md §4.4).

`check_chunk` takes the flat per-event arrays of one h5py read (`larpanda.data.pilarnet.read_raw`), `check_flat`
their concatenation (the training loader reads a batch straight into it, `larpanda.data.vlen`); the checks
run vectorized over the concatenated chunk, never looping over points: table lengths, cluster sizes,
energies, coordinates, class codes. Any violation raises `larpanda.errors.DataError` naming the file, the
event and the field. The writer invariants on top of these are `larpanda.data.pilarnet.validate`.
"""

from __future__ import annotations

import numpy as np

from ..constants import NUM_SEMANTIC_CLASSES
from ..errors import DataError
from .event import GRID_SIZE_VOXELS


def check_chunk(point, cluster, extra, version: int, path=None, first: int = 0, packed: bool = False):
    """Vectorized sanity checks of a chunk of flat per-event arrays (object arrays of one h5py read, or
    lists); `check_flat` of their concatenation. Returns what `check_flat` returns."""
    lengths = (_lengths(point), _lengths(cluster), None if extra is None else _lengths(extra))
    flat = (_concat(point, np.float32), _concat(cluster, np.int64),
            None if extra is None else _concat(extra, np.float32))
    return check_flat(flat, lengths, version, path, first, packed)


def check_flat(flat, lengths, version: int, path=None, first: int = 0, packed: bool = False):
    """Vectorized sanity checks of a chunk of events given as its concatenated tables ``flat`` = (point,
    cluster, cluster_extra or None), 1-D arrays as stored, and ``lengths`` = their elements per event.

    Returns (points list of (N,8) float32, clusters list of (M,6) int64, extras list or None), plus with
    ``packed=True`` a 4th item (all points (N,8), all clusters (M,6), points per event, rows per event,
    the (4, N) x, y, z, energy copy of the point checks).
    Raises DataError at the first violation: the checks run in the order below, each reports its lowest event.
    """
    ncol = 6 if version == 2 else 5
    extra = flat[2] if version == 2 else None
    elen = None if extra is None else lengths[2]
    npts, nrows = _check_lengths(lengths[0], lengths[1], elen, version, ncol, path, first)
    pts = np.asarray(flat[0], dtype=np.float32).reshape(-1, 8)
    cl = flat[1].reshape(-1, ncol)
    if not np.issubdtype(cl.dtype, np.integer):
        raise DataError(f"dtype {cl.dtype} is not integer", path, first, "cluster")
    cl = cl.astype(np.int64, copy=False)
    p_off, c_off = _check_cluster_sizes(cl, npts, nrows, path, first)
    P = _check_points(pts, p_off, path, first)
    cl = _check_cluster_codes(cl, c_off, version, path, first)
    points = np.split(pts, p_off[1:-1])
    clusters = np.split(cl, c_off[1:-1])
    extras = None
    if extra is not None:
        extras = np.split(np.asarray(extra, dtype=np.float32).reshape(-1, 5), c_off[1:-1])
    if packed:
        return points, clusters, extras, (pts, cl, npts, nrows, P)
    return points, clusters, extras


def _lengths(arrays) -> np.ndarray:
    return np.fromiter((len(x) for x in arrays), dtype=np.int64, count=len(arrays))


def _concat(arrays, empty_dtype) -> np.ndarray:
    """The per-event arrays as one 1-D array (of ``empty_dtype`` when there is none)."""
    return np.concatenate([np.asarray(x).reshape(-1) for x in arrays]) if len(arrays) else np.zeros(0, empty_dtype)


def _check_lengths(plen, clen, elen, version: int, ncol: int, path, first: int):
    """Table lengths of every event (elements per event of ``point``, ``cluster``, ``cluster_extra`` or None):
    ``point`` a multiple of 8, ``cluster`` a positive multiple of ``ncol``, ``cluster_extra`` 5 per cluster
    row. Returns (points per event, cluster rows per event)."""
    bad = np.flatnonzero(plen % 8)
    if bad.size:
        raise DataError(f"length {plen[bad[0]]} is not a multiple of 8", path, first + int(bad[0]), "point")
    bad = np.flatnonzero((clen % ncol) | (clen == 0))
    if bad.size:
        raise DataError(
            f"length {clen[bad[0]]} is not a positive multiple of {ncol} (v{version} cluster table)",
            path, first + int(bad[0]), "cluster",
        )
    npts, nrows = plen // 8, clen // ncol
    if elen is not None:
        bad = np.flatnonzero((elen % 5) | (elen // 5 != nrows))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"length {elen[i]} is not 5 x {nrows[i]} cluster rows", path, first + i, "cluster_extra"
            )
    return npts, nrows


def _raise_at_first(mask, off, table, what, path, first: int, field: str) -> None:
    """DataError for the first True row of ``mask`` (rows of ``table``, events delimited by ``off``):
    ``what(row within its event, the row)`` names the fault."""
    rows = np.flatnonzero(mask)
    if rows.size:
        ev = int(np.searchsorted(off, rows[0], side="right") - 1)
        raise DataError(what(rows[0] - off[ev], table[rows[0]]), path, first + ev, field)


def _check_cluster_sizes(cl, npts, nrows, path, first: int):
    """Cluster sizes: none negative, summing to each event's point count. Returns the point and
    cluster-row offsets of the events (length E+1)."""
    p_off = np.concatenate([[0], np.cumsum(npts)])
    c_off = np.concatenate([[0], np.cumsum(nrows)])
    sizes = np.add.reduceat(cl[:, 0], c_off[:-1]) if len(npts) else np.zeros(0, np.int64)
    neg = np.flatnonzero(cl[:, 0] < 0)
    bad = np.flatnonzero(sizes != npts)
    if neg.size:
        ev = int(np.searchsorted(c_off, neg[0], side="right") - 1)
        if not bad.size or ev <= bad[0]:
            raise DataError(f"negative cluster size {cl[neg[0], 0]} in row {neg[0] - c_off[ev]}", path, first + ev, "cluster")
    if bad.size:
        i = int(bad[0])
        raise DataError(f"cluster sizes sum to {sizes[i]} but the event has {npts[i]} points", path, first + i, "cluster")
    return p_off, c_off


def _check_points(pts, p_off, path, first: int) -> np.ndarray:
    """Energies finite and ≥ 0, coordinates integer voxels in 0..767. Returns the (4, N) contiguous copy of
    x, y, z, energy the checks ran on."""
    P = np.ascontiguousarray(pts[:, :4].T)  # (4, N): row-wise checks on strided columns are ~10x slower
    e = P[3]
    if not (e >= 0).all() or np.isinf(e).any():  # NaN fails e >= 0
        _raise_at_first(~np.isfinite(e), p_off, pts, lambda r, p: f"non-finite energy {p[3]} at point {r}", path, first, "point")
        _raise_at_first(e < 0, p_off, pts, lambda r, p: f"negative energy {p[3]} at point {r}", path, first, "point")
    xyz = P[:3]
    # NaN fails ==, Inf fails the range (docs/design.md §4.1: integer voxel indices 0..767)
    ok = (xyz >= 0) & (xyz <= GRID_SIZE_VOXELS - 1) & (xyz == np.floor(xyz))
    if not ok.all():
        _raise_at_first(~ok.all(0), p_off, pts,
                        lambda r, p: f"coordinates {p[:3].tolist()} at point {r} are not integer voxels in 0..767",
                        path, first, "point")
    return P


def _check_cluster_codes(cl, c_off, version: int, path, first: int) -> np.ndarray:
    """Semantic codes 0..4 and (v2) pid codes −1..4; a v1 table gets its pid column (−1). Returns the (M, 6)
    table."""
    _raise_at_first((cl[:, 4] < 0) | (cl[:, 4] >= NUM_SEMANTIC_CLASSES), c_off, cl,
                    lambda r, c: f"unknown semantic code {c[4]} in row {r} (expected 0..{NUM_SEMANTIC_CLASSES - 1})",
                    path, first, "cluster")
    if version == 2:
        _raise_at_first((cl[:, 5] < -1) | (cl[:, 5] > 4), c_off, cl,
                        lambda r, c: f"unknown pid {c[5]} in row {r} (expected -1..4)", path, first, "cluster")
        return cl
    # v1: pad pid with -1 (pimm fills PID with -1, i.e. class 5; docs/design.md §4.1)
    return np.concatenate([cl, np.full((len(cl), 1), -1, np.int64)], axis=1)
