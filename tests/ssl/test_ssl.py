"""SSL pieces against naive references, and a short end-to-end pretraining on simulated events."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from larpanda.data.point import Point
from larpanda.ssl import MultiViewGenerator, SonataTask, SSLTransform, collate_views, generate_mask, sinkhorn_knopp
from larpanda.ssl.sonata import OnlineCluster, match_neighbour, roll_views, segment_mean_loss

MICRO = dict(in_channels=4, order=["z", "z-trans"], stride=[2, 2, 2, 2], enc_depths=[1, 1, 1, 1, 1],
             enc_channels=[8, 8, 16, 16, 16], enc_num_head=[1, 1, 2, 2, 2], enc_patch_size=[32, 32, 32, 32, 32],
             drop_path=0.0, layer_scale=None, shuffle_orders=True)
SSL = dict(num_prototypes=64, head_hidden=32, head_embed=16)


def _events(n, seed=5):
    from larpanda.sim.generate import generate_events

    return generate_events(n, seed=seed)


def test_sinkhorn_matches_naive_and_marginals():
    g = torch.Generator().manual_seed(0)
    logits = torch.rand(50, 8, generator=g) * 2 - 1
    q = sinkhorn_knopp(logits, 0.07, 3)
    # naive numpy transcription of spec-model §2.4
    Q = np.exp(logits.double().numpy() / 0.07).T
    Q /= Q.sum()
    for _ in range(3):
        Q /= Q.sum(1, keepdims=True) * 8
        Q /= Q.sum(0, keepdims=True) * 50
    Q = (Q * 50).T
    np.testing.assert_allclose(q.numpy(), Q, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(q.sum(1), torch.ones(50))
    # prototypes used about equally (equipartition), unlike a plain softmax of the same logits
    col = q.sum(0) / 50
    soft = torch.softmax(logits / 0.07, 1).sum(0) / 50
    assert float((col - 1 / 8).abs().max()) < 0.5 * float((soft - 1 / 8).abs().max())


def test_online_cluster_keys_and_cosine_logits():
    h = OnlineCluster(24, hidden=32, embed=16, num_prototypes=10)
    keys = set(h.state_dict())
    assert {"prototype.parametrizations.weight.original0", "prototype.parametrizations.weight.original1",
            "mlp.0.weight", "mlp.2.bias"} <= keys
    g = h.prototype.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    out = h(torch.randn(7, 24))
    assert out.shape == (7, 10) and float(out.detach().abs().max()) <= 1 + 1e-5
    v = h.prototype.parametrizations.weight.original1
    x = h.embed(torch.randn(3, 24))
    torch.testing.assert_close(h.prototype(x), x @ (v / v.norm(dim=1, keepdim=True)).T)


def test_match_neighbour_vs_bruteforce():
    g = torch.Generator().manual_seed(1)
    q = torch.rand(40, 3, generator=g) * 0.01
    t = torch.cat([q[:25] + 0.0005, torch.rand(30, 3, generator=g) * 0.01])
    qo, to = torch.tensor([20, 40]), torch.tensor([30, 55])
    idx = match_neighbour(q, qo, t, to, 0.002)
    expect = []
    for s, (a, b, c, d) in enumerate([(0, 20, 0, 30), (20, 40, 30, 55)]):
        dist = torch.cdist(q[a:b], t[c:d])
        m, j = dist.min(1)
        for i in range(b - a):
            if m[i] < 0.002:
                expect.append((a + i, c + int(j[i])))
    assert [tuple(x) for x in idx.tolist()] == expect and len(expect) > 20


def test_views_structure():
    rng = np.random.default_rng(0)
    coord = rng.normal(size=(3000, 3)).astype(np.float32) * 0.05
    energy = rng.uniform(-1, 1, (3000, 1)).astype(np.float32)
    gen = MultiViewGenerator(max_size=1000)
    v = gen(coord, energy, rng)
    assert v["global_offset"].shape == (2,) and v["local_offset"].shape == (6,)
    gsz = np.diff(v["global_offset"], prepend=0)
    lsz = np.diff(v["local_offset"], prepend=0)
    assert np.all((gsz >= 400) & (gsz <= 1000)) and np.all((lsz >= 100) & (lsz <= 400))
    # origin_coord rows are rows of the input; energies: globals share one jitter, locals un-jittered
    lookup = {tuple(c): i for i, c in enumerate(coord)}
    gi = np.array([lookup[tuple(c)] for c in v["global_origin_coord"]])
    li = np.array([lookup[tuple(c)] for c in v["local_origin_coord"]])
    np.testing.assert_array_equal(v["local_energy"][:, 0], energy[li, 0])
    ratio = v["global_energy"][:, 0] / energy[gi, 0]
    assert np.all(np.abs(ratio - 1) <= 0.05 + 1e-6)
    both = np.intersect1d(gi[: gsz[0]], gi[gsz[0]:])
    e0 = dict(zip(gi[: gsz[0]], v["global_energy"][: gsz[0], 0]))
    e1 = dict(zip(gi[gsz[0]:], v["global_energy"][gsz[0]:, 0]))
    assert all(e0[k] == e1[k] for k in both)
    # each view is a kNN ball: every kept point is closer to the crop's first point than any dropped one
    first = li[:lsz[0]]
    d = np.linalg.norm(coord - coord[first[0]], axis=1)
    assert d[first].max() <= np.sort(d)[lsz[0] - 1] + 1e-7
    # feat = [augmented coord, energy]
    np.testing.assert_array_equal(v["global_feat"][:, :3], v["global_coord"])


def test_generate_mask_counts():
    g = torch.Generator().manual_seed(0)
    coord = torch.rand(2000, 3, generator=g) * 0.2
    offset = torch.tensor([500, 1200, 2000])
    mask, patch = generate_mask(coord, offset, 0.05, 0.7)
    P = int(patch.max()) + 1
    masked_patches = torch.unique(patch[mask])
    assert len(masked_patches) == int(P * 0.7)
    for p in masked_patches[:20]:
        assert bool(mask[patch == p].all())
    # patches never straddle views
    batch = torch.repeat_interleave(torch.arange(3), torch.diff(offset, prepend=torch.tensor([0])))
    for p in range(P):
        assert len(torch.unique(batch[patch == p])) == 1


def test_roll_and_segment_mean():
    pt = Point(feat=torch.arange(10.0)[:, None], coord=torch.zeros(10, 3), origin_coord=torch.zeros(10, 3),
               offset=torch.tensor([2, 5, 9, 10]))
    r = roll_views(pt)
    assert r.feat[:, 0].tolist() == [2, 3, 4, 0, 1, 9, 5, 6, 7, 8] and r.offset.tolist() == [3, 5, 6, 10]
    loss = segment_mean_loss(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 2]))
    assert abs(float(loss) - (2 + 0 + 5) / 3) < 1e-6


def test_task_step_ema_export(tmp_path):
    torch.manual_seed(0)
    evs = _events(2)
    tr = SSLTransform(max_size=300)
    rng = np.random.default_rng(0)
    batch = collate_views([tr(e, rng=rng) for e in evs])
    assert batch["global_offset"].shape == (4,) and batch["local_offset"].shape == (12,)
    task = SonataTask(MICRO, **SSL)
    task.setup(100)
    loss, logs = task.training_step(batch, 0)
    assert math.isfinite(loss.item())
    assert abs(loss.item() - (0.25 * logs["mask_loss"] + 0.25 * logs["roll_mask_loss"] + 0.5 * logs["unmask_loss"])) < 1e-4
    assert 0 < logs["proto_entropy"] <= 1 and logs["matched_frac"] > 0.5 and logs["teacher_temp"] == pytest.approx(0.04)
    loss.backward()
    assert all(p.grad is None for p in task.teacher.parameters())
    assert task.student["backbone"].embedding.mask_token.grad is not None
    # EMA: t <- m t + (1 - m) s with m = 0.994 at step 0
    with torch.no_grad():
        for p in task.student.parameters():
            p.add_(1.0)
    t_before = [p.clone() for p in task.teacher.parameters()]
    s_now = [p.clone() for p in task.student.parameters()]
    task.on_step_end(0, 100)
    for tb, s, ta in zip(t_before, s_now, task.teacher.parameters()):
        torch.testing.assert_close(ta, 0.994 * tb + 0.006 * s)
    from larpanda.io import load_model

    task.export_backbone(tmp_path / "bb", which="teacher")
    m = load_model(tmp_path / "bb")
    assert m.config["task"] == "backbone"
    for k, v in task.teacher["backbone"].state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    feats = m.embed(evs[0])
    assert feats.shape == (int((evs[0].energy > 0.13).sum()), 8 + 8 + 16 + 16 + 16)


def test_pretrain_loss_decreases_and_resume_exact(tmp_path):
    """fit() on simulated events: loss falls over 16 steps; the same run stopped (SIGTERM) after 8 steps
    and resumed equals the uninterrupted one (1e-6)."""
    import signal

    from larpanda.train import fit

    class DS(torch.utils.data.Dataset):
        def __init__(self, evs):
            self.evs, self.tr = evs, SSLTransform(max_size=150)

        def __len__(self):
            return len(self.evs)

        def __getitem__(self, i):
            return self.tr(self.evs[i], rng=np.random.default_rng(np.random.randint(2**31)))

    ds = DS(_events(4))
    cfg = {"max_steps": 16, "batch_size": 2, "lr": 3e-3, "log_every": 1, "ckpt_every": 1000, "grad_clip": 3.0,
           "weight_decay_end": 0.2, "layer_decay": 0.9}
    torch.manual_seed(0)
    full = SonataTask(MICRO, **SSL)
    r = fit(full, ds, cfg, tmp_path / "full")
    recs = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    first, last = np.mean([x["loss"] for x in recs[:4]]), np.mean([x["loss"] for x in recs[-4:]])
    assert last < first - 0.1, (first, last)
    assert r["nonfinite"] == 0 and all("proto_entropy" in x and "teacher_feat_std" in x for x in recs)

    torch.manual_seed(0)
    a = SonataTask(MICRO, **SSL)
    orig = a.on_step_end

    def stop(step, total):
        orig(step, total)
        if step == 7:
            signal.raise_signal(signal.SIGTERM)

    a.on_step_end = stop
    assert fit(a, ds, cfg, tmp_path / "res")["step"] == 8
    torch.manual_seed(99)
    b = SonataTask(MICRO, **SSL)
    fit(b, ds, cfg, tmp_path / "res", resume=True)
    for k, v in full.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, atol=1e-6, rtol=0, msg=k)


def test_panda_head_size_matches_spec():
    """spec-model §2.3: per-head trainable params 6,557,952 for the 1088-d input of panda-base."""
    h = OnlineCluster(192 + 384 + 512)
    assert sum(p.numel() for p in h.parameters() if p.requires_grad) == 6_557_952
