"""Panoptic post-processing: matrix NMS, score threshold, greedy painting and the optional filling of
uncovered points, exactly the steps of docs/model.md §4.6 (Panda ``postprocess.py``), but batched: every
step is a tensor op over (events, queries, points); the only loops are over the Q painting ranks (each step
vectorized over events and points).

Inputs are the padded decoder outputs: mask logits (B,Q,N), class logits (B,Q,K+1), stuff probabilities
(B,N) and a (B,N) validity mask. Outputs per point (B,N): instance id (rank + 1 within the event, −1 for
stuff / unassigned), class, confidence.

Settings (`DEFAULTS`, the official ``Detector`` defaults): ``stuff_threshold``, ``mask_threshold``,
``conf_threshold``, ``nms_kernel`` (gaussian or linear), ``nms_sigma``, ``nms_pre`` / ``nms_max`` (keep at
most that many masks before / after the NMS; −1 = all), ``min_points``, ``fill_uncovered``.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from .postprocess_settings import DEFAULTS, NMS_KERNELS, settings  # noqa: F401  (re-exported)


def matrix_nms(masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, active: torch.Tensor,
               sigma: float = 2.0, kernel: str = "gaussian", nms_pre: int = -1):
    """Matrix NMS (SOLOv2) for a batch.

    masks (B,Q,N) bool, labels (B,Q) long, scores (B,Q), active (B,Q) bool candidates.
    Returns (order (B,Q) indices sorted by descending input score with inactive last, decayed scores (B,Q)
    aligned with ``order``, active (B,Q) aligned with ``order``: the candidates that entered the NMS, the
    first ``nms_pre`` when it is positive). With iou over same-label pairs, i ranked before j (upper
    triangle), comp_i = max IoU of i with any higher-ranked same-label mask: gaussian
    decay_j = min_i exp(−σ·iou_ij²) / exp(−σ·comp_i²); linear decay_j = min_i (1 − iou_ij) / (1 − comp_i).
    """
    B, Q, _ = masks.shape
    key = torch.where(active, scores, torch.full_like(scores, -1.0))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    act = torch.gather(active, 1, order)
    if nms_pre > 0:
        act = act & (torch.arange(Q, device=masks.device) < nms_pre)
    m = torch.gather(masks, 1, order[..., None].expand_as(masks)).float()
    m = m * act[..., None]
    lab = torch.gather(labels, 1, order)
    sc = torch.gather(scores, 1, order)
    area = m.sum(-1)
    inter = m @ m.transpose(1, 2)
    union = area[:, :, None] + area[:, None, :] - inter
    iou = (inter / union.clamp(min=1e-6)).triu(diagonal=1)
    same = (lab[:, :, None] == lab[:, None, :]).triu(diagonal=1)
    decay_iou = iou * same
    comp = decay_iou.max(1).values  # (B,Q): comp_i over rows → per column, used as row factor below
    if kernel == "gaussian":
        decay = torch.exp(-sigma * decay_iou ** 2) / torch.exp(-sigma * comp[:, :, None] ** 2).clamp(min=1e-6)
    elif kernel == "linear":
        decay = (1 - decay_iou) / (1 - comp[:, :, None]).clamp(min=1e-6)
    else:
        raise UserError(f"nms_kernel {kernel!r}: choose from {', '.join(NMS_KERNELS)}")
    coef = decay.min(1).values
    return order, sc * coef, act


def postprocess(mask_logits: torch.Tensor, class_logits: torch.Tensor, stuff_probs: torch.Tensor | None,
                valid: torch.Tensor, stuff_classes=(), background_class: int = -1, **kw):
    """Steps 1–8 of docs/model.md §4.6 for a padded batch. Returns dict of (B,N) tensors ``instance``,
    ``cls``, ``score``; padding rows are −1 / background / 0. ``kw``: the settings (`DEFAULTS`)."""
    p = settings(kw)
    B, Q, N = mask_logits.shape
    K = class_logits.shape[-1] - 1
    dev = mask_logits.device
    prob = torch.sigmoid(mask_logits.float())
    binm = (prob > p["mask_threshold"]) & valid[:, None, :]
    if stuff_probs is not None:
        binm &= (stuff_probs < p["stuff_threshold"])[:, None, :]
    cp = torch.softmax(class_logits.float(), -1)
    score, label = cp.max(-1)
    size = binm.sum(-1)
    keep = (label != K) & (score >= p["conf_threshold"]) & (size >= p["min_points"])
    if len(stuff_classes):
        keep &= ~torch.isin(label, torch.as_tensor(list(stuff_classes), device=dev))
    combined = (prob * binm).sum(-1) / size.clamp(min=1).float() * score

    order, dscore, entered = matrix_nms(binm, label, combined, keep, p["nms_sigma"], p["nms_kernel"], p["nms_pre"])
    k_sorted = entered
    if p["conf_threshold"] > 0:  # Panda: filter_thr = conf_threshold, applied when positive
        k_sorted = k_sorted & (dscore >= p["conf_threshold"])
    key = torch.where(k_sorted, dscore, torch.full_like(dscore, -1.0))
    resort = torch.sort(key, dim=1, descending=True, stable=True).indices
    final_q = torch.gather(order, 1, resort)            # query index by final rank
    final_score = torch.gather(dscore, 1, resort)
    final_keep = torch.gather(k_sorted, 1, resort)
    if p["nms_max"] > 0:
        final_keep = final_keep & (torch.arange(Q, device=dev) < p["nms_max"])
    final_label = torch.gather(label, 1, final_q)
    masks = torch.gather(binm, 1, final_q[..., None].expand(-1, -1, N))

    inst = torch.full((B, N), -1, dtype=torch.long, device=dev)
    cls = torch.full((B, N), background_class, dtype=torch.long, device=dev)
    conf = torch.zeros(B, N, device=dev)
    taken = torch.zeros(B, N, dtype=torch.bool, device=dev)
    ar = torch.arange(B, device=dev)
    n_keep = int(final_keep.sum(1).max()) if B else 0
    for r in range(n_keep):  # greedy painting, rank by rank, vectorized over events and points
        claim = masks[:, r] & ~taken & final_keep[:, r, None]
        ok = claim.sum(-1) >= p["min_points"]
        claim &= ok[:, None]
        inst = torch.where(claim, torch.full_like(inst, r + 1), inst)
        cls = torch.where(claim, final_label[ar, r][:, None].expand(-1, N), cls)
        conf = torch.where(claim, final_score[ar, r][:, None].expand(-1, N), conf)
        taken |= claim
    if p["fill_uncovered"]:
        inst, cls, conf = _fill_uncovered(binm, label, combined, keep, valid, inst, cls, conf, taken, p["min_points"])
    if stuff_probs is not None:
        st = (stuff_probs >= p["stuff_threshold"]) & valid
        inst = inst.masked_fill(st, -1)
        cls = cls.masked_fill(st, background_class)
        conf = torch.where(st, stuff_probs.float(), conf)
    inst = inst.masked_fill(~valid, -1)
    return {"instance": inst, "cls": cls, "score": conf}


def _fill_uncovered(binm, label, combined, keep, valid, inst, cls, conf, taken, min_points):
    """Panda's ``fill_uncovered`` (step 7 of docs/model.md §4.6): every candidate (``keep``, before the NMS),
    in descending combined score, gives the points of its mask that are still uncovered a new instance, id =
    the event's largest id + 1 (0 when nothing was painted), class its label, confidence its combined score
    (not decayed), when at least ``min_points`` of them remain."""
    B, Q, N = binm.shape
    key = torch.where(keep, combined, torch.full_like(combined, -1.0))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    ar = torch.arange(B, device=binm.device)
    n_cand = int(keep.sum(1).max()) if B else 0
    for r in range(n_cand):
        q = order[:, r]
        claim = binm[ar, q] & ~taken & keep[ar, q][:, None]
        ok = (claim.sum(-1) >= min_points) & claim.any(-1)
        claim &= ok[:, None]
        new_id = inst.masked_fill(~valid, -1).max(-1).values + 1
        inst = torch.where(claim, new_id[:, None].expand(-1, N), inst)
        cls = torch.where(claim, label[ar, q][:, None].expand(-1, N), cls)
        conf = torch.where(claim, combined[ar, q][:, None].expand(-1, N), conf)
        taken |= claim
    return inst, cls, conf
