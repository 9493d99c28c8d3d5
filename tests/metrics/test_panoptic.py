"""Panoptic metrics (spec-data §6.2–6.3) on hand-built events with hand-computed figures."""

import math

import numpy as np
import pytest

from larpanda.metrics.panoptic import PanopticAccumulator, panoptic_metrics

MUON, PROTON, ELECTRON, LED = 2, 4, 1, 5


def _event():
    """gt: A = 10 points (muon, id 0), B = 10 (proton, id 1), C = 6 (electron, id 2), 5 LED points (−1)."""
    inst = np.array([0] * 10 + [1] * 10 + [2] * 6 + [-1] * 5)
    cls = np.array([MUON] * 10 + [PROTON] * 10 + [ELECTRON] * 6 + [LED] * 5)
    return inst, cls


def _ari(index, sum_a, sum_b, n):
    pairs = n * (n - 1) / 2
    exp = sum_a * sum_b / pairs
    return (index - exp) / (0.5 * (sum_a + sum_b) - exp)


def test_perfect_prediction():
    inst, cls = _event()
    m = panoptic_metrics(inst.copy(), inst, cls.copy(), cls)
    for k in ("precision", "recall", "f1", "matched_iou", "ari", "pq", "sq", "rq", "pq_std", "pid_macro_f1",
              "pid_macro_purity", "pid_macro_efficiency", "pid_accuracy"):
        assert m[k] == pytest.approx(1.0), k
    assert m["tp"] == 3 and m["fp"] == 0 and m["fn"] == 0


def test_perfect_prediction_on_fixture(fixtures_dir):
    d = np.load(fixtures_dir / "pilarnet_m_test_event0_recon.npz")
    inst, cls = d["instance_particle"].astype(np.int64), d["segment_pid"].astype(np.int64)
    # relabel the prediction ids (a permutation) – metrics must not depend on id values
    perm = np.random.default_rng(0).permutation(inst.max() + 1) + 7
    pred = np.where(inst >= 0, perm[np.maximum(inst, 0)], -1)
    m = panoptic_metrics(pred, inst, cls, cls)
    assert m["num_gt"] == len(np.unique(inst[inst >= 0])) > 5
    for k in ("f1", "ari", "pq", "pq_std", "matched_iou", "pid_macro_f1"):
        assert m[k] == pytest.approx(1.0), k
    inter = panoptic_metrics(d["instance_interaction"], d["instance_interaction"])
    assert inter["f1"] == inter["ari"] == inter["pq"] == pytest.approx(1.0)
    assert "pid_confusion" not in inter


def test_split_particle():
    inst, cls = _event()
    pred = inst.copy()
    pred[6:10] = 3  # A split into 6 + 4 points
    m = panoptic_metrics(pred, inst, cls, cls)
    assert (m["tp"], m["fp"], m["fn"]) == (3, 1, 0)
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == 1.0
    assert m["f1"] == pytest.approx(6 / 7)
    assert m["matched_iou"] == pytest.approx((0.6 + 1 + 1) / 3)
    # ARI on the 26 non-LED points: n_ij = 6,4,10,6; rows 10,10,6; cols 6,4,10,6
    assert m["ari"] == pytest.approx(_ari(15 + 6 + 45 + 15, 45 + 45 + 15, 15 + 6 + 45 + 15, 26))
    # standard PQ: muon TP(0.6) + FP → 0.6/1.5; proton 1; electron 1
    assert m["pq_std"] == pytest.approx((0.4 + 1 + 1) / 3)
    assert m["pq_muon"] == pytest.approx(0.4)
    # pooled class-aware PQ: SQ = 2.6/3, RQ = 3/3.5
    assert m["pq"] == pytest.approx(2.6 / 3 * 3 / 3.5)


def test_merged_pair():
    inst, cls = _event()
    pred = inst.copy()
    pred[20:26] = 1  # C merged into B: 16 points, IoU with B = 10/16, with C = 6/16
    m = panoptic_metrics(pred, inst, cls, cls)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 0, 1)
    assert m["f1"] == pytest.approx(0.8)
    assert m["matched_iou"] == pytest.approx((1 + 10 / 16) / 2)
    # rows 10,10,6 ; cols 10,16 ; n_ij 10,10,6
    assert m["ari"] == pytest.approx(_ari(45 + 45 + 15, 45 + 45 + 15, 45 + 120, 26))


