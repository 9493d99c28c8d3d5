"""PILArNet-M read/write/validate: fixture round trip, v1 reading, points index, error messages."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from larpanda.data import pilarnet
from larpanda.data.event import Event
from larpanda.errors import DataError


@pytest.fixture(scope="module")
def fixture_npz(fixtures_dir):
    z = np.load(fixtures_dir / "pilarnet_m_test_event0_recon.npz")
    return {k: z[k] for k in z.files}


def _event(z):
    return pilarnet.event_from_labels(
        z["voxel"], z["energy"], z["segment_motif"], z["segment_pid"], z["instance_particle"], z["instance_interaction"]
    )


def test_fixture_round_trip(tmp_path, fixture_npz):
    z = fixture_npz
    ev = _event(z)
    path = tmp_path / "test" / "generic_v2_1_v2.h5"
    pilarnet.write_events(path, [ev, ev])
    summary = pilarnet.validate(path)
    assert summary == {"path": str(path), "version": 2, "events": 2, "points": 2 * 1175}
    assert pilarnet.num_events(path) == 2
    np.testing.assert_array_equal(pilarnet.read_points_index(path), [1175, 1175])
    with h5py.File(path, "r") as f:  # on-disk types of spec-data §1.10
        assert f["point"].dtype.metadata["vlen"] == np.float32
        assert f["cluster"].dtype.metadata["vlen"] == np.int64
        assert f["cluster_extra"].dtype.metadata["vlen"] == np.float32
    back = pilarnet.read_events(path)
    assert len(back) == 2 and back[1].source == (str(path), 1)
    r = back[0]
    np.testing.assert_array_equal(r.point, ev.point)
    np.testing.assert_array_equal(r.cluster, ev.cluster)
    np.testing.assert_array_equal(r.cluster_extra, ev.cluster_extra)
    # labels equal the npz, point for point (event_from_labels reorders rows; match by voxel)
    key = lambda v: (v[:, 0].astype(np.int64) * 768 + v[:, 1]) * 768 + v[:, 2]  # noqa: E731
    o_raw, o_back = np.argsort(key(z["voxel"])), np.argsort(key(r.voxel))
    np.testing.assert_array_equal(r.voxel[o_back], z["voxel"][o_raw])
    np.testing.assert_array_equal(r.energy[o_back], z["energy"][o_raw])
    for name in ("segment_motif", "segment_pid", "instance_particle", "instance_interaction"):
        np.testing.assert_array_equal(getattr(r, name)[o_back], z[name][o_raw].astype(np.int64), err_msg=name)
    assert r.num_particles == 10 and r.num_interactions == 4
    assert r.cluster[0].tolist() == [int((z["segment_motif"] == 4).sum()), -1, -1, -1, 4, -1]


def test_normalized_coords_and_log_energy_by_hand(fixture_npz):
    from larpanda.data.transforms import log_transform, normalize_coord

    v, e = fixture_npz["voxel"][:50].astype(np.float64), fixture_npz["energy"][:50].astype(np.float64)
    scale = 768 * math.sqrt(3) / 2
    assert abs(scale - 665.1075) < 1e-4
    np.testing.assert_allclose(normalize_coord(v), (v - 384) / scale, rtol=0, atol=1e-7)
    want = 2 * (np.log10(e + 0.01) - math.log10(0.01)) / (math.log10(20.01) - math.log10(0.01)) - 1
    np.testing.assert_allclose(log_transform(e), want, rtol=0, atol=2e-7)
    assert abs(log_transform(np.array([0.0]))[0] + 1) < 1e-6 and abs(log_transform(np.array([20.0]))[0] - 1) < 1e-6


def test_v1_file_reads_with_pid_none(tmp_path, fixture_npz):
    ev = _event(fixture_npz)
    path = tmp_path / "v1.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("point", (1,), dtype=h5py.vlen_dtype(np.float32))[0] = ev.point.reshape(-1)
        f.create_dataset("cluster", (1,), dtype=h5py.vlen_dtype(np.int32))[0] = ev.cluster[:, :5].reshape(-1)
    r = pilarnet.read_events(path)[0]
    assert r.cluster_extra is None and r.cluster.shape == (len(ev.cluster), 6)
    assert (r.cluster[:, 5] == -1).all() and (r.segment_pid == 5).all()
    np.testing.assert_array_equal(r.segment_motif, ev.segment_motif)
    np.testing.assert_array_equal(r.instance_particle, ev.instance_particle)
    # v1 events are written back as v2 with sentinel cluster_extra
    pilarnet.write_events(tmp_path / "v2.h5", [r])
    r2 = pilarnet.read_events(tmp_path / "v2.h5")[0]
    assert r2.cluster_extra[0].tolist() == [-1] * 5 and (r2.cluster_extra[1:] == 0).all()


def test_points_index_built_when_missing(tmp_path, fixture_npz):
    path = tmp_path / "a.h5"
    pilarnet.write_events(path, [_event(fixture_npz)])
    npy = pilarnet.points_path(path)
    assert npy.name == "a_points.npy"
    npy.unlink()
    np.testing.assert_array_equal(pilarnet.read_points_index(path), [1175])
    assert npy.exists() and np.load(npy).dtype == np.int64


def test_chunked_read_matches_single_reads(tmp_path, monkeypatch):
    from larpanda.bench.loader import synthetic_event

    rng = np.random.default_rng(3)
    evs = [synthetic_event(rng, int(n)) for n in rng.integers(50, 400, 7)]
    path = tmp_path / "c.h5"
    pilarnet.write_events(path, evs)
    monkeypatch.setattr(pilarnet, "READ_CHUNK", 3)  # several chunks, last one partial
    got = pilarnet.read_events(path, 1, 7)
    assert [g.source[1] for g in got] == list(range(1, 7))
    for g, e in zip(got, evs[1:]):
        np.testing.assert_array_equal(g.point, e.point)
        np.testing.assert_array_equal(g.cluster, e.cluster)


def test_event_from_labels_rejects_inconsistent_led():
    with pytest.raises(DataError, match="LED"):
        pilarnet.event_from_labels(np.zeros((1, 3)), [1.0], [4], [5], [0], [-1])


def test_write_then_validate_catches_duplicate_voxel(tmp_path, fixture_npz):
    ev = _event(fixture_npz)
    p = ev.point.copy()
    p[3, :3] = p[2, :3]
    pilarnet.write_events(tmp_path / "d.h5", [Event(p, ev.cluster, ev.cluster_extra)])
    with pytest.raises(DataError, match="duplicate voxel") as ei:
        pilarnet.validate(tmp_path / "d.h5")
    assert ei.value.event == 0 and ei.value.field == "point"
