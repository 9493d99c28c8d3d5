"""The training data stream: a labelled subset gets a new augmentation of each event every epoch."""

import numpy as np

from larpanda.sim import generate_events
from larpanda.data.pilarnet import write_events
from larpanda.tasks.common import labelled_dataset, make_dataset
from larpanda.train.data import SeededItems


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
