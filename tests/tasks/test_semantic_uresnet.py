"""A tiny UResNet overfits a handful of synthetic events (train mIoU ≥ 0.95)."""

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
