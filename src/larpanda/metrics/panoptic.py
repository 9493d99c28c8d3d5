"""Particle- and interaction-level panoptic metrics, exactly as docs/design.md §7.2 and docs/design.md §7.3
(pimm's ``InstanceSegTester``).

Per event (one call of `PanopticAccumulator.update`):

* instance sizes |p|, |g| count every point carrying the id (also where the other label is −1);
  intersections count points where both ids are ≥ 0; IoU = inter / (|p| + |g| − inter);
* candidate pairs are matched greedily one-to-one by descending IoU, keeping IoU ≥ 0.5;
* detection TP/FP/FN are summed over events (micro) → precision, recall, F1, mean matched IoU;
* instance class = mode of the per-point class within the instance over classes 0..K−1 (K = 5 for PID,
  LED excluded); a K×K confusion over matched pairs (rows gt, cols pred) gives purity (precision),
  efficiency (recall) and F1 per class, and macro means over classes with gt support > 0;
* ARI per event on the points NOT predicted −1 (gt −1 kept as one label), sklearn's
  ``adjusted_rand_score``; events with no predicted thing are skipped (NaN); the mean over events;
* PQ, two flavours: ``pq``/``sq``/``rq`` = pimm's pooled class-aware version (class-aware greedy matching
  at IoU ≥ 0.5, counts pooled over classes and events); ``pq_std``/``sq_std``/``rq_std`` = standard
  Kirillov PQ (per class c: Σ IoU over TP_c / (TP_c + ½FP_c + ½FN_c) with same-class matching at
  IoU > 0.5, pooled over events, then the mean over classes that occur).

Addition (not in the reference): ``recall_size_{1_9,10_99,100_plus}`` = detection recall of the truth
instances in each size bin (points), with ``num_gt_size_*`` their counts (no recall key for an empty bin).

Interaction level (docs/design.md §7.3): pass no classes (``pred_class=gt_class=None``); every instance is then class 0
("thing"), K = 1, and the PID section is omitted.

All returned values are plain Python floats (fractions in 0..1) except ``pid_confusion`` (nested list).
"""

from __future__ import annotations

import math

import numpy as np

from ..constants import PID_CLASSES


def _as_int(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a).astype(np.int64).reshape(-1)


