"""Engine tests on a toy task: exact resume, determinism, non-finite handling, schedules, groups."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy import ToyDataset, ToyTask  # noqa: E402

from larpanda.errors import NumericalError, UserError
from larpanda.train import fit, load_checkpoint
from larpanda.train import optim as O
from larpanda.train import schedules as S

CFG = {"max_steps": 6, "batch_size": 4, "lr": 1e-2, "log_every": 1, "ckpt_every": 100, "weight_decay_end": 0.2, "grad_clip": 1.0}


def _params(task):
    return {k: v.detach().clone() for k, v in task.state_dict().items()}


def _run(tmp, cfg, resume=False, task=None, ds=None, seed=0):
    torch.manual_seed(seed)
    task = task or ToyTask()
    r = fit(task, ds or ToyDataset(), cfg, tmp, resume=resume)
    return task, r


def test_loss_decreases(tmp_path):
    task, r = _run(tmp_path / "a", {**CFG, "max_steps": 40})
    recs = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    first = np.mean([x["loss"] for x in recs[:5]])
    last = np.mean([x["loss"] for x in recs[-5:]])
    assert last < 0.8 * first, (first, last)
    assert len(task.steps_seen) == 40 and task.steps_seen[:3] == [0, 1, 2]
    assert {"step", "epoch", "lr", "wd", "loss", "events_per_s", "grad_norm"} <= set(recs[-1])
    assert (tmp_path / "a" / "config.yaml").exists()


def test_resume_is_exact(tmp_path):
    full, _ = _run(tmp_path / "full", CFG)
    # now a real interruption: stop after 3 steps by truncating the stream via max-steps-independent hook
    torch.manual_seed(0)
    t1 = ToyTask()
    _stop_after(t1, 3)
    r1 = fit(t1, ToyDataset(), {**CFG, "ckpt_every": 100}, tmp_path / "res")
    assert r1["interrupted"] and r1["step"] == 3
    torch.manual_seed(123)  # a different global state must not matter
    np.random.seed(7)
    t2 = ToyTask()
    r2 = fit(t2, ToyDataset(), CFG, tmp_path / "res", resume=True)
    assert r2["step"] == 6 and not r2["interrupted"]
    a, b = _params(full), _params(t2)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    recs = [json.loads(x) for x in (tmp_path / "res" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs] == [1, 2, 3, 4, 5, 6]


def _stop_after(task, k):
    """Make the task raise the engine's stop flag (as SIGTERM would) after k optimizer steps."""
    import signal

    orig = task.on_step_end

    def hook(step, total):
        orig(step, total)
        if step + 1 == k:
            signal.raise_signal(signal.SIGTERM)

    task.on_step_end = hook


def test_existing_run_needs_resume(tmp_path):
    _run(tmp_path / "a", {**CFG, "max_steps": 2})
    with pytest.raises(UserError, match="--resume"):
        _run(tmp_path / "a", {**CFG, "max_steps": 2})
    with pytest.raises(UserError, match="same config"):
        _run(tmp_path / "a", {**CFG, "max_steps": 3}, resume=True)


def test_deterministic_bit_identical(tmp_path):
    cfg = {**CFG, "deterministic": True, "num_workers": 0}
    try:
        a, _ = _run(tmp_path / "a", cfg)
        b, _ = _run(tmp_path / "b", cfg)
    finally:
        torch.use_deterministic_algorithms(False)
    for k, v in _params(a).items():
        assert torch.equal(v, _params(b)[k]), k


def test_workers_do_not_change_result(tmp_path):
    a, _ = _run(tmp_path / "a", {**CFG, "max_steps": 3})
    b, _ = _run(tmp_path / "b", {**CFG, "max_steps": 3, "num_workers": 2})
    for k, v in _params(a).items():
        torch.testing.assert_close(v, _params(b)[k], atol=1e-6, rtol=0)


