"""PILArNet-M HDF5 files: read (v2 and v1), write (v2), validate.

Format (docs/design.md §4.1): three root datasets of length n_events, each element an HDF5 vlen 1-D array:

* ``point``         float32, reshaped (N, 8): x, y, z (voxel index 0..767), energy (MeV), dE, time, n_e, dx
* ``cluster``       int, reshaped (M, 6) in v2 (size, cluster_id, group_id, interaction_id, semantic, pid)
                    or (M, 5) in v1 (no pid)
* ``cluster_extra`` float32, reshaped (M, 5) (v2 only): mass (MeV), |p| (GeV/c), vertex x, y, z

plus a sibling ``<stem>_points.npy`` (1-D int64, raw points per event, docs/design.md §4.3).

Readers never loop over points: each chunk of events is read with one h5py slice per dataset, and the
cheap sanity checks (lengths, size sums, energy, coordinates, class codes; `larpanda.data.checks`) run on
the concatenated chunk.
Any violation raises `larpanda.errors.DataError` naming the file, the event and the field; wrong labels
are never returned silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..constants import LED_CLASS
from ..errors import DataError
from .checks import check_chunk
from .event import GRID_SIZE_VOXELS, Event

READ_CHUNK = 1024  # events per h5py slice in read_events
_LED_ROW_V2 = np.array([-1, -1, -1, LED_CLASS, -1])  # cluster row 0 columns 1..5 (the LED row, docs/design.md §4.2)


# --------------------------------------------------------------------------------------------- paths


def points_path(path) -> Path:
    """Sibling ``<stem>_points.npy`` of an ``.h5`` file (docs/design.md §4.3: only the suffix is replaced)."""
    path = Path(path)
    stem = path.name[:-3] if path.name.endswith(".h5") else path.stem
    return path.with_name(stem + "_points.npy")


def open_h5(path):
    """Open a PILArNet-M file read-only the way the reference readers do (``libver="latest", swmr=True``).

    Raises DataError for a missing file or a file that is not HDF5.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise DataError("no such file", path=path)
    if path.is_dir():
        raise DataError("is a directory, expected an .h5 file", path=path)
    if not h5py.is_hdf5(path):
        raise DataError("not an HDF5 file (bad signature or truncated)", path=path)
    try:
        return h5py.File(path, "r", libver="latest", swmr=True)
    except OSError as exc:  # truncated or corrupted beyond the superblock
        raise DataError(f"cannot open HDF5 file ({' '.join(str(exc).split())})", path=path) from None


def file_version(f, path=None) -> int:
    """2 if ``cluster_extra`` is present, else 1. Raises DataError when ``point``/``cluster`` is missing,
    a dataset is not a 1-D vlen dataset, or the lengths differ."""
    for name in ("point", "cluster"):
        if name not in f:
            raise DataError("missing dataset", path=path, field=name)
    names = ("point", "cluster", "cluster_extra") if "cluster_extra" in f else ("point", "cluster")
    n = None
    for name in names:
        ds = f[name]
        if not hasattr(ds, "shape") or len(ds.shape) != 1 or ds.dtype != object:
            raise DataError(
                f"expected a 1-D dataset of variable-length arrays, got shape {getattr(ds, 'shape', None)} "
                f"dtype {getattr(ds, 'dtype', None)}",
                path=path,
                field=name,
            )
        base = ds.dtype.metadata.get("vlen") if ds.dtype.metadata else None
        want = np.integer if name == "cluster" else np.floating
        if base is None or not np.issubdtype(np.dtype(base), want):
            raise DataError(f"vlen element type {base} is not {want.__name__}", path=path, field=name)
        if n is None:
            n = ds.shape[0]
        elif ds.shape[0] != n:
            raise DataError(f"length {ds.shape[0]} differs from point length {n}", path=path, field=name)
    return 2 if "cluster_extra" in f else 1


def num_events(path) -> int:
    """Number of events in a file (from the ``point`` dataset length)."""
    with open_h5(path) as f:
        file_version(f, path)
        return int(f["point"].shape[0])


