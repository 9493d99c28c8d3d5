"""The moving average of the weights (train.ema_decay): its arithmetic, and what `fit` validates, keeps and resumes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from test_engine import CFG, _stop_after  # noqa: E402
from toy import ToyDataset, ToyTask  # noqa: E402

from larpanda.errors import UserError
from larpanda.train import fit, load_checkpoint
from larpanda.train.ema import WeightEMA


def _float_state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def test_average_follows_the_warmed_up_decay_and_skips_integer_buffers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = WeightEMA(net, 0.9)
    assert "1.num_batches_tracked" not in ema.names and "1.running_mean" in ema.names
    expect = _float_state(net)
    for t in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(float(t + 1))
        net(torch.randn(8, 3))  # training mode: the BatchNorm statistics move too
        d = min(0.9, (1 + t) / (10 + t))
        assert ema.current_decay() == pytest.approx(d)
        ema.update(net)
        for k, v in _float_state(net).items():
            expect[k] = d * expect[k] + (1 - d) * v
    for k in ema.names:
        torch.testing.assert_close(ema.shadow[k], expect[k])
    with pytest.raises(ValueError, match="ema_decay"):
        WeightEMA(net, 1.0)


def test_swapped_in_gives_the_weights_back_even_after_an_error():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    ema = WeightEMA(net, 0.5)
    own = _float_state(net)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    moved = _float_state(net)
    with pytest.raises(RuntimeError):
        with ema.swapped_in(net):
            torch.testing.assert_close(net.weight, ema.shadow["weight"])
            assert not torch.equal(net.weight, moved["weight"]) and not torch.equal(net.weight, own["weight"])
            raise RuntimeError("evaluation failed")
    torch.testing.assert_close(net.weight, moved["weight"])


class _Recording(ToyTask):
    """Records its weights after every applied update (``on_step_end`` runs before the average's update)."""

    def __init__(self):
        super().__init__()
        self.trajectory = [_float_state(self)]

    def on_step_end(self, step, total):
        super().on_step_end(step, total)
        self.trajectory.append(_float_state(self))


def _expected_average(trajectory, decay):
    avg = dict(trajectory[0])
    for t, state in enumerate(trajectory[1:]):
        d = min(decay, (1 + t) / (10 + t))
        avg = {k: d * avg[k] + (1 - d) * state[k] for k in avg}
    return avg


def test_fit_validates_keeps_and_returns_the_average(tmp_path):
    seen = []

    def eval_fn(task, ds):
        seen.append(_float_state(task))
        return {"mIoU": [0.9, 0.1][len(seen) - 1]}

    torch.manual_seed(0)
    task = _Recording()
    cfg = {**CFG, "max_steps": 6, "eval_every": 3, "select_metric": "mIoU", "ema_decay": 0.8}
    r = fit(task, ToyDataset(), cfg, tmp_path / "a", val_dataset=ToyDataset(n=3), eval_fn=eval_fn)
    assert r["best"]["step"] == 3 and len(task.trajectory) == 7
    at3 = _expected_average(task.trajectory[:4], 0.8)
    for k, v in at3.items():  # the evaluation at step 3 saw the average, not the weights of step 3
        torch.testing.assert_close(seen[0][k], v, atol=1e-6, rtol=0)
        torch.testing.assert_close(task.state_dict()[k], v, atol=1e-6, rtol=0)  # and the run ends with it
    assert not torch.allclose(seen[0]["net.0.weight"], task.trajectory[3]["net.0.weight"])
    last = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    at6 = _expected_average(task.trajectory, 0.8)
    for k, v in at6.items():
        torch.testing.assert_close(last["ema"]["shadow"][k], v, atol=1e-6, rtol=0)
        torch.testing.assert_close(last["model"][k], task.trajectory[-1][k])  # last.pt keeps the trained weights

    torch.manual_seed(0)
    plain = _Recording()  # without validation the average is the model returned
    fit(plain, ToyDataset(), {**CFG, "max_steps": 6, "ema_decay": 0.8}, tmp_path / "b")
    for k, v in _expected_average(plain.trajectory, 0.8).items():
        torch.testing.assert_close(plain.state_dict()[k], v, atol=1e-6, rtol=0)


def test_resume_with_the_average_is_exact(tmp_path):
    cfg = {**CFG, "ema_decay": 0.7}
    torch.manual_seed(0)
    full = ToyTask()
    fit(full, ToyDataset(), cfg, tmp_path / "full")
    torch.manual_seed(0)
    t1 = ToyTask()
    _stop_after(t1, 3)
    assert fit(t1, ToyDataset(), cfg, tmp_path / "res")["interrupted"]
    torch.manual_seed(5)
    t2 = ToyTask()
    fit(t2, ToyDataset(), cfg, tmp_path / "res", resume=True)
    for k, v in full.state_dict().items():
        torch.testing.assert_close(t2.state_dict()[k], v, atol=1e-6, rtol=0)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["ema"]
    b = load_checkpoint(tmp_path / "res" / "checkpoints" / "last.pt")["ema"]
    assert a["updates"] == b["updates"] == 6

    torch.manual_seed(0)
    t3 = ToyTask()
    _stop_after(t3, 3)
    fit(t3, ToyDataset(), CFG, tmp_path / "plain")
    with pytest.raises(UserError, match="ema_decay"):
        fit(ToyTask(), ToyDataset(), cfg, tmp_path / "plain", resume=True)