def test_nonfinite_skipped_then_stops(tmp_path):
    # items 0..15 shuffled; a NaN in every item → every step non-finite → stop after 3
    ds = ToyDataset(nan_items=range(16))
    torch.manual_seed(0)
    task = ToyTask()
    before = _params(task)
    with pytest.raises(NumericalError, match="3 non-finite losses in a row"):
        fit(task, ds, {**CFG, "max_nonfinite": 3}, tmp_path / "a")
    after = _params(task)
    for k in before:
        assert torch.equal(before[k], after[k]), f"{k} changed although every step was skipped"
    # a single bad event: skipped and counted, run finishes
    ds = ToyDataset(nan_items=[5])
    torch.manual_seed(0)
    r = fit(ToyTask(), ds, {**CFG, "max_steps": 8, "max_nonfinite": 3}, tmp_path / "b")
    assert r["step"] == 8 and 1 <= r["nonfinite"] <= 2
    recs = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for x in recs if x.get("nonfinite")) == r["nonfinite"]


def test_one_cycle_matches_torch():
    total = 57
    f, m = S.one_cycle(total, 0.05, 10, 1000)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sch = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2.0, total_steps=total, pct_start=0.05, div_factor=10, final_div_factor=1000)
    for t in range(total):
        assert abs(opt.param_groups[0]["lr"] - 2.0 * f[t]) < 1e-12
        assert abs(opt.param_groups[0]["betas"][0] - m[t]) < 1e-12
        opt.step()
        sch.step()
    assert abs(f[-1] - 1e-4) < 1e-12 and 0.99 < f.max() <= 1.0


def test_cosine_schedules():
    wd = S.cosine(0.04, 0.2, 100)
    assert abs(wd[0] - 0.04) < 1e-12 and abs(wd[-1] - 0.2) < 1e-3 and np.all(np.diff(wd) >= 0)
    tt = S.cosine(0.07, 0.07, 100, warmup_steps=5, start_warmup=0.04)
    assert abs(tt[0] - 0.04) < 1e-12 and abs(tt[4] - 0.07) < 1e-12 and np.allclose(tt[5:], 0.07)
    m = S.cosine(0.994, 1.0, 200)
    t = np.arange(200)
    assert np.allclose(m, 1 - 0.006 * (1 + np.cos(np.pi * t / 200)) / 2)


def test_layer_decay_groups():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.ModuleDict({
                f"enc{e}": torch.nn.ModuleDict({f"block{b}": torch.nn.Linear(2, 2) for b in range(d)})
                for e, d in enumerate([3, 3, 3, 9, 3])
            })
            self.head = torch.nn.Linear(2, 2)
            self.norm = torch.nn.LayerNorm(2)

    net = Net()
    assert O.encoder_depths(net) == [3, 3, 3, 9, 3]
    groups = O.param_groups(net, 0.0026, 0.04, 0.9)
    by = {id(p): g for g in groups for p in g["params"]}
    e00 = by[id(net.enc["enc0"]["block0"].weight)]
    e42 = by[id(net.enc["enc4"]["block2"].weight)]
    assert abs(e00["lr"] - 0.0026 * 0.9**20) < 1e-12 and abs(e42["lr"] - 0.0026) < 1e-12
    assert by[id(net.enc["enc0"]["block0"].bias)]["weight_decay"] == 0.0
    assert by[id(net.norm.weight)]["apply_wd"] is False and by[id(net.head.weight)]["apply_wd"] is True


def test_pickle_checkpoint_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.write_text, (marker, "x"))

    bad = tmp_path / "last.pt"
    torch.save({"model": Evil()}, bad)
    with pytest.raises(UserError, match="weights_only"):
        load_checkpoint(bad)
    assert not marker.exists()


def test_eval_fn_and_epochs(tmp_path, capsys):
    calls = []

    def eval_fn(task, ds):
        calls.append((task.training, len(ds)))
        return {"val_acc": 0.5}

    torch.manual_seed(0)
    r = fit(ToyTask(), ToyDataset(), {**CFG, "max_steps": None, "epochs": 2, "eval_every": 4, "typo_key": 1},
            tmp_path / "a", val_dataset=ToyDataset(n=3), eval_fn=eval_fn)
    assert r["total_steps"] == 8 and r["eval"] == {"val_acc": 0.5}  # 16 events / batch 4 = 4 steps per epoch
    assert calls == [(False, 3), (False, 3)]  # step 4 and the end, in eval mode
    recs = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs if x.get("split") == "val"] == [4, 8]
    assert "typo_key" in capsys.readouterr().err