def instance_table(pred: np.ndarray, gt: np.ndarray):
    """Ids, sizes and the sparse intersection table of one event.

    Returns ``(p_ids (P,), p_sizes (P,), g_ids (G,), g_sizes (G,), pairs (E,2) index into p_ids/g_ids,
    inter (E,))``; only ids ≥ 0 are instances.
    """
    p_ids, p_sizes = np.unique(pred[pred >= 0], return_counts=True)
    g_ids, g_sizes = np.unique(gt[gt >= 0], return_counts=True)
    both = (pred >= 0) & (gt >= 0)
    pi = np.searchsorted(p_ids, pred[both])
    gi = np.searchsorted(g_ids, gt[both])
    key = pi * max(len(g_ids), 1) + gi
    ukey, inter = np.unique(key, return_counts=True)
    pairs = np.stack([ukey // max(len(g_ids), 1), ukey % max(len(g_ids), 1)], axis=1)
    return p_ids, p_sizes, g_ids, g_sizes, pairs.astype(np.int64), inter.astype(np.int64)


def greedy_match(pairs: np.ndarray, iou: np.ndarray, threshold: float = 0.5, strict: bool = False):
    """Greedy one-to-one matching by descending IoU (stable on ties), keeping IoU ≥ threshold
    (or > threshold if ``strict``). Returns the selected rows of ``pairs`` as an index array."""
    ok = iou > threshold if strict else iou >= threshold
    cand = np.flatnonzero(ok)
    cand = cand[np.argsort(-iou[cand], kind="stable")]
    used_p, used_g, keep = set(), set(), []
    for e in cand:
        p, g = int(pairs[e, 0]), int(pairs[e, 1])
        if p in used_p or g in used_g:
            continue
        used_p.add(p)
        used_g.add(g)
        keep.append(e)
    return np.asarray(keep, dtype=np.int64)


def instance_classes(ids: np.ndarray, inst: np.ndarray, cls: np.ndarray, num_classes: int) -> np.ndarray:
    """Mode of ``cls`` over the points of each instance in ``ids``, counting only classes 0..K−1
    (ties → the smallest class, as ``np.argmax``/``torch.mode``); −1 when the instance has none."""
    out = np.full(len(ids), -1, dtype=np.int64)
    if len(ids) == 0:
        return out
    m = (inst >= 0) & (cls >= 0) & (cls < num_classes)
    row = np.searchsorted(ids, inst[m])
    counts = np.zeros((len(ids), num_classes), dtype=np.int64)
    np.add.at(counts, (row, cls[m]), 1)
    has = counts.sum(1) > 0
    out[has] = counts[has].argmax(1)
    return out


def adjusted_rand_index(gt: np.ndarray, pred: np.ndarray) -> float:
    """Per-event ARI of docs/design.md §7.2: drop points predicted −1; NaN if none remain."""
    from sklearn.metrics import adjusted_rand_score

    m = pred != -1
    if not m.any():
        return float("nan")
    return float(adjusted_rand_score(gt[m], pred[m]))


# truth-instance size bins (points, [lo, hi)) of the recall-by-size figures: a larpanda addition to the
# metrics (docs/design.md §7.4; SPINE-style efficiency vs size), showing how much of the missed recall is
# tiny fragments
SIZE_BINS = ((1, 10), (10, 100), (100, None))


def _prf(tp: float, fp: float, fn: float):
    p = tp / (tp + fp) if tp + fp > 0 else 0.0
    r = tp / (tp + fn) if tp + fn > 0 else 0.0
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f


class PanopticAccumulator:
    """Streaming accumulator over events (docs/design.md §7.2, docs/design.md §7.3).

    Args:
        num_classes: K, the number of thing classes that count for instance classes (5 for PID:
            photon, electron, muon, pion, proton; LED = 5 is excluded). Ignored when no classes are given.
        class_names: names of the K classes (keys of the per-class figures).
        iou_threshold: matching threshold (0.5; detection uses ≥, standard PQ uses >).
    """

    def __init__(self, num_classes: int = 5, class_names=None, iou_threshold: float = 0.5):
        self.K = int(num_classes)
        self.class_names = list(class_names or PID_CLASSES[: self.K])
        self.thr = float(iou_threshold)
        self.with_classes = None
        self.tp = self.n_pred = self.n_gt = 0
        self.iou_sum = 0.0
        self.confusion = np.zeros((self.K, self.K), dtype=np.int64)
        self.cls_tp = 0  # pooled class-aware matches (pimm PQ)
        self.cls_iou_sum = 0.0
        self.pq_iou = np.zeros(self.K)  # standard per-class PQ
        self.pq_tp = np.zeros(self.K, dtype=np.int64)
        self.pq_fp = np.zeros(self.K, dtype=np.int64)
        self.pq_fn = np.zeros(self.K, dtype=np.int64)
        self.ari = []
        self.size_gt = np.zeros(len(SIZE_BINS), dtype=np.int64)  # truth instances per size bin
        self.size_tp = np.zeros(len(SIZE_BINS), dtype=np.int64)  # of which matched

    def update(self, pred_instance, gt_instance, pred_class=None, gt_class=None) -> dict:
        """Add one event. Arrays are per point (N,), ids −1 = stuff/LED. Returns this event's figures."""
        pred = _as_int(pred_instance)
        gt = _as_int(gt_instance)
        if pred.shape != gt.shape:
            raise ValueError(f"panoptic metrics: pred has {pred.shape[0]} points, gt has {gt.shape[0]}")
        with_classes = pred_class is not None and gt_class is not None
        if self.with_classes is None:
            self.with_classes = with_classes
        K = self.K if with_classes else 1
        pc = _as_int(pred_class) if with_classes else np.zeros_like(pred)
        gc = _as_int(gt_class) if with_classes else np.zeros_like(gt)

        p_ids, p_sizes, g_ids, g_sizes, pairs, inter = instance_table(pred, gt)
        iou = inter / (p_sizes[pairs[:, 0]] + g_sizes[pairs[:, 1]] - inter) if len(pairs) else np.zeros(0)
        sel = greedy_match(pairs, iou, self.thr)
        tp, n_pred, n_gt = len(sel), len(p_ids), len(g_ids)
        self.tp += tp
        self.n_pred += n_pred
        self.n_gt += n_gt
        self.iou_sum += float(iou[sel].sum())
        bins = np.searchsorted([lo for lo, _ in SIZE_BINS], g_sizes, side="right") - 1
        np.add.at(self.size_gt, bins, 1)
        np.add.at(self.size_tp, bins[pairs[sel, 1]], 1)

        p_cls = instance_classes(p_ids, pred, pc, K)
        g_cls = instance_classes(g_ids, gt, gc, K)
        if with_classes and tp:
            mp, mg = p_cls[pairs[sel, 0]], g_cls[pairs[sel, 1]]
            ok = (mp >= 0) & (mg >= 0)
            np.add.at(self.confusion, (mg[ok], mp[ok]), 1)

        # class-aware matching (pimm pooled PQ at ≥ thr; standard PQ at > thr)
        same = (p_cls[pairs[:, 0]] == g_cls[pairs[:, 1]]) & (p_cls[pairs[:, 0]] >= 0) if len(pairs) else np.zeros(0, bool)
        sel_c = greedy_match(pairs[same], iou[same], self.thr)
        self.cls_tp += len(sel_c)
        self.cls_iou_sum += float(iou[same][sel_c].sum())
        sel_s = greedy_match(pairs[same], iou[same], self.thr, strict=True)
        kk = min(K, self.K) if with_classes else 1
        for c in range(kk):
            m_c = p_cls[pairs[same][sel_s, 0]] == c
            tp_c = int(m_c.sum())
            self.pq_tp[c] += tp_c
            self.pq_iou[c] += float(iou[same][sel_s][m_c].sum())
            self.pq_fp[c] += int((p_cls == c).sum()) - tp_c
            self.pq_fn[c] += int((g_cls == c).sum()) - tp_c

        ari = adjusted_rand_index(gt, pred)
        self.ari.append(ari)
        p, r, f = _prf(tp, n_pred - tp, n_gt - tp)
        return {"precision": p, "recall": r, "f1": f, "ari": ari, "tp": tp, "n_pred": n_pred, "n_gt": n_gt}

    def compute(self) -> dict:
        """The pooled figures over all events added so far."""
        tp, fp, fn = self.tp, self.n_pred - self.tp, self.n_gt - self.tp
        p, r, f = _prf(tp, fp, fn)
        out = {
            "precision": p, "recall": r, "f1": f,
            "matched_iou": self.iou_sum / tp if tp else 0.0,
            "tp": float(tp), "fp": float(fp), "fn": float(fn),
            "num_pred": float(self.n_pred), "num_gt": float(self.n_gt),
        }
        ari = np.asarray(self.ari, dtype=float)
        ari = ari[~np.isnan(ari)]
        out["ari"] = float(ari.mean()) if len(ari) else float("nan")
        out["ari_events"] = float(len(ari))
        out["events"] = float(len(self.ari))
        for (lo, hi), n, t in zip(SIZE_BINS, self.size_gt, self.size_tp):
            key = f"{lo}_{hi - 1}" if hi else f"{lo}_plus"
            out[f"num_gt_size_{key}"] = float(n)
            if n:
                out[f"recall_size_{key}"] = t / n

        # pimm pooled class-aware PQ
        ctp = self.cls_tp
        sq = self.cls_iou_sum / ctp if ctp else 0.0
        denom = ctp + 0.5 * (self.n_pred - ctp) + 0.5 * (self.n_gt - ctp)
        rq = ctp / denom if denom > 0 else 0.0
        out.update({"pq": sq * rq, "sq": sq, "rq": rq})

        # standard (Kirillov) PQ, mean over classes that occur
        K = self.K if self.with_classes else 1
        names = self.class_names if self.with_classes else ["thing"]
        pqs, sqs, rqs = [], [], []
        for c in range(K):
            t, fp_c, fn_c = self.pq_tp[c], self.pq_fp[c], self.pq_fn[c]
            if t + fp_c + fn_c == 0:
                continue
            sq_c = self.pq_iou[c] / t if t else 0.0
            rq_c = t / (t + 0.5 * fp_c + 0.5 * fn_c)
            pqs.append(sq_c * rq_c)
            sqs.append(sq_c)
            rqs.append(rq_c)
            if self.with_classes:
                out[f"pq_{names[c]}"] = float(sq_c * rq_c)
        out["pq_std"] = float(np.mean(pqs)) if pqs else 0.0
        out["sq_std"] = float(np.mean(sqs)) if sqs else 0.0
        out["rq_std"] = float(np.mean(rqs)) if rqs else 0.0

        if self.with_classes:
            C = self.confusion
            diag = np.diag(C).astype(float)
            col, row = C.sum(0), C.sum(1)
            purs, effs, f1s = [], [], []
            for c in range(self.K):
                pur = diag[c] / col[c] if col[c] else 0.0
                eff = diag[c] / row[c] if row[c] else 0.0
                f1 = 2 * pur * eff / (pur + eff) if pur + eff > 0 else 0.0
                n = self.class_names[c]
                out[f"pid_purity_{n}"], out[f"pid_efficiency_{n}"], out[f"pid_f1_{n}"] = pur, eff, f1
                if row[c] > 0:
                    purs.append(pur)
                    effs.append(eff)
                    f1s.append(f1)
            out["pid_macro_purity"] = float(np.mean(purs)) if purs else 0.0
            out["pid_macro_efficiency"] = float(np.mean(effs)) if effs else 0.0
            out["pid_macro_f1"] = float(np.mean(f1s)) if f1s else 0.0
            out["pid_accuracy"] = float(diag.sum() / C.sum()) if C.sum() else 0.0
            out["pid_confusion"] = C.tolist()
        return {k: (float(v) if isinstance(v, (float, int, np.floating, np.integer)) else v) for k, v in out.items()}


def panoptic_metrics(pred_instance, gt_instance, pred_class=None, gt_class=None, num_classes: int = 5,
                     class_names=None, iou_threshold: float = 0.5) -> dict:
    """Metrics of docs/design.md §7.2 for one event (arrays) or several (lists of per-event arrays)."""
    acc = PanopticAccumulator(num_classes, class_names, iou_threshold)
    if isinstance(pred_instance, (list, tuple)):
        n = len(pred_instance)
        for i in range(n):
            acc.update(pred_instance[i], gt_instance[i],
                       None if pred_class is None else pred_class[i], None if gt_class is None else gt_class[i])
    else:
        acc.update(pred_instance, gt_instance, pred_class, gt_class)
    return acc.compute()


def is_nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)
