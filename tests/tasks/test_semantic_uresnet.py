"""A tiny UResNet overfits a handful of synthetic events (train mIoU ≥ 0.95)."""

import numpy as np
import pytest
import torch

from larpanda.data.point import collate
from larpanda.data.transforms import prepare
from larpanda.metrics.semantic import semantic_metrics
from larpanda.tasks.semantic import SemanticModel
from toy_events import toy_events  # noqa: E402  (tests/tasks, on sys.path)



def test_tiny_uresnet_overfits_few_events(one_thread):
    torch.manual_seed(0)
    batch = collate([prepare(e) for e in toy_events(2, seed=1)])
    model = SemanticModel("uresnet", uresnet=dict(depth=3, filters=16, reps=1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    best = 0.0
    for step in range(150):
        model.train()
        loss, _ = model.training_step(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 40 and step % 10 == 9:
            model.eval()
            with torch.no_grad():
                pred = model(batch).argmax(1)
            best = semantic_metrics(pred, batch["segment_motif"])["mIoU"]
            if best >= 0.97:
                break
    assert best >= 0.95, best
    assert (pred == batch["segment_motif"]).float().mean() > 0.97


def test_cpu_long_budget_trains_the_uresnet_that_fits_it():
    """`--mode uresnet --config cpu-long` builds uresnet-deep (depth 7, the hour-on-one-core model of
    docs/benchmarks.md), not SPINE's uresnet-base; `--set uresnet.preset=...` still chooses."""
    from larpanda.nn.uresnet import PRESETS
    from larpanda.tasks.common import load_task_config
    from larpanda.tasks.semantic import build_semantic_model

    budget = build_semantic_model("uresnet", load_task_config("semantic", "cpu-long", default="uresnet"))
    assert {k: budget.uresnet_kwargs[k] for k in ("depth", "filters", "reps")} == PRESETS["uresnet-deep"]
    assert PRESETS["uresnet-deep"]["depth"] == 7 and PRESETS["uresnet-small"]["depth"] == 6
    plain = build_semantic_model("uresnet", load_task_config("semantic", None, default="uresnet"))
    assert plain.uresnet_kwargs["depth"] == PRESETS["uresnet-base"]["depth"] == 5
    chosen = build_semantic_model("uresnet", load_task_config("semantic", "cpu-long", ["uresnet.preset=uresnet-tiny"],
                                                              default="uresnet"))
    assert chosen.uresnet_kwargs["depth"] == 3
    # the same 60 minutes are more steps for the UResNet than for a PTv3 (docs/benchmarks.md)
    train = {m: load_task_config("semantic", "cpu-long", default=m)["train"] for m in ("uresnet", "scratch")}
    assert {m: t["max_steps"] for m, t in train.items()} == {"uresnet": 10000, "scratch": 4000}
    assert {m: t["eval_every"] for m, t in train.items()} == {"uresnet": 500, "scratch": 250}
    # lr 4e-3 for the UResNet only (chosen on val); a float, not the YAML 1.1 text '4.0e-3'
    assert train["uresnet"]["lr"] == 4.0e-3 and train["scratch"]["lr"] == 2.6e-3


def test_uresnet_convolves_on_the_voxel_lattice(one_thread):
    """On ``grid_coord`` (0.665-voxel cells) consecutive voxels of a straight track are 1 or 2 cells apart, so a
    kernel-3 convolution misses half of the neighbour links; the UResNet convolves on ``voxel_coord``, where every
    voxel sees both neighbours. A saved model without the key keeps ``grid_coord``, as it was trained."""
    from larpanda.data.pilarnet import event_from_labels
    from larpanda.nn.uresnet import SparseLevel, batch_coords
    from larpanda.tasks.semantic import model_from_config

    n = 40
    voxel = np.stack([np.arange(100, 100 + n), np.full(n, 300), np.full(n, 200)], 1)
    zeros = np.zeros(n, np.int64)
    ev = event_from_labels(voxel, np.full(n, 1.0), zeros + 1, zeros + 2, zeros, zeros)
    batch = collate([prepare(ev)])
    batch.ensure_batch()

    def x_links(key):  # neighbour pairs along +x of the level-0 kernel-3 map
        plus_x = 22  # offsets in itertools.product((-1, 0, 1), repeat=3) order: (1, 0, 0)
        return sum(len(i) for k, i, _ in SparseLevel(batch_coords(batch[key], batch["batch"])).submanifold_map() if k == plus_x)

    assert x_links("voxel_coord") == n - 1
    assert x_links("grid_coord") <= (n - 1) // 2 + 1

    torch.manual_seed(0)
    model = SemanticModel("uresnet", uresnet=dict(depth=2, filters=4, reps=1)).eval()
    assert model.uresnet_kwargs["voxel_grid"] is True
    with torch.no_grad():
        feat = model.features(batch)
        on_voxels = model.backbone(batch["energy"], batch_coords(batch["voxel_coord"], batch["batch"]))
        on_grid = model.backbone(batch["energy"], batch_coords(batch["grid_coord"], batch["batch"]))
    assert torch.equal(feat, on_voxels) and not torch.allclose(feat, on_grid)

    saved = {k: v for k, v in model.config.items()}
    saved["uresnet"] = {k: v for k, v in saved["uresnet"].items() if k != "voxel_grid"}
    old = model_from_config(saved)
    assert old.voxel_grid is False and model_from_config(model.config).voxel_grid is True
    del batch["voxel_coord"]
    with pytest.raises(Exception, match="voxel_coord"):
        model.features(batch)
