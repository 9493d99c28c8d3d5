"""A tiny UResNet overfits a handful of synthetic events (issue 11 acceptance: train mIoU ≥ 0.95)."""

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
