"""Hypothesis properties of the data layer: write -> read round trip of random valid
events; validate accepts every generated valid file and rejects each single-field corruption."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from larpanda.data import pilarnet
from larpanda.errors import DataError

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def events(draw, max_points=60):
    """A random valid v2 event (unique voxels, labels consistent with the writer invariants)."""
    n = draw(st.integers(0, max_points))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    flat = rng.choice(768**3, n, replace=False)
    voxel = np.stack([flat // 768**2, (flat // 768) % 768, flat % 768], 1)
    energy = rng.uniform(0.001, 30.0, n).astype(np.float32)
    k = draw(st.integers(1, 5))
    part = rng.integers(-1, k, n)  # -1 = LED
    motif = np.where(part < 0, 4, rng.integers(0, 4, n))
    pid = np.where(part < 0, 5, rng.integers(0, 5, n))
    # one motif/pid per particle keeps clusters simple but instance ids random
    inter = np.where(part < 0, -1, part % 2)
    ev = pilarnet.event_from_labels(voxel, energy, motif, pid, part, inter,
                                    extra_columns=rng.uniform(0, 5, (n, 3)))
    return ev


@SETTINGS
@given(st.lists(events(), min_size=1, max_size=4))
def test_round_trip_random_events(evs):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.h5"
        pilarnet.write_events(path, evs)
        pilarnet.validate(path)
        back = pilarnet.read_events(path)
    assert len(back) == len(evs)
    for a, b in zip(evs, back):
        np.testing.assert_array_equal(a.point, b.point)
        np.testing.assert_array_equal(a.cluster, b.cluster)
        np.testing.assert_array_equal(a.cluster_extra, b.cluster_extra)
        for name in ("segment_motif", "segment_pid", "instance_particle", "instance_interaction"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


# single-field corruptions: (name, function(point (N,8), cluster (M,6), extra (M,5)) -> same, applicable?)
def _c_energy_nan(p, c, x):
    if not len(p):
        return None
    p[0, 3] = np.nan
    return p, c, x


def _c_energy_neg(p, c, x):
    if not len(p):
        return None
    p[-1, 3] = p[-1, 4] = -1.0
    return p, c, x


def _c_coord(p, c, x):
    if not len(p):
        return None
    p[0, 2] = 768
    return p, c, x


def _c_coord_frac(p, c, x):
    if not len(p):
        return None
    p[0, 0] += 0.25
    return p, c, x


def _c_size(p, c, x):
    c[-1, 0] += 1
    return p, c, x


def _c_semantic(p, c, x):
    c[-1, 4] = 5
    return p, c, x


def _c_pid(p, c, x):
    c[-1, 5] = 6
    return p, c, x


def _c_led_row(p, c, x):
    c[0, 2] = 0
    return p, c, x


def _c_group(p, c, x):
    if len(c) < 2:
        return None
    c[1, 2] = c[1:, 1].max() + 100
    return p, c, x


def _c_duplicate(p, c, x):
    if len(p) < 2:
        return None
    p[1, :3] = p[0, :3]
    return p, c, x


def _c_de(p, c, x):
    if not len(p):
        return None
    p[0, 4] = p[0, 3] + 1
    return p, c, x


def _c_extra_rows(p, c, x):
    return p, c, x[:-1]


CORRUPTIONS = [_c_energy_nan, _c_energy_neg, _c_coord, _c_coord_frac, _c_size, _c_semantic, _c_pid, _c_led_row,
               _c_group, _c_duplicate, _c_de, _c_extra_rows]


@SETTINGS
@given(st.lists(events(), min_size=1, max_size=3), st.sampled_from(CORRUPTIONS), st.data())
def test_validate_rejects_single_field_corruption(evs, corrupt, data):
    i = data.draw(st.integers(0, len(evs) - 1))
    p, c, x = evs[i].point.copy(), evs[i].cluster.copy(), evs[i].cluster_extra.copy()
    out = corrupt(p, c, x)
    if out is None:
        return
    p, c, x = out
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.h5"
        pilarnet.write_events(path, evs)
        with h5py.File(path, "r+") as f:  # overwrite one event's tables in place
            f["point"][i] = p.reshape(-1)
            f["cluster"][i] = c.reshape(-1)
            f["cluster_extra"][i] = x.reshape(-1)
        counts = np.load(pilarnet.points_path(path))
        counts[i] = len(p)
        np.save(pilarnet.points_path(path), counts)
        with pytest.raises(DataError) as ei:
            pilarnet.validate(path)
    assert ei.value.event == i, (corrupt.__name__, str(ei.value))
