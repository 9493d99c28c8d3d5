"""Supera-like labelling rules on hand-made deposits (spec-data §1.6)."""

import random

import numpy as np

from larpanda.sim.labels import Registry, assemble
from larpanda.sim.showers import Cascade


def _line(a, b, n):
    a, b = np.asarray(a, float), np.asarray(b, float)
    t = np.linspace(0, 1, n + 1)
    pts = a + t[:, None] * (b - a)
    return pts[:-1], pts[1:]


def _event(parts, points=None):
    """parts: list of (frag, a, b, n_steps, dE_per_step)."""
    heavy = {"p0": [], "p1": [], "dE": [], "time": [], "frag": []}
    for f, a, b, n, de in parts:
        p0, p1 = _line(a, b, n)
        heavy["p0"].append(p0)
        heavy["p1"].append(p1)
        heavy["dE"].append(np.full(n, de))
        heavy["time"].append(np.arange(n, dtype=float))
        heavy["frag"].append(np.full(n, f, np.int64))
    return heavy


def test_rules_delta_merge_small_shower_le_and_photon_group_id():
    rng = np.random.default_rng(0)
    reg = Registry()
    mu = reg.new("track", "mu", 500.0, (10, 10, 10), (1, 0, 0), 0)
    small_delta = reg.new("delta", "e", 3.0, (20, 10.05, 10.05), (0, 1, 0), 0, parent=mu)
    big_delta = reg.new("delta", "e", 10.0, (30, 10.05, 10.05), (0, 1, 0), 0, parent=mu)
    gamma = reg.new("shower_root", "gamma", 100.0, (50, 50, 50), (0, 0, 1), 1)
    big = reg.shower_fragment(gamma, 50.0, (50, 50, 55), (0, 0, 1))
    far = reg.shower_fragment(gamma, 1.0, (80, 80, 80), (1, 0, 0))
    touching = reg.shower_fragment(gamma, 1.0, (50.45, 50.05, 58.05), (1, 0, 0))
    heavy = _event([
        (mu, (10.05, 10.05, 10.05), (40.05, 10.05, 10.05), 300, 0.21),  # 100 voxels along x
        (small_delta, (20.05, 10.05, 10.05), (20.05, 10.35, 10.05), 2, 0.2),  # 2 voxels: merged
        (big_delta, (30.05, 10.05, 10.05), (30.05, 11.55, 10.05), 10, 0.2),  # 6 voxels: delta
        (big, (50.05, 50.05, 55.05), (50.05, 50.05, 61.05), 60, 0.2),  # 20 voxels: shower
        (far, (80.05, 80.05, 80.05), (80.65, 80.05, 80.05), 4, 0.3),  # 2 voxels, isolated: LE
        (touching, (50.35, 50.05, 58.05), (50.95, 50.05, 58.05), 4, 0.3),  # voxels 167–169 beside `big` (166)
    ])
    ev = assemble(rng, reg, Cascade(rng, random.Random(0), reg.shower_fragment), heavy, led_fraction=0.0)
    c = ev.cluster
    by_id = {int(r[1]): r for r in c[1:]}
    assert set(by_id) == {mu, big_delta, gamma}  # small delta merged, far → LE, touching → merged
    assert by_id[mu][4] == 1 and by_id[mu][5] == 2
    assert by_id[big_delta][4] == 3 and by_id[big_delta][5] == 1 and by_id[big_delta][2] == big_delta
    # the photon left no voxel itself: its largest fragment carries the group's id
    assert by_id[gamma][2] == gamma and by_id[gamma][4] == 0 and by_id[gamma][5] == 0
    assert by_id[gamma][3] == 1 and by_id[mu][3] == 0
    # voxel counts: the touching fragment's 2–3 voxels joined the shower row, the far one is LED
    vox = {tuple(v) for v in ev.voxel[ev.segment_motif == 4].tolist()}
    assert (266, 266, 266) in vox and len(vox) >= 2
    shower = ev.voxel[ev.segment_motif == 0]
    assert set(shower[:, 0].tolist()) == {166, 167, 168, 169}  # the touching piece joined whole
    # track voxels hold the summed energy of the merged small delta
    assert np.isclose(ev.energy.sum(), 300 * 0.21 + 2 * 0.2 + 10 * 0.2 + 60 * 0.2 + 4 * 0.3 + 4 * 0.3, rtol=1e-5)
