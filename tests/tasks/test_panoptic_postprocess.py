"""Batched matrix NMS + painting (spec-model §4.5) vs a straightforward serial reference."""

import math

import numpy as np
import pytest
import torch

from larpanda.tasks.postprocess import postprocess


def serial_reference(mask_logits, class_logits, stuff_probs, stuff_classes, bg, stuff_thr=0.5, mask_thr=0.5,
                     conf_thr=0.5, sigma=2.0, min_points=2):
    """One event, plain Python loops, following Panda's postprocess_panoptic step by step."""
    Q, N = mask_logits.shape
    K = class_logits.shape[1] - 1
    prob = 1 / (1 + np.exp(-mask_logits))
    cands = []
    for q in range(Q):
        binm = [(prob[q, n] > mask_thr) and (stuff_probs[n] < stuff_thr) for n in range(N)]
        e = np.exp(class_logits[q] - class_logits[q].max())
        cp = e / e.sum()
        label, score = int(np.argmax(cp)), float(cp.max())
        size = sum(binm)
        if label == K or label in stuff_classes or score < conf_thr or size < min_points:
            continue
        mean = sum(prob[q, n] for n in range(N) if binm[n]) / size
        cands.append([mean * score, label, binm])
    cands.sort(key=lambda c: -c[0])
    n = len(cands)
    iou = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if cands[i][1] != cands[j][1]:
                continue
            a, b = cands[i][2], cands[j][2]
            inter = sum(x and y for x, y in zip(a, b))
            iou[i][j] = inter / max(sum(a) + sum(b) - inter, 1e-6)
    comp = [max([iou[k][i] for k in range(n)] + [0.0]) for i in range(n)]
    final = []
    for j in range(n):
        decay = min(math.exp(-sigma * iou[i][j] ** 2) / math.exp(-sigma * comp[i] ** 2) for i in range(n))
        s = cands[j][0] * decay
        if s >= conf_thr:
            final.append((s, cands[j][1], cands[j][2]))
    final.sort(key=lambda c: -c[0])
    inst, cls, conf = [-1] * N, [bg] * N, [0.0] * N
    taken = [False] * N
    for r, (s, label, binm) in enumerate(final):
        claim = [binm[p] and not taken[p] for p in range(N)]
        if sum(claim) < min_points:
            continue
        for p in range(N):
            if claim[p]:
                inst[p], cls[p], conf[p], taken[p] = r + 1, label, s, True
    for p in range(N):
        if stuff_probs[p] >= stuff_thr:
            inst[p], cls[p], conf[p] = -1, bg, float(stuff_probs[p])
    return np.array(inst), np.array(cls), np.array(conf)


def _random_batch(seed, B=3, Q=10, N=40, K=6):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(N // 2, N + 1, (B,), generator=g)
    counts[0] = N
    # masks: a few overlapping blobs, so NMS has something to suppress
    base = torch.randn(B, 4, N, generator=g) * 4
    mix = torch.randint(0, 4, (B, Q), generator=g)
    z = base.gather(1, mix[..., None].expand(-1, -1, N)) + torch.randn(B, Q, N, generator=g) * 1.5
    cls = torch.randn(B, Q, K + 1, generator=g) * 3
    cls[..., 2] += 3  # many same-label candidates
    stuff = torch.rand(B, N, generator=g) * 0.8
    valid = torch.arange(N)[None] < counts[:, None]
    return z, cls, stuff, valid, counts


@pytest.mark.parametrize("seed", range(6))
def test_batched_postprocess_equals_serial_reference(seed):
    z, cls, stuff, valid, counts = _random_batch(seed)
    out = postprocess(z, cls, stuff, valid, stuff_classes=(5,), background_class=5)
    n_inst = 0
    for b in range(z.shape[0]):
        n = int(counts[b])
        ri, rc, rs = serial_reference(z[b, :, :n].double().numpy(), cls[b].double().numpy(), stuff[b, :n].numpy(),
                                      {5}, 5)
        assert np.array_equal(out["instance"][b, :n].numpy(), ri)
        assert np.array_equal(out["cls"][b, :n].numpy(), rc)
        assert np.allclose(out["score"][b, :n].numpy(), rs, atol=1e-5)
        assert (out["instance"][b, n:] == -1).all()
        n_inst += len(set(ri.tolist()) - {-1})
    assert n_inst > 3  # the random inputs really produce instances


def test_nms_suppresses_duplicate_and_keeps_distinct():
    N = 20
    z = torch.full((1, 3, N), -10.0)
    z[0, 0, :10] = 10  # instance A
    z[0, 1, :10] = 9   # duplicate of A, same label, lower score → decayed below conf
    z[0, 2, 10:] = 10  # instance B
    cls = torch.full((1, 3, 7), -10.0)
    cls[0, :, 2] = 10
    cls[0, 1, 2] = 1.0  # lower class score
    out = postprocess(z, cls, torch.zeros(1, N), torch.ones(1, N, dtype=torch.bool), stuff_classes=(5,))
    inst = out["instance"][0]
    assert set(inst[:10].tolist()) == {1} and set(inst[10:].tolist()) == {2}
