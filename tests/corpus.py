"""Bad-input corpus for the data layer: each case is generated on the fly (no committed binaries).

``make_corpus(tmpdir)`` writes every case and returns a list of `Case`. ``behaviour`` is one of

* ``"error"``: `read_events`, ``larpanda info`` and `PILArNetDataset` raise / exit 2 with
  ``larpanda: error: FILE[ event K]: ...``; ``event`` is the event number named (None: file-level).
  With ``skip_bad_events`` an event-level error is skipped and counted; a file-level one drops the file.
* ``"ok"``: reads fine (documented handling in ``note``); ``invalid`` says whether `validate` rejects it.

docs/reliability.md ("Bad input corpus") lists the same table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from larpanda.bench.loader import synthetic_event
from larpanda.data.pilarnet import points_path

N_EVENTS = 3
BAD = 1  # the event that is corrupted in event-level cases


@dataclass
class Case:
    name: str
    path: Path
    behaviour: str  # "error" | "ok"
    event: int | None = None  # event named in the error (None for file-level errors)
    field: str | None = None  # field named in the error
    invalid: bool = True  # validate() rejects it
    note: str = ""
    extra: dict = dataclasses.field(default_factory=dict)


def base_tables(n_points: int = 1100, seed: int = 0):
    """Flat per-event arrays of N_EVENTS valid events (v2)."""
    rng = np.random.default_rng(seed)
    evs = [synthetic_event(rng, n_points, n_particles=4) for _ in range(N_EVENTS)]
    pts = [e.point.reshape(-1).copy() for e in evs]
    cls = [e.cluster.reshape(-1).copy() for e in evs]
    exs = [e.cluster_extra.reshape(-1).copy() for e in evs]
    return pts, cls, exs


def write_raw(path, point=None, cluster=None, extra=None, point_dtype=np.float32, cluster_dtype=np.int64,
              extra_dtype=np.float32, npy=True, npy_counts=None):
    """Write arbitrary (possibly invalid) tables with h5py, element by element."""
    path = Path(path)
    with h5py.File(path, "w") as f:
        for name, data, dt in (("point", point, point_dtype), ("cluster", cluster, cluster_dtype),
                               ("cluster_extra", extra, extra_dtype)):
            if data is None:
                continue
            ds = f.create_dataset(name, (len(data),), dtype=h5py.vlen_dtype(dt))
            for i, x in enumerate(data):
                ds[i] = np.asarray(x, dtype=dt)
    if npy:
        counts = npy_counts if npy_counts is not None else np.array([len(p) // 8 for p in (point or [])], np.int64)
        np.save(points_path(path), np.asarray(counts))
    return path


def make_corpus(tmp) -> list[Case]:
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def case(name, behaviour, mutate=None, event=BAD, field=None, invalid=True, note="", **kw):
        pts, cls, exs = base_tables()
        if mutate is not None:
            out = mutate(pts, cls, exs)
            if out is not None:
                pts, cls, exs = out
        p = write_raw(tmp / f"{name}.h5", pts, cls, exs, **kw)
        cases.append(Case(name, p, behaviour, event if behaviour == "error" else None, field, invalid, note))

    # ------------------------------------------------------------------ file-level
    good = write_raw(tmp / "good.h5", *base_tables())
    data = good.read_bytes()
    (tmp / "truncated.h5").write_bytes(data[: len(data) // 2])
    cases.append(Case("truncated", tmp / "truncated.h5", "error", None, None, note="half of a valid file"))
    (tmp / "not_hdf5.h5").write_text("this is not an HDF5 file\n")
    cases.append(Case("not_hdf5", tmp / "not_hdf5.h5", "error", note="text file with an .h5 name"))
    (tmp / "empty_file.h5").write_bytes(b"")
    cases.append(Case("empty_file", tmp / "empty_file.h5", "error", note="0 bytes"))
    cases.append(Case("missing_file", tmp / "does_not_exist.h5", "error", note="path does not exist"))

    pts, cls, exs = base_tables()
    cases.append(Case("missing_point", write_raw(tmp / "missing_point.h5", None, cls, exs, npy=False), "error",
                      field="point"))
    cases.append(Case("missing_cluster", write_raw(tmp / "missing_cluster.h5", pts, None, exs), "error",
                      field="cluster"))
    cases.append(Case("point_int_dtype", write_raw(tmp / "point_int_dtype.h5", pts, cls, exs, point_dtype=np.int32),
                      "error", field="point", note="point must be float"))
    cases.append(Case("cluster_float_dtype",
                      write_raw(tmp / "cluster_float_dtype.h5", pts, cls, exs, cluster_dtype=np.float32),
                      "error", field="cluster", note="sizes must be integers (np.repeat)"))
    p = tmp / "point_not_vlen.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("point", data=np.zeros((N_EVENTS, 8), np.float32))
        f.create_dataset("cluster", (N_EVENTS,), dtype=h5py.vlen_dtype(np.int64))
    cases.append(Case("point_not_vlen", p, "error", field="point", note="fixed-shape dataset"))
    cases.append(Case("length_mismatch", write_raw(tmp / "length_mismatch.h5", pts, cls[:2], exs[:2]), "error",
                      field="cluster", note="cluster has fewer events than point"))

    # ------------------------------------------------------------------ versions
    def to_v1(pts, cls, exs):
        cls = [c.reshape(-1, 6)[:, :5].reshape(-1) for c in cls]
        return pts, cls, None

    case("v1_valid", "ok", to_v1, invalid=False, note="v1: 5-column cluster, no cluster_extra; pid read as 5 (none)")

    def v1_cluster_in_v2(pts, cls, exs):
        cls = [c.reshape(-1, 6)[:, :5].reshape(-1) for c in cls]
        return pts, cls, exs

    case("v1_cluster_with_extra", "error", v1_cluster_in_v2, event=0, field="cluster",
         note="cluster_extra present (v2) but 5-column cluster rows")

    def v2_without_extra(pts, cls, exs):
        return pts, cls, None

    case("v2_without_extra", "error", v2_without_extra, event=0, field="cluster",
         note="6-column cluster read as v1 (no cluster_extra): lengths/sizes do not fit 5 columns")

    # ------------------------------------------------------------------ event-level
    def led_only(n, seed=5):
        def m(pts, cls, exs):
            rng = np.random.default_rng(seed)
            vox = rng.choice(768 ** 3, n, replace=False)
            p = np.zeros((n, 8), np.float32)
            p[:, 0], p[:, 1], p[:, 2] = vox // 768 ** 2, (vox // 768) % 768, vox % 768
            p[:, 3] = p[:, 4] = 0.5
            pts[BAD] = p.reshape(-1)
            cls[BAD] = np.array([n, -1, -1, -1, 4, -1], np.int64)
            exs[BAD] = -np.ones(5, np.float32)
        return m

    case("empty_event", "ok", led_only(0), invalid=False,
         note="0 points: below min_points (never indexed); with min_points=0 the next event is used")
    case("one_point_event", "ok", led_only(1), invalid=False, note="1 point: below min_points; loads with min_points=0")

    def set_point(col, value, row=5):
        def m(pts, cls, exs):
            p = pts[BAD].reshape(-1, 8)
            p[row, col] = value
            if col == 3:
                p[row, 4] = value
        return m

    case("nan_energy", "error", set_point(3, np.nan), field="point")
    case("inf_energy", "error", set_point(3, np.inf), field="point")
    case("negative_energy", "error", set_point(3, -0.5), field="point")
    case("coord_768", "error", set_point(0, 768.0), field="point", note="voxel index outside 0..767")
    case("coord_negative", "error", set_point(1, -1.0), field="point")
    case("coord_fractional", "error", set_point(2, 12.5), field="point", note="voxel indices are integers")
    case("coord_nan", "error", set_point(2, np.nan), field="point")

    def duplicate(pts, cls, exs):
        p = pts[BAD].reshape(-1, 8)
        p[7, :3] = p[6, :3]

    case("duplicate_voxel", "ok", duplicate, invalid=True,
         note="read fine; GridSample keeps one point per cell (as the reference); validate rejects it")

    def sizes_not_summing(pts, cls, exs):
        c = cls[BAD].reshape(-1, 6)
        c[1, 0] += 3

    case("sizes_not_summing", "error", sizes_not_summing, field="cluster")

    def negative_size(pts, cls, exs):
        c = cls[BAD].reshape(-1, 6)
        c[1, 0] = -c[1, 0]
        c[2, 0] += 2 * -c[1, 0]

    case("negative_size", "error", negative_size, field="cluster")

    def point_len(pts, cls, exs):
        pts[BAD] = pts[BAD][:-3]

    case("point_length_not_x8", "error", point_len, field="point")

    def cluster_len(pts, cls, exs):
        cls[BAD] = cls[BAD][:-1]

    case("cluster_length_not_x6", "error", cluster_len, field="cluster")

    def extra_len(pts, cls, exs):
        exs[BAD] = exs[BAD][:-5]

    case("cluster_extra_rows", "error", extra_len, field="cluster_extra")

    def semantic(pts, cls, exs):
        cls[BAD].reshape(-1, 6)[1, 4] = 7

    case("unknown_semantic", "error", semantic, field="cluster")

    def pid(pts, cls, exs):
        cls[BAD].reshape(-1, 6)[1, 5] = 9

    case("unknown_pid", "error", pid, field="cluster")

    def no_led_row(pts, cls, exs):
        c = cls[BAD].reshape(-1, 6)
        c[0, 1:4] = 0

    case("row0_not_led", "ok", no_led_row, invalid=True,
         note="labels are read as written; validate rejects (row 0 must be the LED row)")

    def bad_npy(pts, cls, exs):
        return None

    case("points_npy_wrong_length", "error", bad_npy, event=None, npy_counts=np.array([5], np.int64),
         note="Dataset and validate reject the cache; read_events ignores it")
    case("points_npy_missing", "ok", bad_npy, invalid=True, npy=False,
         note="Dataset counts points on the fly (and writes the cache); validate reports it missing")

    huge = led_only(200_000, seed=7)

    case("huge_event_200k", "ok", huge, invalid=False,
         note="200k voxels: read + cut + transforms work; inference is refused or run under the memory guard "
              "(larpanda.io.memory, tests/io/test_memory.py)")
    return cases
