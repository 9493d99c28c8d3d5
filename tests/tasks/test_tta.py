import numpy as np
import pytest
import torch

from larpanda.data.point import collate
from larpanda.data.transforms import lattice_symmetry, prepare
from larpanda.errors import UserError
from larpanda.tasks.semantic import SemanticModel
from larpanda.tasks.tta import SYMMETRIES, apply_symmetry, set_tta, tta_logits
from toy_events import toy_events  # noqa: E402  (tests/tasks, on sys.path)


class _Draw:
    """An rng for `lattice_symmetry` that draws the given permutation and flips."""

    def __init__(self, perm, flip):
        self.perm, self.flip, self.calls = np.asarray(perm), np.asarray(flip), 0

    def random(self, size=None):
        self.calls += 1
        return 0.0 if size is None else np.where(self.flip, 0.0, 1.0)

    def permutation(self, n):
        return self.perm.copy()


def _events(n=2, points=300):
    return [prepare(e) for e in toy_events(n, seed=3, points=points)]


def test_the_48_symmetries_of_the_cube_identity_first():
    assert len(SYMMETRIES) == 48 and len(set(SYMMETRIES)) == 48
    assert SYMMETRIES[0] == ((0, 1, 2), (False, False, False))
    assert {perm for perm, _ in SYMMETRIES[:8]} == {(0, 1, 2)}  # the first 8: the mirror flips alone


def test_batched_symmetry_equals_the_training_augmentation_of_each_event():
    events = _events()
    batch = collate(events)
    before = {k: batch[k].clone() for k in ("coord", "grid_coord", "voxel_coord", "feat")}
    for perm, flip in (SYMMETRIES[5], SYMMETRIES[19], SYMMETRIES[47]):
        moved = apply_symmetry(batch, perm, flip)
        start = 0
        for d in events:
            n = len(d["coord"])
            coord, grid, vox = lattice_symmetry(d["coord"], d["grid_coord"], d["voxel_coord"], _Draw(perm, flip))
            rows = slice(start, start + n)
            assert np.allclose(moved["coord"][rows].numpy(), coord)
            assert np.allclose(moved["feat"][rows, :3].numpy(), coord)
            assert np.array_equal(moved["grid_coord"][rows].numpy(), grid)  # max - g of this event, not the batch
            assert np.array_equal(moved["voxel_coord"][rows].numpy(), vox)
            start += n
        assert torch.equal(moved["energy"], batch["energy"]) and torch.equal(moved["feat"][:, 3], batch["feat"][:, 3])
    for k, v in before.items():  # the input batch is not modified
        assert torch.equal(batch[k], v)


def test_tta_logits_average_the_symmetries_row_by_row_and_per_event(one_thread):
    torch.manual_seed(0)
    # a UResNet on grid_coord: its stride-2 cells depend on where each event's mirror puts it
    model = SemanticModel("uresnet", uresnet=dict(filters=4, depth=3, reps=1, voxel_grid=False)).eval()
    events = _events()
    batch = collate(events)
    with torch.no_grad():
        plain = model(batch)
        model.tta = 2
        two = model(batch)
        flip_z = model.seg_head(model.features(apply_symmetry(batch, *SYMMETRIES[1])))
        model.tta = 8
        eight = model(batch)
        alone = torch.cat([model(collate([d])) for d in events])
        model.train()
        assert torch.equal(model(batch), model.seg_head(model.features(batch)))  # training ignores tta
    assert torch.allclose(two, (plain + flip_z) / 2, atol=1e-6)
    assert not torch.allclose(two, plain, atol=1e-3)
    assert torch.allclose(eight, alone, atol=1e-5)
    assert torch.allclose(tta_logits(lambda p: p["coord"], batch, 8), torch.zeros_like(batch["coord"]), atol=1e-6)
    with pytest.raises(ValueError, match="between 1 and 48"):
        tta_logits(model, batch, 49)


def test_set_tta_accepts_semantic_weights_only():
    model = SemanticModel("uresnet", uresnet=dict(filters=4, depth=2, reps=1))
    set_tta(model, 12, "w")
    assert model.tta == 12

    class Panoptic:
        config = {"task": "panoptic"}

    with pytest.raises(UserError, match="panoptic weights"):
        set_tta(Panoptic(), 2, "w")
    set_tta(Panoptic(), 1, "w")  # the default is fine for any task
    for bad in (0, 49):
        with pytest.raises(UserError, match="--tta must be between 1 and 48"):
            set_tta(model, bad, "w")