def read_points_index(path, build: bool = True) -> np.ndarray:
    """Raw point count per event from ``<stem>_points.npy`` (1-D int64).

    If the cache is missing (or ``build`` is False and it is missing) it is counted from the ``point``
    lengths; with ``build=True`` the counted cache is written atomically beside the file when possible.
    A cache whose length differs from the file's event count raises DataError.
    """
    path = Path(path)
    npy = points_path(path)
    if npy.exists():
        try:
            counts = np.load(npy, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is a data error
            raise DataError(f"unreadable points index ({exc.__class__.__name__})", path=npy) from None
        counts = np.asarray(counts).reshape(-1)  # PoLAr-MAE caches may be 0-d for 1-event files
        if not np.issubdtype(counts.dtype, np.integer):
            raise DataError(f"points index has dtype {counts.dtype}, expected integer", path=npy)
        n = num_events(path)
        if counts.shape[0] != n:
            raise DataError(f"points index has {counts.shape[0]} entries but the file has {n} events", path=npy)
        return counts.astype(np.int64)
    with open_h5(path) as f:
        file_version(f, path)
        ds = f["point"]
        counts = np.empty(ds.shape[0], dtype=np.int64)
        for a in range(0, ds.shape[0], READ_CHUNK):
            chunk = ds[a : a + READ_CHUNK]
            counts[a : a + len(chunk)] = [len(x) // 8 for x in chunk]
    if build:
        try:
            _write_npy(npy, counts)
        except OSError:
            pass  # read-only data directory: counting again next time is fine
    return counts


def _write_npy(path, arr) -> None:
    from ..atomic import atomic_path

    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(arr))


# --------------------------------------------------------------------------------------------- read


def read_raw(f, start: int, stop: int, version: int, read_extra: bool = True):
    """One h5py slice per dataset: object arrays of flat per-event arrays (no checks).

    ``f`` is an open h5py File, or a dict of its datasets (caching the lookups saves ~30 µs per read).
    ``read_extra=False`` skips ``cluster_extra`` (returns None; the per-point labels do not use it)."""
    try:
        point = f["point"][start:stop]
        cluster = f["cluster"][start:stop]
        extra = f["cluster_extra"][start:stop] if version == 2 and read_extra else None
    except (OSError, RuntimeError, ValueError, TypeError) as exc:  # truncated / corrupted storage
        where = f["point"].file.filename if "point" in f else None
        raise DataError(
            f"cannot read events {start}..{stop - 1} ({' '.join(str(exc).split())[:200]}); truncated or corrupted file?",
            path=where, event=start,
        ) from None
    return point, cluster, extra


def read_events(path, start: int = 0, stop: int | None = None, version: int | None = None) -> list[Event]:
    """Read events ``start..stop-1`` of a v2 or v1 file as `Event` objects (raw point order).

    Args:
        path: the ``.h5`` file.
        start, stop: event range (Python slice semantics, negative values not allowed).
        version: force 1 or 2; by default v2 if ``cluster_extra`` exists, else v1.
    Raises:
        DataError: missing/non-HDF5 file, missing datasets, bad table lengths, sizes not summing to the
            point count, non-finite or negative energy, coordinates outside 0..767, unknown codes.
    """
    path = Path(path)
    with open_h5(path) as f:
        ver = file_version(f, path) if version is None else version
        if version is not None:
            file_version(f, path)
        n = f["point"].shape[0]
        stop = n if stop is None else min(int(stop), n)
        start = int(start)
        if start < 0 or start > n:
            raise DataError(f"start {start} outside 0..{n}", path=path)
        events = []
        for a in range(start, stop, READ_CHUNK):
            b = min(a + READ_CHUNK, stop)
            point, cluster, extra = read_raw(f, a, b, ver)
            pts, cls, exs = check_chunk(point, cluster, extra, ver, path, a)
            for k in range(b - a):
                events.append(Event(pts[k], cls[k], None if exs is None else exs[k], source=(str(path), a + k)))
    return events


# --------------------------------------------------------------------------------------------- write


def write_events(path, events, attrs: dict | None = None) -> None:
    """Write events as a PILArNet-M v2 file plus ``<stem>_points.npy`` (docs/design.md §4.4), atomically.

    ``point`` is written as vlen float32, ``cluster`` as vlen int64, ``cluster_extra`` as vlen float32.
    Events without ``cluster_extra`` (read from v1) get −1 sentinels in row 0 and zeros elsewhere.
    Both files are first written to temporary names and renamed only when complete.
    """
    import h5py

    from ..atomic import atomic_path

    path = Path(path)
    n = len(events)
    pts = np.empty(n, dtype=object)
    cls = np.empty(n, dtype=object)
    exs = np.empty(n, dtype=object)
    counts = np.empty(n, dtype=np.int64)
    for i, ev in enumerate(events):
        p = np.ascontiguousarray(ev.point, dtype=np.float32).reshape(-1, 8)
        c = np.ascontiguousarray(ev.cluster, dtype=np.int64)
        if c.ndim != 2 or c.shape[1] not in (5, 6):
            raise DataError(f"cluster table has shape {c.shape}, expected (M, 6)", path=path, event=i, field="cluster")
        if c.shape[1] == 5:
            c = np.concatenate([c, np.full((len(c), 1), -1, np.int64)], axis=1)
        if ev.cluster_extra is None:
            x = np.zeros((len(c), 5), np.float32)
            x[0] = -1.0
        else:
            x = np.ascontiguousarray(ev.cluster_extra, dtype=np.float32).reshape(-1, 5)
        pts[i], cls[i], exs[i] = p.reshape(-1), c.reshape(-1), x.reshape(-1)
        counts[i] = len(p)
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            for name, data, dt in (("point", pts, np.float32), ("cluster", cls, np.int64), ("cluster_extra", exs, np.float32)):
                ds = f.create_dataset(name, (n,), dtype=h5py.vlen_dtype(dt))
                # one slice write per block; h5py would broadcast a block of equal-length arrays
                # as a 2-D array, so such blocks are written element by element
                for a in range(0, n, READ_CHUNK):
                    block = data[a : a + READ_CHUNK]
                    if len({len(x) for x in block}) > 1:
                        ds[a : a + len(block)] = block
                    else:
                        for k, x in enumerate(block):
                            ds[a + k] = x
            f.attrs["format"] = "PILArNet-M v2"
            f.attrs["writer"] = "larpanda"
            for k, v in (attrs or {}).items():
                f.attrs[k] = v
        _write_npy(points_path(path), counts)


def event_from_labels(
    voxel,
    energy,
    segment_motif,
    segment_pid,
    instance_particle,
    instance_interaction,
    extra_columns=None,
) -> Event:
    """Build a valid v2 `Event` from per-point labels (e.g. the fixture npz or a simulator).

    Args:
        voxel: (N, 3) integer voxel indices in 0..767.
        energy: (N,) MeV.
        segment_motif: (N,) 0..4; segment_pid: (N,) 0..5 or −1 (5 and −1 both mean "none").
        instance_particle, instance_interaction: (N,) ids, −1 for LED.
        extra_columns: optional (N, 3) float columns 5..7 (time ns, n_electrons, dx mm); zeros otherwise.

    Every LED point (motif 4) goes to row 0 ``[n_led, -1, -1, -1, 4, -1]``; the other points get one
    cluster row per (particle, interaction, motif, pid), sorted by those keys; points are reordered to be
    contiguous per row (stable). Cluster ids are 0..M−2; ``group_id`` is the cluster_id of the group's
    first row (so reading back renumbers to the same particle instances when the input ids are
    0..K−1 in the same order). Column 4 (dE) equals column 3 (docs/design.md §4.4).
    """
    voxel = np.asarray(voxel).reshape(-1, 3)
    n = len(voxel)
    energy = np.asarray(energy, np.float32).reshape(n)
    motif = np.asarray(segment_motif, np.int64).reshape(n)
    pid = np.asarray(segment_pid, np.int64).reshape(n).copy()
    pid[pid == 5] = -1
    part = np.asarray(instance_particle, np.int64).reshape(n)
    inter = np.asarray(instance_interaction, np.int64).reshape(n)
    led = motif == LED_CLASS
    if np.any(led & ((part >= 0) | (inter >= 0))):
        raise DataError("LED points (motif 4) must have instance −1", field="instance_particle")
    if np.any(~led & ((part < 0) | (inter < 0))):
        raise DataError("non-LED points need instance ids ≥ 0", field="instance_particle")
    keys = np.stack([part, inter, motif, pid], 1)
    thing = np.flatnonzero(~led)
    uniq, inv = np.unique(keys[thing], axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    row = np.zeros(n, np.int64)
    row[thing] = inv + 1
    order = np.argsort(row, kind="stable")
    sizes = np.bincount(row, minlength=len(uniq) + 1)
    m = len(uniq) + 1
    cluster = np.empty((m, 6), np.int64)
    cluster[0] = [sizes[0], -1, -1, -1, 4, -1]
    cluster[1:, 0] = sizes[1:]
    cluster[1:, 1] = np.arange(m - 1)
    # group id = cluster id of the first row of that particle (rows are sorted by particle first)
    _, first = np.unique(uniq[:, 0], return_index=True)
    grp_of = np.searchsorted(np.unique(uniq[:, 0]), uniq[:, 0])
    cluster[1:, 2] = first[grp_of]
    cluster[1:, 3] = uniq[:, 1]
    cluster[1:, 4] = uniq[:, 2]
    cluster[1:, 5] = uniq[:, 3]
    point = np.zeros((n, 8), np.float32)
    point[:, :3] = voxel
    point[:, 3] = energy
    point[:, 4] = energy
    if extra_columns is not None:
        point[:, 5:8] = np.asarray(extra_columns, np.float32).reshape(n, 3)
    extra = np.zeros((m, 5), np.float32)
    extra[0] = -1.0
    return Event(point[order], cluster, extra)


# --------------------------------------------------------------------------------------------- validate


def validate(path, check_points_index: bool = True) -> dict:
    """Check every writer invariant of docs/design.md §4.4; raise DataError at the first violation.

    Checked, per event: table lengths (point % 8, cluster % 6 or 5 for v1, cluster_extra % 5 with as many
    rows as cluster), sizes ≥ 0 summing to the point count, finite energy ≥ 0 (real data are > 0; zero
    is tolerated), integer coordinates in 0..767, semantic 0..4, pid −1..4, row 0 = LED
    ``[n, -1, -1, -1, 4, -1]`` (cluster_extra −1), rows ≥ 1: size > 0, cluster_id ≥ 0 and unique,
    group_id an existing cluster_id, interaction_id ≥ 0, semantic 0..3, pid 0..4; no duplicate voxel
    within an event; dE (col 4) == energy (col 3) in v2; and ``_points.npy`` (1-D integer, one entry
    per event, equal to the raw counts). Returns a small summary dict.
    """
    path = Path(path)
    with open_h5(path) as f:
        ver = file_version(f, path)
        n = f["point"].shape[0]
        counts = np.empty(n, np.int64)
        for a in range(0, n, READ_CHUNK):
            b = min(a + READ_CHUNK, n)
            point, cluster, extra = read_raw(f, a, b, ver)
            pts, cls, exs = check_chunk(point, cluster, extra, ver, path, a)
            for k in range(b - a):
                _validate_event(pts[k], cls[k], None if exs is None else exs[k], ver, path, a + k)
                counts[a + k] = len(pts[k])
    if check_points_index:
        npy = points_path(path)
        if not npy.exists():
            raise DataError("missing points index (write it with larpanda.data.pilarnet.write_events)", path=npy)
        idx = np.load(npy, allow_pickle=False)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise DataError(f"points index must be a 1-D integer array, got shape {idx.shape} dtype {idx.dtype}", path=npy)
        if idx.shape[0] != n:
            raise DataError(f"points index has {idx.shape[0]} entries but the file has {n} events", path=npy)
        bad = np.flatnonzero(idx != counts)
        if bad.size:
            i = int(bad[0])
            raise DataError(f"points index says {idx[i]} points but the event has {counts[i]}", path=npy, event=i)
    return {"path": str(path), "version": ver, "events": int(n), "points": int(counts.sum())}


def _validate_event(p, c, x, ver, path, ev):
    def fail(what, field="cluster"):
        raise DataError(what, path=path, event=ev, field=field)

    if not np.array_equal(c[0, 1:], _LED_ROW_V2):
        fail(f"row 0 is {c[0].tolist()}, expected the LED row [n, -1, -1, -1, 4, -1]")
    if x is not None and not np.all(x[0] == -1):
        fail(f"row 0 is {x[0].tolist()}, expected [-1]*5", "cluster_extra")
    r = c[1:]
    if len(r):
        if np.any(r[:, 0] <= 0):
            fail(f"row {1 + int(np.argmax(r[:, 0] <= 0))} has size ≤ 0 (drop empty particles)")
        if np.any(r[:, 1] < 0):
            fail(f"row {1 + int(np.argmax(r[:, 1] < 0))} has a negative cluster_id")
        if np.unique(r[:, 1]).size != len(r):
            fail("cluster_id values are not unique")
        if not np.all(np.isin(r[:, 2], r[:, 1])):
            fail(f"row {1 + int(np.argmax(~np.isin(r[:, 2], r[:, 1])))} has a group_id that is no cluster_id")
        if np.any(r[:, 3] < 0):
            fail(f"row {1 + int(np.argmax(r[:, 3] < 0))} has a negative interaction_id")
        if np.any(r[:, 4] > 3):
            fail(f"row {1 + int(np.argmax(r[:, 4] > 3))} has semantic 4 (LED belongs in row 0 only)")
        if ver == 2 and np.any(r[:, 5] < 0):
            fail(f"row {1 + int(np.argmax(r[:, 5] < 0))} has pid −1 outside the LED row")
    if len(p):
        v = p[:, :3].astype(np.int64)
        key = (v[:, 0] * GRID_SIZE_VOXELS + v[:, 1]) * GRID_SIZE_VOXELS + v[:, 2]
        s = np.sort(key)
        dup = np.flatnonzero(s[1:] == s[:-1])
        if dup.size:
            k = int(s[dup[0]])
            xyz = [k // GRID_SIZE_VOXELS**2, (k // GRID_SIZE_VOXELS) % GRID_SIZE_VOXELS, k % GRID_SIZE_VOXELS]
            fail(f"duplicate voxel {xyz}", "point")
        if ver == 2 and not np.array_equal(p[:, 4], p[:, 3]):
            fail(f"dE (column 4) differs from energy (column 3) at point {int(np.argmax(p[:, 4] != p[:, 3]))}", "point")


def as_path_list(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [Path(p) for p in paths]
