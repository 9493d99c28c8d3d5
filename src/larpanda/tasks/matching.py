"""Hungarian matching and the detector losses (docs/model.md §4.3, docs/model.md §4.4; pimm ``matcher.py`` and
``losses/instance.py``), vectorized over queries, instances and events with padded tensors; only the
scipy assignment runs per event.

Notation: B events, Q queries, G = max instances per event, N = max points per event (padded).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

DEFAULTS = dict(cost_mask=1.0, cost_dice=1.0, cost_class=1.0, loss_weight_focal=2.0, loss_weight_dice=5.0,
                cls_weight_matched=2.0, cls_weight_noobj=0.5, focal_alpha=0.25, focal_gamma=2.0,
                aux_loss_weight=1.0, stuff_loss_weight=1.0)


def focal_terms(logits: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    """Per-point sigmoid focal loss for target 1 and for target 0 (same shape as ``logits``)."""
    p = torch.sigmoid(logits)
    pos = alpha * (1 - p) ** gamma * F.softplus(-logits)   # −log σ(x)
    neg = (1 - alpha) * p ** gamma * F.softplus(logits)    # −log(1 − σ(x))
    return pos, neg


def build_targets(instance: torch.Tensor, segment: torch.Tensor, batch: torch.Tensor, col: torch.Tensor,
                  B: int, N: int, num_classes: int):
    """Dense per-event instance targets from per-point labels (rows packed by ``batch``/``col``).

    Returns ``target`` (B,G,N) float one-hot over points, ``inst_valid`` (B,G) bool (instance present),
    ``point_valid`` (B,N) bool (instance ≠ −1), ``gt_class`` (B,G) long = the ``segment`` label of the
    instance's first point, clamped to [0, K−1] (docs/model.md §4.3).
    """
    dev = instance.device
    G = int(instance.max()) + 1 if instance.numel() and int(instance.max()) >= 0 else 0
    G = max(G, 1)
    target = torch.zeros(B, G, N, device=dev)
    point_valid = torch.zeros(B, N, dtype=torch.bool, device=dev)
    m = instance >= 0
    target[batch[m], instance[m], col[m]] = 1.0
    point_valid[batch[m], col[m]] = True
    inst_valid = target.sum(-1) > 0
    first = torch.full((B * G,), N, dtype=torch.long, device=dev)
    first.scatter_reduce_(0, batch[m] * G + instance[m], col[m], reduce="amin")
    seg_dense = torch.zeros(B, N + 1, dtype=torch.long, device=dev)
    seg_dense[batch, col] = segment.long()
    gt_class = seg_dense.gather(1, first.view(B, G)).clamp(0, num_classes - 1)
    return target, inst_valid, point_valid, gt_class


@torch.no_grad()
def hungarian_match(mask_logits, class_logits, target, inst_valid, point_valid, gt_class, cfg=DEFAULTS):
    """Optimal query↔instance assignment per event.

    mask_logits (B,Q,N), class_logits (B,Q,K+1), target (B,G,N), inst_valid (B,G), point_valid (B,N),
    gt_class (B,G). Cost (Q×G) = cost_mask·focal + cost_dice·dice + cost_class·(−log softmax over the K real
    classes). Returns a list of (query_idx, inst_idx) LongTensor pairs per event.
    """
    x = mask_logits.float()
    pv = point_valid.float()
    npts = pv.sum(-1).clamp(min=1)  # (B,)
    pos, neg = focal_terms(x, cfg["focal_alpha"], cfg["focal_gamma"])
    pos, neg = pos * pv[:, None], neg * pv[:, None]
    t = target * pv[:, None]
    c_mask = (torch.einsum("bqn,bgn->bqg", pos, t) + torch.einsum("bqn,bgn->bqg", neg, 1 - t)) / npts[:, None, None]
    s = torch.sigmoid(x) * pv[:, None]
    c_dice = 1 - (2 * torch.einsum("bqn,bgn->bqg", s, t) + 1) / (s.sum(-1)[:, :, None] + t.sum(-1)[:, None, :] + 1)
    K = class_logits.shape[-1] - 1
    logp = torch.log(torch.softmax(class_logits.float()[..., :K], -1) + 1e-8)
    c_cls = -logp.gather(2, gt_class[:, None, :].expand(-1, logp.shape[1], -1))
    cost = cfg["cost_mask"] * c_mask + cfg["cost_dice"] * c_dice + cfg["cost_class"] * c_cls
    cost = cost.cpu().numpy()
    valid = inst_valid.cpu().numpy()
    out = []
    for b in range(cost.shape[0]):
        g_idx = np.flatnonzero(valid[b])
        if len(g_idx) == 0 or cost.shape[1] == 0:
            out.append((torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
            continue
        qi, gi = linear_sum_assignment(cost[b][:, g_idx])
        out.append((torch.as_tensor(qi, dtype=torch.long), torch.as_tensor(g_idx[gi], dtype=torch.long)))
    return out


def layer_loss(mask_logits, class_logits, target, inst_valid, point_valid, gt_class, matches, cfg=DEFAULTS):
    """Loss of one supervised layer (docs/model.md §4.4). Returns (loss, logs) with logs of floats.

    focal_b / dice_b = means over event b's matched pairs (points with instance ≠ −1 only);
    cls_b = (2·CE(matched → gt class) + 0.5·CE(unmatched → no-object)) / (number of the two terms present);
    loss = 2·mean_b focal_b + 5·mean_b dice_b + mean_b cls_b over events with ≥ 1 match.
    """
    dev = mask_logits.device
    B, Q, _ = mask_logits.shape
    K = class_logits.shape[-1] - 1
    eb = torch.cat([torch.full((len(q),), b, dtype=torch.long) for b, (q, _) in enumerate(matches)]).to(dev)
    qi = torch.cat([q for q, _ in matches]).to(dev)
    gi = torch.cat([g for _, g in matches]).to(dev)
    has = torch.zeros(B, dtype=torch.bool, device=dev)
    has[eb] = True
    if not bool(has.any()):
        zero = mask_logits.sum() * 0 + class_logits.sum() * 0
        return zero, {"focal": 0.0, "dice": 0.0, "cls": 0.0}
    x = mask_logits[eb, qi].float()           # (M, N)
    t = target[eb, gi]                        # (M, N)
    pv = point_valid[eb].float()              # (M, N)
    npts = pv.sum(-1).clamp(min=1)
    pos, neg = focal_terms(x, cfg["focal_alpha"], cfg["focal_gamma"])
    focal_pair = ((pos * t + neg * (1 - t)) * pv).sum(-1) / npts
    s = torch.sigmoid(x) * pv
    dice_pair = 1 - (2 * (s * t).sum(-1) + 1) / (s.sum(-1) + (t * pv).sum(-1) + 1)
    n_match = torch.bincount(eb, minlength=B).float()
    focal_b = torch.zeros(B, device=dev).index_add(0, eb, focal_pair) / n_match.clamp(min=1)
    dice_b = torch.zeros(B, device=dev).index_add(0, eb, dice_pair) / n_match.clamp(min=1)

    # classification: matched queries → gt class, the others → no-object (index K)
    tgt = torch.full((B, Q), K, dtype=torch.long, device=dev)
    tgt[eb, qi] = gt_class[eb, gi]
    matched = torch.zeros(B, Q, dtype=torch.bool, device=dev)
    matched[eb, qi] = True
    ce = F.cross_entropy(class_logits.float().reshape(B * Q, -1), tgt.reshape(-1), reduction="none").view(B, Q)
    nm, nu = matched.sum(1).float(), (~matched).sum(1).float()
    ce_m = (ce * matched).sum(1) / nm.clamp(min=1)
    ce_u = (ce * ~matched).sum(1) / nu.clamp(min=1)
    terms = (nm > 0).float() + (nu > 0).float()
    cls_b = (cfg["cls_weight_matched"] * ce_m + cfg["cls_weight_noobj"] * ce_u) / terms.clamp(min=1)

    w = has.float() / has.sum()
    focal, dice, cls = (focal_b * w).sum(), (dice_b * w).sum(), (cls_b * w).sum()
    loss = cfg["loss_weight_focal"] * focal + cfg["loss_weight_dice"] * dice + cls
    return loss, {"focal": float(focal.detach()), "dice": float(dice.detach()), "cls": float(cls.detach())}


def detector_loss(out: dict, instance: torch.Tensor, segment: torch.Tensor, stuff_classes, num_classes: int,
                  cfg: dict | None = None):
    """Total loss = final layer + aux_weight·Σ aux layers + stuff_weight·BCE(stuff logit, segment ∈ stuff).

    ``out`` is `MaskQueryDecoder.forward`'s dict; ``instance``/``segment`` (N_total,) per-point labels in the
    same packed order. Returns (loss, logs)."""
    cfg = {**DEFAULTS, **(cfg or {})}
    valid = out["valid"]
    B, N = valid.shape
    target, inst_valid, point_valid, gt_class = build_targets(
        instance, segment, out["batch"], out["col"], B, N, num_classes)
    total, logs = 0.0, {}
    L = len(out["layers"])
    for i, (z, c) in enumerate(out["layers"]):
        matches = hungarian_match(z, c, target, inst_valid, point_valid, gt_class, cfg)
        li, lg = layer_loss(z, c, target, inst_valid, point_valid, gt_class, matches, cfg)
        final = i == L - 1
        total = total + (li if final else cfg["aux_loss_weight"] * li)
        if final:
            logs.update({f"loss_{k}": v for k, v in lg.items()})
    stuff_t = torch.isin(segment.long(), torch.as_tensor(list(stuff_classes), device=segment.device)).float()
    stuff = F.binary_cross_entropy_with_logits(out["stuff_logits"].float(), stuff_t)
    total = total + cfg["stuff_loss_weight"] * stuff
    logs["loss_stuff"] = float(stuff.detach())
    logs["loss"] = float(total.detach())
    return total, logs
