"""Whole events: format invariants, labels, determinism, statistics on a scaled-down sample."""

import numpy as np
import pytest

from larpanda.data import pilarnet
from larpanda.sim import generate_event, generate_events
from larpanda.sim.stats import check, summarize, table

N = 40


@pytest.fixture(scope="module")
def events():
    return generate_events(N, seed=0)


def test_every_event_validates(events, tmp_path):
    path = tmp_path / "sim_40_v2.h5"
    pilarnet.write_events(path, events)
    pilarnet.validate(path)
    back = pilarnet.read_events(path)
    assert len(back) == N
    for a, b in zip(events, back):
        assert np.array_equal(a.point, b.point) and np.array_equal(a.cluster, b.cluster)
        assert np.array_equal(a.cluster_extra, b.cluster_extra)
    npts = np.load(str(path).replace(".h5", "_points.npy"))
    assert npts.tolist() == [len(e) for e in events]


def test_label_invariants(events):
    for ev in events:
        c, p = ev.cluster, ev.point
        assert c[0].tolist()[1:] == [-1, -1, -1, 4, -1] and (ev.cluster_extra[0] == -1).all()
        assert c[:, 0].sum() == len(p) and (c[1:, 0] > 0).all()
        assert (ev.segment_motif[c[0, 0]:] != 4).all()  # every LED voxel is in row 0
        assert len(np.unique(p[:, :3], axis=0)) == len(p)  # one point per voxel
        assert (p[:, :3] >= 0).all() and (p[:, :3] <= 767).all() and (p[:, 3] > 0).all()
        assert np.array_equal(p[:, 3], p[:, 4])
        ids = c[1:, 1]
        assert len(np.unique(ids)) == len(ids) and (ids >= 0).all()
        assert set(c[1:, 2]) <= set(ids)  # group = cluster id of an existing row
        assert set(c[1:, 4]) <= {0, 1, 2, 3} and set(c[1:, 5]) <= {0, 1, 2, 3, 4}
        # PID is per group; tracks are μ/π/p, Michel and delta are electrons
        for g in np.unique(c[1:, 2]):
            assert len(set(c[1:][c[1:, 2] == g, 5])) == 1
        assert set(c[1:][c[1:, 4] == 1, 5]) <= {2, 3, 4}
        assert set(c[1:][np.isin(c[1:, 4], [2, 3]), 5]) <= {1}
        masses = ev.cluster_extra[1:, 0]
        known = np.array([0.511, 105.658, 139.570, 938.272, 0.0])
        assert (np.abs(masses[:, None] - known[None]).min(axis=1) < 1e-2).all()
        assert (p[:, 6] >= 0).all() and (p[:, 7] >= 0).all()


def test_deterministic_across_workers(events):
    two = generate_events(4, seed=0, start_index=2, workers=2)
    for a, b in zip(events[2:6], two):
        assert np.array_equal(a.point, b.point) and np.array_equal(a.cluster, b.cluster)
    again = generate_event(0, 3)
    assert np.array_equal(again.point, events[3].point)
    assert not np.array_equal(generate_event(1, 3).point[:10], events[3].point[:10])


def test_statistics_in_widened_bands(events):
    s = summarize(events)
    res = check(s, widen=0.5)
    bad = {k: v for k, v in res.items() if not v[3]}
    assert not bad, table(s)
    # the physics rules of thumb hold tightly even on 40 events (spec-data §3.2–3.3)
    assert s["frac_michel"] > 0.002 and s["frac_delta"] > 0.005
    assert 3.5 < s["track_voxels_per_cm"] < 5.0 and 0.4 < s["track_mev_per_voxel"] < 0.65
    assert 0.4 < s["median_voxel_energy_after_cut"] < 0.65
    assert 1.2 < s["shower_voxels_per_mev"] < 2.0
    assert s["muon_bragg_ratio"] > 2.5  # stopping muons end in a Bragg peak
    assert 0.3 < s["michel_per_stopping_muon"] < 1.0
