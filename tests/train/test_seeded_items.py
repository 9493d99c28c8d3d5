"""The training data stream: a labelled subset gets a new augmentation of each event every epoch; the
batched path (default collate) gives exactly the per-item path's batches; other collates get items."""

import itertools

import numpy as np
import pytest
import torch

from larpanda.data import collate
from larpanda.data.pilarnet import write_events
from larpanda.data.transforms import AUGMENT_DOWNSTREAM, AUGMENT_PRETRAIN
from larpanda.sim import generate_events
from larpanda.tasks.common import labelled_dataset, make_dataset
from larpanda.train.data import SeededItems, ShardedBatches, batch_stream


def test_labelled_subset_is_augmented_anew_every_epoch(tmp_path):
    write_events(tmp_path / "train.h5", generate_events(4, 0))
    augment = {"rotate": {"axes": ["z"], "p": 1.0}, "flip": {"axes": [0, 1], "p": 0.5}}
    full = make_dataset([tmp_path / "train.h5"], {"min_points": 1, "augment": augment}, train=True, seed=3)
    sub = labelled_dataset(full, 0.5, seed=1)
    assert len(sub) == 2
    items = SeededItems(sub, seed=3)
    e0, e1, again = items[(0, 0)], items[(1, 0)], items[(0, 0)]
    np.testing.assert_array_equal(e0["coord"], again["coord"])  # reproducible
    assert not np.allclose(e0["coord"], e1["coord"])  # a new rotation in epoch 1
    # the subset holds the chosen events of the full set, unaugmented labels unchanged
    np.testing.assert_array_equal(np.sort(e0["segment_motif"]), np.sort(e1["segment_motif"]))
    assert items.__getitems__([(1, 0), (1, 1)])[0]["coord"].shape == e1["coord"].shape


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "train.h5"
    write_events(path, generate_events(10, 1))
    return path


@pytest.mark.parametrize("augment", [AUGMENT_DOWNSTREAM, AUGMENT_PRETRAIN])
def test_batched_stream_equals_per_item_path(sim_file, augment):
    ds = make_dataset([sim_file], {"min_points": 1, "augment": augment}, train=True, seed=3)
    nb = ShardedBatches.batches_per_epoch(len(ds), 3, 1)
    calls = []
    get_batch = ds.get_batch
    ds.get_batch = lambda idx: calls.append(idx) or get_batch(idx)  # the stream takes the batched path
    fast = list(itertools.islice(batch_stream(ds, 3, 7, 0, collate), 2 * nb + 1))  # into the third epoch
    assert len(calls) == len(fast)
    del ds.get_batch
    items = SeededItems(ds, 7)  # the per-item path: one dict per event under its (seed, epoch, i) RNGs
    assert not items.batched
    for j, (e, batch) in enumerate(fast):
        assert e == j // nb
        keys = list(ShardedBatches(len(ds), 3, 7, e))[j % nb]
        ref = collate(items.__getitems__(keys))
        assert set(batch) == set(ref)
        for k in ref:
            assert batch[k].dtype == ref[k].dtype and torch.equal(batch[k], ref[k]), (j, k)


def test_own_collate_gets_per_item_dicts(sim_file):
    ds = make_dataset([sim_file], {"min_points": 1}, train=True, seed=3)
    seen = []

    def own_collate(samples):  # e.g. the SSL views
        seen.append(samples)
        return len(samples)

    assert [b for _, b in itertools.islice(batch_stream(ds, 2, 0, 0, own_collate), 2)] == [2, 2]
    assert all(isinstance(s, dict) and "coord" in s for samples in seen for s in samples)
