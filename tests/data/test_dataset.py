"""PILArNetDataset / EventShardSampler / make_loader: index, cuts, min_points, sharding, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from larpanda.bench.loader import synthetic_event
from larpanda.data import EventShardSampler, PILArNetDataset, collate, make_loader, pilarnet
from larpanda.data.dataset import find_files, set_loader_epoch
from larpanda.data.event import Event
from larpanda.errors import DataError

SIZES = [1100, 500, 1300, 1024, 1023, 2000]  # raw points per event


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pilarnet")
    rng = np.random.default_rng(0)
    evs = [synthetic_event(rng, n, n_particles=3) for n in SIZES]
    pilarnet.write_events(root / "train" / "b_v2.h5", evs[3:])
    pilarnet.write_events(root / "train" / "a_v2.h5", evs[:3])
    pilarnet.write_events(root / "val" / "c_v2.h5", evs[:2])
    pilarnet.write_events(root / "xtrain" / "d_v2.h5", evs[5:])  # the reference glob also matches *train
    return root, evs


def test_split_glob_and_index_from_points_npy(root, monkeypatch):
    root, evs = root
    files = find_files(root, "train")
    assert [f.name for f in files] == ["a_v2.h5", "b_v2.h5", "d_v2.h5"]
    # the index must not read events
    monkeypatch.setattr(pilarnet, "read_raw", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read")))
    ds = PILArNetDataset(root, split="train")
    # raw counts >= 1024 (1023 and 500 are skipped at index time)
    assert list(zip(ds.file_ids.tolist(), ds.rows.tolist())) == [(0, 0), (0, 2), (1, 0), (1, 2), (2, 0)]
    assert len(PILArNetDataset(root, split="train", max_events=2)) == 2
    assert len(PILArNetDataset(root, split="train", min_points=0)) == 7


def test_item_is_cut_and_transformed(root):
    root, evs = root
    ds = PILArNetDataset(root / "train" / "a_v2.h5")
    item = ds[1]  # event 2 of a_v2.h5
    ev = evs[2]
    keep = np.flatnonzero(ev.energy > np.float32(0.13))
    assert sorted(item["index"].tolist()) == keep.tolist()
    assert item["file_index"].tolist() == [0] and item["event_index"].tolist() == [2]
    assert item["feat"].shape == (len(keep), 4)
    np.testing.assert_array_equal(item["segment_pid"], ev.segment_pid[item["index"]])


def test_get_batch_equals_collated_items(root):
    root, _ = root
    ds = PILArNetDataset(root, split="train")
    a = ds[[0, 1, 2, 4]]
    b = collate([ds[i] for i in [0, 1, 2, 4]])
    assert set(a) == set(b)
    for k in b:
        assert torch.equal(a[k], b[k]), k


def test_after_cut_min_points_takes_next_event(root):
    root, evs = root
    # energies above 1 MeV only: every event keeps far fewer than 1024 points except none -> next event
    ds = PILArNetDataset(root / "train" / "a_v2.h5", energy_threshold=0.13, after_cut_min_points=10**6)
    with pytest.raises(DataError, match="no event qualifies"):
        ds[0]
    ds = PILArNetDataset(root / "train" / "a_v2.h5", after_cut_min_points=1)
    assert ds[0]["event_index"].tolist() == [0]


@pytest.mark.parametrize("n,pad", [(10, True), (11, False)])
def test_two_ranks_cover_every_event_once(n, pad):
    shards = [list(EventShardSampler(n, num_replicas=2, rank=r, shuffle=True, seed=3, pad=pad)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(n))
    assert len(shards[0]) == len(EventShardSampler(n, 2, 0, pad=pad))
    s = EventShardSampler(n, num_replicas=2, rank=0, shuffle=True, seed=3, pad=pad)
    s.set_epoch(1)
    e1 = [i % n for i in s]
    assert e1 != [i % n for i in shards[0]]  # new permutation per epoch
    assert all(i >= n for i in s)  # epoch encoded in the index (augmentation seeds)


@pytest.mark.parametrize("n", [37, 40])
def test_block_shuffle_shards_keep_runs(n):
    shards = [np.array(list(EventShardSampler(n, 2, r, seed=2, pad=False, block=8))) for r in (0, 1)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(n))
    whole = np.concatenate(shards)
    assert whole.tolist() != list(range(n))  # shuffled
    runs = np.split(whole, np.flatnonzero(np.diff(whole) != 1) + 1)
    assert all(len(r) <= 8 and r[0] % 8 == 0 for r in runs[:2])  # runs start on block boundaries


def test_padded_sampler_equal_lengths():
    a = list(EventShardSampler(11, 3, 0, seed=1))
    c = list(EventShardSampler(11, 3, 2, seed=1))
    assert len(a) == len(c) == 4
    assert set(range(11)) <= set(a) | set(EventShardSampler(11, 3, 1, seed=1)) | set(c)


def test_loader_batches_and_augmentation_determinism(root):
    root, _ = root
    aug = {"rotate": {"axes": ("z",), "p": 1.0}}
    ds = PILArNetDataset(root, split="train", augment=aug, seed=5)
    loader = make_loader(ds, batch_size=2, shuffle=True, seed=1)
    set_loader_epoch(loader, 0)
    b0 = [b for b in loader]
    seen = sorted((int(f), int(e)) for b in b0 for f, e in zip(b["file_index"], b["event_index"]))
    assert seen == sorted(zip(ds.file_ids.tolist(), ds.rows.tolist()))  # one rank: each event once
    b0b = [b for b in loader]
    for x, y in zip(b0, b0b):
        assert torch.equal(x["coord"], y["coord"])
    # same event, other epoch: other augmentation; same epoch: identical; grid_coord never augmented
    n = len(ds)
    e0, e0b, e1 = ds[3], ds[3], ds[n + 3]
    np.testing.assert_array_equal(e0["coord"], e0b["coord"])
    assert not np.array_equal(e0["coord"], e1["coord"])
    np.testing.assert_array_equal(e0["grid_coord"], e1["grid_coord"])
    # per-item mode gives the same batches as the vectorized mode
    loader2 = make_loader(ds, batch_size=2, shuffle=True, seed=1, collate_fn=collate)
    set_loader_epoch(loader2, 0)
    for x, y in zip(b0, loader2):
        for k in ("coord", "grid_coord", "feat", "offset", "segment_motif", "instance_particle"):
            assert torch.equal(x[k], y[k]), k


def test_worker_processes_open_their_own_files(root):
    root, _ = root
    ds = PILArNetDataset(root, split="train")
    ds[0]  # parent opens a handle
    assert ds._handles
    loader = make_loader(ds, batch_size=5, shuffle=False, num_workers=1)
    (batch,) = list(loader)
    assert batch["event_index"].tolist() == ds.rows.tolist()
    ds.close()


def test_skip_bad_events_counts_and_replaces(tmp_path):
    rng = np.random.default_rng(1)
    evs = [synthetic_event(rng, 1100) for _ in range(3)]
    p = evs[1].point.copy()
    p[4, 3] = np.nan
    evs[1] = Event(p, evs[1].cluster, evs[1].cluster_extra)
    path = tmp_path / "bad.h5"
    pilarnet.write_events(path, evs)
    ds = PILArNetDataset(path)
    with pytest.raises(DataError) as ei:
        ds[1]
    assert ei.value.event == 1 and ei.value.field == "point"
    with pytest.raises(DataError):
        ds[[0, 1, 2]]
    ds = PILArNetDataset(path, skip_bad_events=True)
    item = ds[1]
    assert item["event_index"].tolist() == [2] and item["skipped"].tolist() == [1]
    batch = ds[[0, 1, 2]]
    assert batch["event_index"].tolist() == [0, 2, 2] and int(batch["skipped"].sum()) == 1
    assert len(ds.skipped) == 2 and "event 1" in ds.skipped[0]


def test_handles_reopened_after_fork_pid_change(root):
    root, _ = root
    ds = PILArNetDataset(root, split="train")
    h0, _ = ds._file(0)
    assert ds._file(0)[0] is h0  # cached within a process
    ds._pid = -1  # as seen by a forked child: the parent's handles must not be used
    h1, _ = ds._file(0)
    assert h1 is not h0 and h1["_file"].id.valid
    state = ds.__getstate__()  # spawn/pickle: no open handles travel
    assert state["_handles"] == {}
    ds.close()
