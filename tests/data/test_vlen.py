"""`larpanda.data.vlen`: byte-level vlen reads equal h5py's, and every layout it does not understand falls
back to h5py with the same training batches."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from larpanda.bench.loader import synthetic_event
from larpanda.data import PILArNetDataset, collate, pilarnet
from larpanda.data.vlen import RawVlen, VlenLayoutError, read_flat

NAMES = ("a", "b")


def _elements(rng, n):
    """Lengths from 0 (empty element) to 40,000 (a heap collection of its own) and many small ones (several
    objects in one collection)."""
    sizes = rng.choice([0, 1, 7, 300, 5000, 40_000], n, p=[0.1, 0.2, 0.3, 0.2, 0.15, 0.05])
    return [rng.normal(size=s).astype(np.float32) for s in sizes], [np.arange(s, dtype=np.int64) * 3 - 7 for s in sizes]


def _write(path, rng, n=60, **dataset_kw):
    floats, ints = _elements(rng, n)
    with h5py.File(path, "w", **({"userblock_size": 512} if dataset_kw.pop("userblock", False) else {})) as f:
        for name, data, dt in (("a", floats, np.float32), ("b", ints, np.int64)):
            d = f.create_dataset(name, (n,), dtype=h5py.vlen_dtype(dt), **dataset_kw)
            for i, x in enumerate(data):
                d[i] = x
    return floats, ints


def test_raw_reads_equal_h5py_across_files(tmp_path):
    rng = np.random.default_rng(0)
    data = [_write(tmp_path / f"{k}.h5", rng) for k in range(2)]
    files = [h5py.File(tmp_path / f"{k}.h5", "r") for k in range(2)]
    readers = [RawVlen.open(f, NAMES) for f in files]
    assert all(r is not None for r in readers)
    which, rows = rng.integers(0, 2, 200), rng.integers(0, 60, 200)  # repeats, any order, both files
    for j, name in enumerate(NAMES):
        flat, lengths = read_flat(readers, which, rows, name)
        want = [data[k][j][r] for k, r in zip(which, rows)]
        assert flat.dtype == want[0].dtype and lengths.tolist() == [len(x) for x in want]
        np.testing.assert_array_equal(flat, np.concatenate(want))
        assert flat.dtype == files[0][name][0].dtype
    for r, f in zip(readers, files):
        r.close()
        f.close()


@pytest.mark.parametrize("kw", [{"chunks": (8,)}, {"chunks": (8,), "compression": "gzip"}, {"userblock": True}])
def test_layouts_it_does_not_read_are_refused(tmp_path, kw):
    _write(tmp_path / "x.h5", np.random.default_rng(1), **kw)
    with h5py.File(tmp_path / "x.h5", "r") as f:
        assert RawVlen.open(f, NAMES) is None


def test_record_that_disagrees_with_its_heap_object_is_a_layout_error(tmp_path):
    floats, _ = _write(tmp_path / "x.h5", np.random.default_rng(2))
    with h5py.File(tmp_path / "x.h5", "r") as f:
        r = RawVlen.open(f, NAMES)
        i = next(k for k, x in enumerate(floats) if len(x) > 1)
        rec = r.records("a").copy()
        rec["length"][i] -= 1
        r._records["a"] = rec
        with pytest.raises(VlenLayoutError, match="not"):
            r.locate("a", [i])
        rec["length"][i] += 1
        rec["collection"][i] += 8  # no collection there
        r._objects.clear()
        with pytest.raises(VlenLayoutError, match="no global heap collection"):
            r.locate("a", [i])
        r.close()


def _assert_same(a, b):
    assert set(a) == set(b)
    for k in b:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def pilarnet_files(tmp_path_factory):
    """The same 5 events written as two contiguous files (larpanda's writer) and as one chunked copy."""
    root = tmp_path_factory.mktemp("vlen")
    rng = np.random.default_rng(3)
    evs = [synthetic_event(rng, n, n_particles=3) for n in (1100, 1500, 2000, 1300, 1800)]
    pilarnet.write_events(root / "plain" / "a_v2.h5", evs[:3])
    pilarnet.write_events(root / "plain" / "b_v2.h5", evs[3:])
    pilarnet.write_events(root / "tmp.h5", evs)
    chunked = root / "chunked" / "c_v2.h5"
    chunked.parent.mkdir()
    with h5py.File(root / "tmp.h5", "r") as src, h5py.File(chunked, "w") as dst:
        for name in ("point", "cluster", "cluster_extra"):
            dst.create_dataset(name, data=src[name][:], dtype=src[name].dtype, chunks=(2,))
    (root / "chunked" / "c_v2_points.npy").write_bytes((root / "tmp_points.npy").read_bytes())
    return root


def test_training_batches_are_the_same_on_every_path(pilarnet_files, monkeypatch):
    plain = PILArNetDataset(pilarnet_files / "plain")
    chunked = PILArNetDataset(pilarnet_files / "chunked")
    idx = [4, 0, 3, 1, 1]  # both files of `plain`, a repeat
    raw = plain.get_batch(idx)
    assert plain._file(0)[0]["_raw"] is not None and chunked._file(0)[0]["_raw"] is None
    _assert_same(raw, collate([plain[i] for i in idx]))  # per-event path: h5py slices
    via_h5py = chunked.get_batch(idx)
    for k in raw:
        if k not in ("file_index", "event_index"):  # one file here, two there
            assert torch.equal(raw[k], via_h5py[k]), k

    def broken(self, name, rows):
        raise VlenLayoutError("test")

    monkeypatch.setattr(RawVlen, "locate", broken)
    fresh = PILArNetDataset(pilarnet_files / "plain")
    _assert_same(fresh.get_batch(idx), raw)  # falls back to h5py for this batch ...
    assert fresh._file(0)[0]["_raw"] is None and fresh._file(1)[0]["_raw"] is None  # ... and from now on
