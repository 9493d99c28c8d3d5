"""Matcher and detector losses (spec-model §4.2–4.3)."""

import numpy as np
import pytest
import torch

from larpanda.tasks.matching import build_targets, detector_loss, hungarian_match, layer_loss


def _batch():
    # event 0: 12 points, instances 0 (5 pts), 1 (4 pts), 3 LED; event 1: 9 points, instances 0 (6), 1 (3)
    inst = torch.tensor([0] * 5 + [1] * 4 + [-1] * 3 + [1] * 3 + [0] * 6)
    seg = torch.tensor([2] * 5 + [4] * 4 + [5] * 3 + [0] * 3 + [1] * 6)
    counts = torch.tensor([12, 9])
    batch = torch.repeat_interleave(torch.arange(2), counts)
    col = torch.arange(21) - torch.tensor([0, 12])[batch]
    return inst, seg, batch, col


def _perfect_logits(target, point_valid, gt_class, Q=6, K=6, L=30.0, perm=None):
    B, G, N = target.shape
    z = torch.full((B, Q, N), -L)
    cls = torch.zeros(B, Q, K + 1)
    cls[..., K] = L  # no-object
    for b in range(B):
        for g in range(G):
            q = g if perm is None else int(perm[g])
            z[b, q] = torch.where(target[b, g] > 0, L, -L)
            cls[b, q] = 0
            cls[b, q, gt_class[b, g]] = L
    return z, cls


def test_targets_first_point_class():
    inst, seg, batch, col = _batch()
    t, iv, pv, gc = build_targets(inst, seg, batch, col, 2, 12, num_classes=6)
    assert t.shape == (2, 2, 12) and iv.all()
    assert pv[0].sum() == 9 and pv[1].sum() == 9
    assert gc.tolist() == [[2, 4], [1, 0]]


def test_perfect_queries_are_matched_and_have_minimal_loss():
    inst, seg, batch, col = _batch()
    t, iv, pv, gc = build_targets(inst, seg, batch, col, 2, 12, num_classes=6)
    perm = [4, 1]
    z, cls = _perfect_logits(t, pv, gc, perm=perm)
    matches = hungarian_match(z, cls, t, iv, pv, gc)
    for qi, gi in matches:
        assert sorted(zip(gi.tolist(), qi.tolist())) == [(0, 4), (1, 1)]
    loss, logs = layer_loss(z, cls, t, iv, pv, gc, matches)
    # "perfect": logits ±30 on exactly the instance points: focal ~ e^-60, dice ~ N·e^-30, CE ~ K·e^-30
    assert logs["focal"] < 1e-12 and logs["dice"] < 1e-10 and logs["cls"] < 1e-10
    assert float(loss) < 1e-9
    # one wrong point raises the mask loss by far more than that
    z2 = z.clone()
    z2[0, 4, 0] = -30.0
    loss2, _ = layer_loss(z2, cls, t, iv, pv, gc, hungarian_match(z2, cls, t, iv, pv, gc))
    assert float(loss2) > 1e-2


def test_loss_is_invariant_to_query_permutation():
    torch.manual_seed(0)
    inst, seg, batch, col = _batch()
    B, Q, N, K = 2, 6, 12, 6
    layers = [(torch.randn(B, Q, N) * 3, torch.randn(B, Q, K + 1)) for _ in range(3)]
    valid = torch.zeros(B, N, dtype=torch.bool)
    valid[batch, col] = True
    out = {"layers": layers, "valid": valid, "batch": batch, "col": col, "stuff_logits": torch.randn(21)}
    l1, _ = detector_loss(out, inst, seg, stuff_classes=(5,), num_classes=K)
    perm = torch.randperm(Q)
    out_p = dict(out, layers=[(z[:, perm], c[:, perm]) for z, c in layers])
    l2, _ = detector_loss(out_p, inst, seg, stuff_classes=(5,), num_classes=K)
    assert torch.allclose(l1, l2, atol=1e-5)
    # and it is differentiable w.r.t. every layer's outputs
    zs = [z.clone().requires_grad_() for z, _ in layers]
    out_g = dict(out, layers=[(z, c) for z, (_, c) in zip(zs, layers)])
    detector_loss(out_g, inst, seg, stuff_classes=(5,), num_classes=K)[0].backward()
    assert all(z.grad is not None and z.grad.abs().sum() > 0 for z in zs)


def _naive_cost(z, cls, inst_pts, gt_class):
    """Cost of spec-model §4.2 for one query and one instance, written point by point."""
    a, g = 0.25, 2.0
    p = 1 / (1 + np.exp(-z))
    t = inst_pts.astype(float)
    focal = np.mean(np.where(t > 0, -a * (1 - p) ** g * np.log(p), -(1 - a) * p ** g * np.log(1 - p)))
    dice = 1 - (2 * np.sum(p * t) + 1) / (np.sum(p) + np.sum(t) + 1)
    e = np.exp(cls[:-1] - cls[:-1].max())
    return focal + dice - np.log(e[gt_class] / e.sum() + 1e-8)


def test_matching_is_optimal_against_brute_force():
    from itertools import permutations

    torch.manual_seed(1)
    inst, seg, batch, col = _batch()
    t, iv, pv, gc = build_targets(inst, seg, batch, col, 2, 12, num_classes=6)
    z, cls = torch.randn(2, 4, 12) * 2, torch.randn(2, 4, 7)
    matches = hungarian_match(z, cls, t, iv, pv, gc)
    for b, (qi, gi) in enumerate(matches):
        v = pv[b].numpy()
        cost = np.array([[_naive_cost(z[b, q].double().numpy()[v], cls[b, q].double().numpy(), t[b, g].numpy()[v] > 0,
                                      int(gc[b, g])) for g in range(2)] for q in range(4)])
        best = min(cost[a[0], 0] + cost[a[1], 1] for a in permutations(range(4), 2))
        got = sum(cost[int(q), int(g)] for q, g in zip(qi, gi))
        assert len(qi) == 2 and got == pytest.approx(best, rel=1e-5)


def test_stuff_bce_targets_stuff_classes():
    inst, seg, batch, col = _batch()
    valid = torch.zeros(2, 12, dtype=torch.bool)
    valid[batch, col] = True
    stuff = torch.where(seg == 5, 20.0, -20.0)
    z = torch.zeros(2, 3, 12)
    c = torch.zeros(2, 3, 7)
    out = {"layers": [(z, c)], "valid": valid, "batch": batch, "col": col, "stuff_logits": stuff}
    _, logs = detector_loss(out, inst, seg, stuff_classes=(5,), num_classes=6)
    assert logs["loss_stuff"] < 1e-6
    out["stuff_logits"] = -stuff
    _, logs = detector_loss(out, inst, seg, stuff_classes=(5,), num_classes=6)
    assert logs["loss_stuff"] > 10