def test_missed_particle():
    inst, cls = _event()
    pred, pcls = inst.copy(), cls.copy()
    pred[20:26], pcls[20:26] = -1, LED  # C predicted as stuff
    m = panoptic_metrics(pred, inst, pcls, cls)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 0, 1)
    assert m["recall"] == pytest.approx(2 / 3) and m["precision"] == 1.0
    assert m["ari"] == pytest.approx(1.0)  # the missed points are excluded from ARI
    assert m["pq"] == pytest.approx(1.0 * 2 / 2.5)
    assert m["pid_efficiency_electron"] == 0.0 and m["pid_macro_efficiency"] == pytest.approx(1.0)


def test_wrong_pid():
    inst, cls = _event()
    pcls = cls.copy()
    pcls[10:20] = MUON  # B (proton) called a muon
    m = panoptic_metrics(inst.copy(), inst, pcls, cls)
    assert m["f1"] == 1.0 and m["ari"] == 1.0
    C = np.array(m["pid_confusion"])
    assert C[PROTON, MUON] == 1 and C[MUON, MUON] == 1 and C.sum() == 3
    assert m["pid_purity_muon"] == 0.5 and m["pid_efficiency_muon"] == 1.0
    assert m["pid_efficiency_proton"] == 0.0
    assert m["pid_macro_purity"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert m["pid_macro_efficiency"] == pytest.approx(2 / 3)
    assert m["pid_accuracy"] == pytest.approx(2 / 3)
    assert m["pq"] == pytest.approx(2 / 3)  # class-aware: TP 2, FP 1, FN 1
    assert m["pq_std"] == pytest.approx((2 / 3 + 0 + 1) / 3)


def test_instance_class_is_majority_without_led():
    inst, cls = _event()
    pcls = cls.copy()
    pcls[0:4] = LED  # LED votes do not count: A is still a muon
    pcls[4:6] = PROTON  # 2 proton votes vs 4 muon votes
    m = panoptic_metrics(inst.copy(), inst, pcls, cls)
    assert m["pid_accuracy"] == 1.0


def test_streaming_pools_counts_and_skips_nan_ari():
    inst, cls = _event()
    acc = PanopticAccumulator()
    split = inst.copy()
    split[6:10] = 3
    acc.update(split, inst, cls, cls)
    none = np.full_like(inst, -1)  # nothing predicted: ARI NaN, skipped
    ev = acc.update(none, inst, np.full_like(cls, LED), cls)
    assert math.isnan(ev["ari"])
    m = acc.compute()
    assert (m["tp"], m["fp"], m["fn"]) == (3, 1, 3)
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == pytest.approx(0.5)
    assert m["ari_events"] == 1 and m["events"] == 2
    assert m["ari"] == pytest.approx(_ari(81, 105, 81, 26))
    assert m == panoptic_metrics([split, none], [inst, inst], [cls, np.full_like(cls, LED)], [cls, cls])


def test_iou_ties_at_threshold_match():
    # pred 4 points covering 2 of gt (4 points) + 2 extra: IoU = 2/6 < 0.5 → no match;
    gt = np.array([0, 0, 0, 0, -1, -1])
    pred = np.array([0, 0, -1, -1, 0, 0])
    assert panoptic_metrics(pred, gt)["tp"] == 0
    # IoU exactly 0.5 matches (≥, spec-data §6.2 step 4), standard PQ needs > 0.5
    pred = np.array([0, 0, 0, 0, 0, 0])
    gt = np.array([0, 0, 0, -1, -1, -1])
    m = panoptic_metrics(pred, gt)
    assert m["tp"] == 1 and m["pq"] == pytest.approx(0.5) and m["pq_std"] == 0.0


def test_recall_by_truth_size():
    # truth: 5-point, 50-point and 200-point particles; the prediction finds the two larger ones exactly
    # and covers the small one with a 20-point blob (IoU 5/20 < 0.5: missed)
    gt = np.repeat([0, 1, 2, -1], [5, 50, 200, 15])
    pred = np.repeat([3, 8, 9, 3], [5, 50, 200, 15])
    m = panoptic_metrics(pred, gt)
    assert m["num_gt_size_1_9"] == 1 and m["num_gt_size_10_99"] == 1 and m["num_gt_size_100_plus"] == 1
    assert m["recall_size_1_9"] == 0.0
    assert m["recall_size_10_99"] == 1.0 and m["recall_size_100_plus"] == 1.0
    assert m["recall"] == pytest.approx(2 / 3)
    empty = panoptic_metrics(np.zeros(300, int), np.zeros(300, int))  # one 300-point particle
    assert "recall_size_1_9" not in empty and empty["num_gt_size_1_9"] == 0
    assert empty["recall_size_100_plus"] == 1.0
