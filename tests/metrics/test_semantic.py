"""Semantic metrics vs hand-computed confusion matrices (spec-data §6.1)."""

import numpy as np
import pytest

from larpanda.metrics.semantic import SemanticAccumulator, confusion_matrix, semantic_metrics


def test_confusion_matrix_by_hand():
    gt = np.array([0, 0, 1, 1, 1, 2, -1, 2])
    pred = np.array([0, 1, 1, 1, 0, 2, 3, 0])
    cm = confusion_matrix(pred, gt, num_classes=4)
    expected = np.array([[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)


def test_metrics_by_hand_with_absent_class():
    gt = np.array([0, 0, 1, 1, 1, 2, -1, 2])
    pred = np.array([0, 1, 1, 1, 0, 2, 3, 0])
    m = semantic_metrics(pred, gt, num_classes=4, class_names=["a", "b", "c", "d"])
    # class a: I=1, U = 2 (gt) + 3 (pred) - 1 = 4 ; b: I=2, U=3+3-2=4 ; c: I=1, U=2+1-1=2 ; d absent: 0
    iou = [1 / 4, 2 / 4, 1 / 2, 0.0]
    assert m["mIoU"] == pytest.approx(np.mean(iou))
    assert m["IoU_d"] == 0.0
    # precision a=1/3, recall a=1/2 -> F1 = 0.4; b: P=2/3 R=2/3 ; c: P=1 R=1/2 -> 2/3
    f1 = [0.4, 2 / 3, 2 / 3, 0.0]
    assert m["macro_F1"] == pytest.approx(np.mean(f1))
    assert m["allAcc"] == pytest.approx(4 / 7)
    assert m["mAcc"] == pytest.approx(np.mean([1 / 2, 2 / 3, 1 / 2, 0.0]))
    assert m["num_points"] == 7
    # excluding the absent class removes it from the means
    m2 = semantic_metrics(pred, gt, num_classes=4, exclude=(3,))
    assert m2["mIoU"] == pytest.approx(np.mean(iou[:3]))
    assert m2["macro_F1"] == pytest.approx(np.mean(f1[:3]))


def test_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, 500)
    pred = np.where(rng.random(500) < 0.7, gt, rng.integers(0, 4, 500))
    m = semantic_metrics(pred, gt)
    assert m["macro_F1"] == pytest.approx(sk.f1_score(gt, pred, labels=range(5), average="macro", zero_division=0))
    assert m["mIoU"] == pytest.approx(sk.jaccard_score(gt, pred, labels=range(5), average="macro", zero_division=0))
    np.testing.assert_array_equal(np.array(m["confusion"]), sk.confusion_matrix(gt, pred, labels=range(5)))


def test_accumulator_pools_points_not_events():
    gt1, p1 = np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1])
    gt2, p2 = np.array([1]), np.array([0])
    acc = SemanticAccumulator(num_classes=2)
    acc.update(p1, gt1)
    acc.update(p2, gt2)
    pooled = semantic_metrics(np.r_[p1, p2], np.r_[gt1, gt2], num_classes=2)
    out = acc.compute()
    assert out["mIoU"] == pytest.approx(pooled["mIoU"])
    assert out["num_events"] == 2
    # per-event averaging would give a different number: guard against it
    per_event = np.mean([semantic_metrics(p1, gt1, 2)["mIoU"], semantic_metrics(p2, gt2, 2)["mIoU"]])
    assert out["mIoU"] != pytest.approx(per_event)


def test_perfect_prediction_on_fixture_event(fixtures_dir):
    d = np.load(fixtures_dir / "pilarnet_m_test_event0_recon.npz")
    gt = d["segment_motif"].astype(np.int64)
    m = semantic_metrics(gt.copy(), gt)
    present = np.unique(gt)
    # every present class has IoU 1; absent classes count as 0 in the mean (spec-data §6.1)
    for c in present:
        assert m[f"IoU_{m['class_names'][c]}"] == pytest.approx(1.0, abs=1e-9)
    assert m["mIoU"] == pytest.approx(len(present) / 5)
    # and a class absent from both gt and pred drops the mean by 1/5
    m_abs = semantic_metrics(np.where(gt == 2, 0, gt), np.where(gt == 2, 0, gt))
    assert m_abs["mIoU"] == pytest.approx(4 / 5)
    absent = [c for c in range(5) if c not in present]
    m_present = semantic_metrics(gt.copy(), gt, exclude=absent)
    assert m_present["mIoU"] == pytest.approx(1.0)
    assert m_present["macro_F1"] == pytest.approx(1.0)
    assert m["allAcc"] == pytest.approx(1.0)


def test_bad_predictions_raise():
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, -1]), np.array([0, 1]), 2)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0]), np.array([0, 1]), 2)
