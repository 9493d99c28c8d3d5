"""Transforms: exact match to the official Panda preprocessing (panda_ref fixtures), grid sampling,
batched path == per-event path, augmentation determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from larpanda.bench.loader import synthetic_event
from larpanda.data import collate, pilarnet
from larpanda.data import transforms as T
from larpanda.data.event import Event


@pytest.fixture(scope="module")
def fixture_event(fixtures_dir, tmp_path_factory):
    z = np.load(fixtures_dir / "pilarnet_m_test_event0_recon.npz")
    ev = pilarnet.event_from_labels(z["voxel"], z["energy"], z["segment_motif"], z["segment_pid"],
                                    z["instance_particle"], z["instance_interaction"])
    path = tmp_path_factory.mktemp("fx") / "fx.h5"
    pilarnet.write_events(path, [ev])
    return pilarnet.read_events(path)[0], {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", ["panda_ref_small.pt", "panda_ref_small_detailed.pt"])
def test_prepare_matches_official_inputs_row_for_row(fixture_event, fixtures_dir, name):
    ev, z = fixture_event
    ref = torch.load(fixtures_dir / name, weights_only=True)["inputs_single"]
    out = T.prepare(ev)
    assert len(out["coord"]) == 1175  # every fixture point is above 0.13 MeV
    for key in ("coord", "grid_coord", "feat"):
        np.testing.assert_array_equal(out[key], ref[key].numpy(), err_msg=key)  # bit-exact, same order
    np.testing.assert_array_equal(out["offset"], ref["offset"].numpy())
    if "raw_index" in ref:  # our index points at the same voxels as the official raw_index
        np.testing.assert_array_equal(ev.voxel[out["index"]], z["voxel"][ref["raw_index"].numpy()])
        for k in ("segment_motif", "segment_pid", "instance_particle", "instance_interaction"):
            np.testing.assert_array_equal(out[k], z[k][ref["raw_index"].numpy()].astype(np.int64), err_msg=k)


def test_fnv_hash_known_values():
    # FNV as in Pointcept: h = offset; for each column: h *= prime; h ^= x (uint64 wrap-around)
    h = T.fnv_hash_vec(np.array([[0, 0, 0], [1, 2, 3]]))
    off, prime, mask = 14695981039346656037, 1099511628211, 2**64 - 1

    def ref(row):
        x = off
        for v in row:
            x = ((x * prime) & mask) ^ v
        return x

    assert h.tolist() == [ref([0, 0, 0]), ref([1, 2, 3])]


def test_energy_cut_is_strict_and_index_maps_back():
    rng = np.random.default_rng(0)
    ev = synthetic_event(rng, 600)
    p = ev.point.copy()
    p[:5, 3] = p[:5, 4] = 0.13  # exactly at threshold: dropped
    ev = Event(p, ev.cluster, ev.cluster_extra)
    out = T.prepare(ev)
    keep = np.flatnonzero(p[:, 3] > np.float32(0.13))
    assert sorted(out["index"].tolist()) == keep.tolist()
    assert not set(range(5)) & set(out["index"].tolist())
    np.testing.assert_array_equal(out["coord"], T.normalize_coord(p[out["index"], :3]))
    np.testing.assert_array_equal(out["voxel_coord"], p[out["index"], :3].astype(np.int64))
    np.testing.assert_array_equal(out["segment_motif"], ev.segment_motif[out["index"]])
    # instances renumbered 0..K-1 among the surviving points
    inst = out["instance_particle"]
    assert set(inst[inst >= 0].tolist()) == set(range(inst.max() + 1))
    assert (out["grid_coord"].min(0) == 0).all()
    # a prediction scattered back through index lands on the right voxels
    pred = np.full(len(ev), -1)
    pred[out["index"]] = out["segment_motif"]
    np.testing.assert_array_equal(pred[keep], ev.segment_motif[keep])


def test_grid_sample_keeps_one_point_per_cell():
    coord = T.normalize_coord(np.array([[10, 10, 10], [10, 10, 10], [11, 10, 10], [300, 2, 7]], np.float32))
    order, g = T.grid_sample(coord)
    assert len(order) == 3 and len(np.unique(g, axis=0)) == 3
    o1, _ = T.grid_sample(coord, rng=np.random.default_rng(1))
    assert len(o1) == 3


def test_prepare_batch_equals_collate_of_prepare():
    rng = np.random.default_rng(2)
    evs = [synthetic_event(rng, n) for n in (900, 300, 1200)]
    a = T.prepare_batch(evs)
    b = collate([T.prepare(e) for e in evs])
    assert set(a) == set(b)
    for k in b:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    aug = {"rotate": {"axes": ("z", "x", "y"), "p": 0.8}, "flip": {"axes": (0, 1), "p": 0.5},
           "jitter": {"sigma": 0.001, "clip": 0.002}, "energy_jitter": {}, "lattice": {"p": 0.9}}
    a = T.prepare_batch(evs, augment=aug, rngs=[np.random.default_rng(i) for i in range(3)])
    b = collate([T.prepare(e, augment=aug, rng=np.random.default_rng(i)) for i, e in enumerate(evs)])
    for k in b:
        assert torch.equal(a[k], b[k]), k


def test_prepare_batch_with_empty_event_and_no_cut():
    ev = synthetic_event(np.random.default_rng(5), 400)
    empty = Event(np.zeros((0, 8), np.float32), np.array([[0, -1, -1, -1, 4, -1]]), -np.ones((1, 5), np.float32))
    a = T.prepare_batch([ev, empty, ev])
    b = collate([T.prepare(e) for e in (ev, empty, ev)])
    for k in b:
        assert torch.equal(a[k], b[k]), k
    n = int(a["offset"][0])
    assert a["offset"].tolist() == [n, n, 2 * n]
    assert len(T.prepare_batch([ev], energy_threshold=None)["coord"]) == len(ev)


def test_augmentations_deterministic_and_leave_grid_coord_alone():
    ev = synthetic_event(np.random.default_rng(4), 800)
    base = T.prepare(ev)
    a = T.prepare(ev, augment=T.AUGMENT_PRETRAIN, rng=np.random.default_rng(7))
    b = T.prepare(ev, augment=T.AUGMENT_PRETRAIN, rng=np.random.default_rng(7))
    c = T.prepare(ev, augment=T.AUGMENT_PRETRAIN, rng=np.random.default_rng(8))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["coord"], c["coord"])
    assert not np.array_equal(a["coord"], base["coord"])
    np.testing.assert_array_equal(a["grid_coord"], base["grid_coord"])  # spec-model §7 item 11
    np.testing.assert_array_equal(a["index"], base["index"])
    np.testing.assert_array_equal(a["feat"][:, :3], a["coord"])


def test_rotation_preserves_distances_and_flip_signs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    r = T.random_rotate(x, np.random.default_rng(1), axis="x", p=1.0)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(r[:, 0], x[:, 0])
    f = T.random_flip(x, np.random.default_rng(1), axes=(0, 1, 2), p=1.0)
    np.testing.assert_array_equal(f, -x)
    j = T.random_jitter(x, np.random.default_rng(1), sigma=1.0, clip=0.001)
    assert np.abs(j - x).max() <= 0.001 + 1e-6
    with pytest.raises(ValueError, match="unknown augmentation"):
        T.augment_coord_energy(x, x[:, :1], {"spin": {}}, rng)


def test_lattice_symmetry_moves_the_geometry_onto_the_same_lattice():
    """A cube symmetry of the event, not of ``coord`` alone: every point keeps its row, and ``voxel_coord``,
    ``grid_coord`` and ``coord`` are permuted and mirrored alike (voxels stay in 0..767, the grid starts at 0)."""
    rng = np.random.default_rng(4)
    ev = synthetic_event(rng, 800)
    plain = T.prepare(ev)
    v0, g0, c0 = plain["voxel_coord"], plain["grid_coord"], plain["coord"]
    seen = set()
    for seed in range(16):
        out = T.prepare(ev, augment={"lattice": {}}, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(out["index"], plain["index"])
        symmetry = []
        for i in range(3):
            (j, flipped), = [(j, f) for j in range(3) for f in (False, True)
                             if (out["voxel_coord"][:, i] == (767 - v0[:, j] if f else v0[:, j])).all()]
            np.testing.assert_array_equal(out["grid_coord"][:, i], g0[:, j].max() - g0[:, j] if flipped else g0[:, j])
            np.testing.assert_array_equal(out["coord"][:, i], -c0[:, j] if flipped else c0[:, j])
            symmetry.append((j, flipped))
        assert sorted(j for j, _ in symmetry) == [0, 1, 2]
        assert (out["grid_coord"].min(0) == 0).all()
        seen.add(tuple(symmetry))
    assert len(seen) > 8  # many of the 48 symmetries drawn
    never = T.prepare(ev, augment={"lattice": {"p": 0.0}}, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(never["grid_coord"], g0)
