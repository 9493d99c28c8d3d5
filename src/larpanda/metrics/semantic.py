"""Semantic-segmentation metrics, exactly docs/design.md §7.1 (pimm ``SemSegEvaluator`` definitions).

Everything is pooled over all points of all evaluation events (events are not averaged). Points whose
ground truth equals ``ignore_index`` are dropped before counting (the union U_c excludes gt = −1).
All returned figures are fractions in 0..1.

* I_c = #(pred = c ∧ gt = c), U_c = #(pred = c ∨ gt = c), T_c = #(gt = c)
* IoU_c = I_c / (U_c + 1e−10); mIoU = mean_c IoU_c
* Acc_c = I_c / (T_c + 1e−10); mAcc = mean_c Acc_c; allAcc = Σ I_c / Σ T_c
* P_c = TP/(TP+FP), R_c = TP/(TP+FN), F1_c = 2PR/(P+R) (0 when undefined, sklearn ``zero_division=0``);
  macro-F1 = mean_c F1_c
* a class absent from both gt and pred gets 0 and still counts in the means; ``exclude`` removes classes
  (e.g. LED = 4) from the means only (pimm ``macro_ignore_class_ids``).

Note: pimm's F1 code runs on all points including gt = −1; here ignored points are dropped
for every metric, which is identical whenever no point carries −1 (the case after the energy cut).
"""

from __future__ import annotations

import numpy as np

from ..constants import NUM_SEMANTIC_CLASSES, SEMANTIC_CLASSES

EPS = 1e-10


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x).reshape(-1).astype(np.int64, copy=False)


def confusion_matrix(pred, gt, num_classes: int = NUM_SEMANTIC_CLASSES, ignore_index: int = -1) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction.

    Points with ``gt == ignore_index`` are dropped. A prediction outside 0..num_classes−1 on a valid point
    (e.g. −1 for a point the model did not label) raises ValueError: it would silently vanish otherwise.
    """
    pred, gt = _as_numpy(pred), _as_numpy(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"confusion_matrix: pred has {pred.size} points, gt has {gt.size}")
    keep = gt != ignore_index
    pred, gt = pred[keep], gt[keep]
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        raise ValueError(f"confusion_matrix: gt labels must be in 0..{num_classes - 1} or {ignore_index}")
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"confusion_matrix: predictions must be in 0..{num_classes - 1} on labelled points")
    flat = np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def metrics_from_confusion(cm: np.ndarray, exclude=(), class_names=None) -> dict:
    """All docs/design.md §7.1 figures from a pooled confusion matrix (rows gt, columns pred)."""
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else (
        list(SEMANTIC_CLASSES) if k == len(SEMANTIC_CLASSES) else [str(c) for c in range(k)])
    inter = np.diag(cm)
    total_gt = cm.sum(axis=1)  # T_c = TP + FN
    total_pred = cm.sum(axis=0)  # TP + FP
    union = total_gt + total_pred - inter
    iou = inter / (union + EPS)
    acc = inter / (total_gt + EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(total_pred > 0, inter / np.maximum(total_pred, 1), 0.0)
        rec = np.where(total_gt > 0, inter / np.maximum(total_gt, 1), 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, EPS), 0.0)
    keep = np.array([c not in set(exclude) for c in range(k)])
    if not keep.any():
        raise ValueError("semantic_metrics: every class is excluded")
    out = {
        "mIoU": float(iou[keep].mean()),
        "mAcc": float(acc[keep].mean()),
        "allAcc": float(inter.sum() / (total_gt.sum() + EPS)),
        "macro_F1": float(f1[keep].mean()),
        "macro_precision": float(prec[keep].mean()),
        "macro_recall": float(rec[keep].mean()),
        "num_points": int(cm.sum()),
        "class_names": names,
        "excluded": [int(c) for c in exclude],
        "confusion": cm.astype(np.int64).tolist(),
    }
    for c, name in enumerate(names):
        out[f"IoU_{name}"] = float(iou[c])
        out[f"precision_{name}"] = float(prec[c])
        out[f"recall_{name}"] = float(rec[c])
        out[f"F1_{name}"] = float(f1[c])
        out[f"acc_{name}"] = float(acc[c])
    return out


def semantic_metrics(pred, gt, num_classes: int = NUM_SEMANTIC_CLASSES, ignore_index: int = -1, exclude=(), class_names=None) -> dict:
    """Pooled metrics of one concatenated prediction/label pair (any shapes, flattened). See module doc."""
    cm = confusion_matrix(pred, gt, num_classes, ignore_index)
    return metrics_from_confusion(cm, exclude=exclude, class_names=class_names)


class SemanticAccumulator:
    """Streaming evaluation: ``update(pred, gt)`` per event or batch, ``compute()`` → `semantic_metrics` dict.

    Pooling the confusion matrices equals computing the metrics on the concatenated arrays.
    """

    def __init__(self, num_classes: int = NUM_SEMANTIC_CLASSES, ignore_index: int = -1, exclude=(), class_names=None):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.exclude, self.class_names = tuple(exclude), class_names
        self.cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.num_events = 0

    def update(self, pred, gt) -> None:
        self.cm += confusion_matrix(pred, gt, self.num_classes, self.ignore_index)
        self.num_events += 1

    def compute(self) -> dict:
        out = metrics_from_confusion(self.cm, exclude=self.exclude, class_names=self.class_names)
        out["num_events"] = self.num_events
        return out
