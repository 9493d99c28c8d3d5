"""PILArNetDataset and the training batches (`train.data.batch_stream`): index, cuts, min_points,
batched reads equal to collated items, DDP sharding, workers, determinism, bad events."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from larpanda.bench.loader import synthetic_event
from larpanda.data import PILArNetDataset, collate, pilarnet
from larpanda.data.dataset import find_files
from larpanda.data.event import Event
from larpanda.data.transforms import AUGMENT_PRETRAIN, prepare
from larpanda.errors import DataError
from larpanda.train.data import ShardedBatches, batch_stream, epoch_order

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
    # each kept event's raw size, across files and after a reordering subset, still without reading events
    assert ds.raw_point_counts().tolist() == [1100, 1300, 1024, 2000, 2000]
    assert ds.subset([4, 1]).raw_point_counts().tolist() == [2000, 1300]


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


def _assert_same(a, b):
    assert set(a) == set(b)
    for k in b:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("augment", [None, AUGMENT_PRETRAIN])
def test_get_batch_equals_collated_items(root, augment):
    root, _ = root
    ds = PILArNetDataset(root, split="train", augment=augment, seed=4)
    n = len(ds)
    for idx in ([0, 1, 2, 4], [4, 0, 3], [2, 2], [n + 1, 2 * n + 1, 3]):  # any order, repeats, epochs
        _assert_same(ds[idx], collate([ds[i] for i in idx]))
    if augment:  # epoch e of event i: its own augmentation, the same in any batch
        assert not torch.equal(ds[[1]]["coord"], ds[[n + 1]]["coord"])
    # a custom transform takes the per-event path (same RNG per event): here the same numbers
    custom = PILArNetDataset(root, split="train", augment=augment, seed=4, transform=lambda ev, **kw: prepare(ev, **kw))
    _assert_same(custom.get_batch([0, 3, n + 4]), ds.get_batch([0, 3, n + 4]))


def test_after_cut_min_points_takes_next_event(root):
    root, evs = root
    # energies above 1 MeV only: every event keeps far fewer than 1024 points except none -> next event
    ds = PILArNetDataset(root / "train" / "a_v2.h5", energy_threshold=0.13, after_cut_min_points=10**6)
    with pytest.raises(DataError, match="no event qualifies"):
        ds[0]
    ds = PILArNetDataset(root / "train" / "a_v2.h5", after_cut_min_points=1)
    assert ds[0]["event_index"].tolist() == [0]


@pytest.mark.parametrize("n,b,world", [(10, 2, 2), (11, 2, 2), (11, 1, 3), (7, 3, 1)])
def test_ranks_take_disjoint_events_covering_the_epoch(n, b, world):
    order = epoch_order(n, 3, 1, True).tolist()
    shards = [[k for batch in ShardedBatches(n, b, 3, 1, rank=r, world=world) for k in batch] for r in range(world)]
    seen = [i for sh in shards for _, i in sh]
    nb = ShardedBatches.batches_per_epoch(n, b, world)
    assert all(len(sh) == nb * b for sh in shards) and all(e == 1 for sh in shards for e, _ in sh)
    assert len(set(seen)) == len(seen)  # disjoint
    assert sorted(seen) == sorted(order[: nb * b * world])  # the whole epoch but the last partial global batch
    # W ranks at batch b see, step by step, what one process sees at batch b·W
    one = list(ShardedBatches(n, b * world, 3, 1))
    for j, big in enumerate(one):
        per_rank = [list(ShardedBatches(n, b, 3, 1, rank=r, world=world))[j] for r in range(world)]
        assert [k for part in per_rank for k in part] == big
    assert [i for _, i in shards[0]] != [i for batch in ShardedBatches(n, b, 3, 2, rank=0, world=world) for _, i in batch]


def _stream(ds, n_batches, **kw):
    return [b for _, b in itertools.islice(batch_stream(ds, 2, 1, 0, collate, **kw), n_batches)]


def test_training_batches_sharded_deterministic_and_augmented(root):
    root, _ = root
    aug = {"rotate": {"axes": ("z",), "p": 1.0}}
    ds = PILArNetDataset(root, split="train", augment=aug, seed=5)
    n = len(ds)
    ranks = [_stream(ds, 1, rank=r, world=2) for r in (0, 1)]  # n = 5: one global batch of 2 x 2
    seen = [(int(f), int(e)) for bs in ranks for b in bs for f, e in zip(b["file_index"], b["event_index"])]
    assert len(set(seen)) == 4 and set(seen) <= set(zip(ds.file_ids.tolist(), ds.rows.tolist()))
    b0, again = _stream(ds, 4), _stream(ds, 4)  # epochs 0 and 1 (2 batches each)
    for x, y in zip(b0, again):
        _assert_same(x, y)
    # a batch is the collated items of its (epoch, event): augmentation keyed by (seed, epoch, event)
    order = epoch_order(n, 1, 1, True).tolist()
    _assert_same(b0[2], collate([ds[n + i] for i in order[:2]]))
    e0, e1 = ds[3], ds[n + 3]
    assert not np.array_equal(e0["coord"], e1["coord"])  # another epoch: another augmentation
    np.testing.assert_array_equal(e0["grid_coord"], e1["grid_coord"])  # grid_coord never augmented


def test_worker_processes_give_the_same_batches(root):
    root, _ = root
    ds = PILArNetDataset(root, split="train", augment=AUGMENT_PRETRAIN, seed=2)
    ds[0]  # the parent opens a handle: workers must open their own
    assert ds._handles
    ref = _stream(ds, 3)
    for x, y in zip(ref, _stream(ds, 3, num_workers=2)):
        _assert_same(x, y)
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
    # through the training stream, in a worker process too: the count travels in the batch
    for workers in (0, 1):
        ds = PILArNetDataset(path, skip_bad_events=True)
        (batch,) = [b for _, b in itertools.islice(batch_stream(ds, 3, 0, 0, collate, shuffle=False, num_workers=workers), 1)]
        assert batch["event_index"].tolist() == [0, 2, 2] and batch["skipped"].tolist() == [0, 1, 0]
        ds = PILArNetDataset(path)
        with pytest.raises(DataError) as ei:
            next(batch_stream(ds, 3, 0, 0, collate, num_workers=workers))
        assert "\n" not in str(ei.value) and str(ei.value).startswith(f"{path} event 1: point: non-finite energy")


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
