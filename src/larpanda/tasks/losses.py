"""Semantic-segmentation losses: cross-entropy plus a weighted Lovász-softmax (docs/model.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. sorted errors (Berman et al. 2018)."""
    p = gt_sorted.numel()
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1, classes: str = "present") -> torch.Tensor:
    """Multiclass Lovász-softmax loss. probs (N, C) softmax outputs, labels (N,) int64 (pimm LovaszLoss,
    mode "multiclass", per_image False). Returns a scalar (0 if no valid point)."""
    valid = labels != ignore_index
    probs, labels = probs[valid], labels[valid]
    if probs.numel() == 0:
        return probs.sum() * 0.0
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).to(probs.dtype)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    if not losses:
        return probs.sum() * 0.0
    return torch.stack(losses).mean()


def semantic_loss(logits, labels, class_weights=None, lovasz_weight: float = 0.05, ignore_index: int = -1):
    """CE + lovasz_weight · Lovász-softmax (docs/model.md §3.3). Returns (total, ce, lovasz)."""
    w = None if class_weights is None else torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
    if (labels != ignore_index).any():
        ce = F.cross_entropy(logits, labels, weight=w, ignore_index=ignore_index)
    else:
        ce = logits.sum() * 0.0
    lov = lovasz_softmax(F.softmax(logits, dim=1), labels, ignore_index) if lovasz_weight else logits.sum() * 0.0
    return ce + lovasz_weight * lov, ce, lov