def test_metrics_jsonl_is_strict_json(tmp_path):
    """A NaN/Inf log value (e.g. an undefined statistic) is written as null, not as the bare NaN token that
    strict JSON readers reject."""

    class NanLogs(ToyTask):
        def training_step(self, batch, step):
            loss, logs = super().training_step(batch, step)
            return loss, {**logs, "undefined": float("nan"), "huge": float("inf")}

    _run(tmp_path / "a", {**CFG, "max_steps": 2}, task=NanLogs())

    def reject(token):
        raise ValueError(token)

    recs = [json.loads(x, parse_constant=reject) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert recs and all(r["undefined"] is None and r["huge"] is None for r in recs)


def _scripted_eval(scores):
    """An ``eval_fn`` returning the given val mIoU values in turn, and the list of the weights it saw."""
    scores, seen = iter(scores), []

    def eval_fn(task, ds):
        seen.append(_params(task))
        return {"mIoU": next(scores)}

    return eval_fn, seen


def test_best_checkpoint_kept_and_restored_with_early_stop(tmp_path):
    """select_metric keeps checkpoints/best.pt; the task ends with the best evaluation's weights; patience
    stops the run after that many evaluations without improvement."""
    eval_fn, snapshots = _scripted_eval([0.3, 0.7, 0.5, 0.4, 0.6, 0.9])
    torch.manual_seed(0)
    task = ToyTask()
    cfg = {**CFG, "max_steps": 12, "eval_every": 2, "select_metric": "mIoU", "patience": 2}
    r = fit(task, ToyDataset(), cfg, tmp_path / "a", val_dataset=ToyDataset(n=3), eval_fn=eval_fn)
    assert r["stopped_early"] and r["step"] == 8  # evaluations at 2, 4 (best), 6, 8: two without improvement
    assert r["best"] == {"step": 4, "metric": "mIoU", "value": 0.7}
    for k, v in snapshots[1].items():
        torch.testing.assert_close(task.state_dict()[k], v)
    recs = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["mIoU"] for x in recs if x.get("split") == "val"] == [0.3, 0.7, 0.5, 0.4]
    with pytest.raises(UserError, match="select_metric"):
        fit(ToyTask(), ToyDataset(), {**cfg, "select_metric": "nope"}, tmp_path / "b", val_dataset=ToyDataset(n=3),
            eval_fn=lambda t, d: {"mIoU": 0.1})


def test_resume_keeps_best_record(tmp_path):
    """A run interrupted after its best evaluation resumes with that record: a worse evaluation after the
    resume does not replace best.pt, and the final weights are the best ones."""
    from larpanda.train.checkpoint import load_checkpoint as load

    cfg = {**CFG, "max_steps": 6, "eval_every": 2, "select_metric": "mIoU"}
    eval_fn, kept = _scripted_eval([0.8, 0.2, 0.3])  # steps 2, 4, 6 (the first before the interruption)
    torch.manual_seed(0)
    t1 = ToyTask()
    _stop_after(t1, 3)
    r1 = fit(t1, ToyDataset(), cfg, tmp_path / "a", val_dataset=ToyDataset(n=3), eval_fn=eval_fn)
    assert r1["interrupted"] and r1["best"] is None
    assert load(tmp_path / "a" / "checkpoints" / "last.pt")["counters"]["best_value"] == 0.8
    t2 = ToyTask()
    r2 = fit(t2, ToyDataset(), cfg, tmp_path / "a", resume=True, val_dataset=ToyDataset(n=3), eval_fn=eval_fn)
    assert r2["best"] == {"step": 2, "metric": "mIoU", "value": 0.8} and r2["step"] == 6
    for k, v in kept[0].items():
        torch.testing.assert_close(t2.state_dict()[k], v)
