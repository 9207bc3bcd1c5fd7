"""Dice and IoU: against smp's own reductions and a direct numpy formula; threshold tuning."""
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from kit.seg_metrics import binarize, mask_score, pair_scores, tune_thresholds


def numpy_pair(pred, true, metric):
    """Per (image, class) dice 2|A.B|/(|A|+|B|) or IoU |A.B|/|A+B|, 1 when both are empty."""
    out = np.zeros(pred.shape[:2])
    for n in range(pred.shape[0]):
        for c in range(pred.shape[1]):
            a, b = pred[n, c].astype(bool), true[n, c].astype(bool)
            inter, union = (a & b).sum(), (a | b).sum()
            if a.sum() + b.sum() == 0:
                out[n, c] = 1.0
            elif metric == "dice":
                out[n, c] = 2 * inter / (a.sum() + b.sum())
            else:
                out[n, c] = inter / union
    return out


@pytest.fixture
def masks():
    rng = np.random.default_rng(1)
    pred = (rng.random((6, 3, 16, 16)) < 0.3).astype(np.uint8)
    true = (rng.random((6, 3, 16, 16)) < 0.3).astype(np.uint8)
    pred[0, 0] = true[0, 0] = 0  # both empty: a perfect score
    pred[1, 1] = 0  # prediction empty, truth not: zero
    return pred, true


@pytest.mark.parametrize("metric", ["dice", "iou"])
def test_scores_match_numpy_formula(masks, metric):
    pred, true = masks
    expected = numpy_pair(pred, true, metric)
    assert np.allclose(pair_scores(pred, true, metric), expected)
    assert mask_score(pred, true, metric) == pytest.approx(expected.mean())
    assert expected[0, 0] == 1.0 and expected[1, 1] == 0.0


def test_dice_matches_smp_imagewise_reduction_and_iou_relation(masks):
    pred, true = masks
    stats = smp.metrics.get_stats(torch.as_tensor(pred).long(), torch.as_tensor(true).long(), mode="multilabel")
    smp_dice = smp.metrics.f1_score(*stats, reduction="macro-imagewise", zero_division=1.0).item()
    smp_iou = smp.metrics.iou_score(*stats, reduction="macro-imagewise", zero_division=1.0).item()
    assert mask_score(pred, true, "dice") == pytest.approx(smp_dice, abs=1e-6)
    assert mask_score(pred, true, "iou") == pytest.approx(smp_iou, abs=1e-6)
    d, j = pair_scores(pred, true, "dice"), pair_scores(pred, true, "iou")
    assert np.allclose(d, 2 * j / (1 + j))  # dice and IoU of the same pair are tied


def test_binarize_multiclass_drops_background():
    probs = np.zeros((1, 3, 2, 2))
    probs[0, 0, 0, 0] = probs[0, 1, 0, 1] = probs[0, 2, 1, 0] = probs[0, 2, 1, 1] = 1
    m = binarize(probs, "multiclass")
    assert m.shape == (1, 2, 2, 2)
    assert m[0, 0].tolist() == [[0, 1], [0, 0]] and m[0, 1].tolist() == [[0, 0], [1, 1]]


def test_tuned_threshold_beats_default_on_under_confident_probs():
    rng = np.random.default_rng(0)
    true = (rng.random((20, 2, 8, 8)) < 0.4).astype(np.uint8)
    # class 0 is under-confident (positives near 0.35), class 1 is over-confident (negatives near 0.65)
    probs = np.where(true == 1, 0.35, 0.1).astype(np.float64)
    probs[:, 1] = np.where(true[:, 1] == 1, 0.9, 0.65)
    thr, tuned = tune_thresholds(probs, true)
    assert 0.1 <= thr[0] < 0.35 and 0.65 <= thr[1] < 0.9
    assert tuned == pytest.approx(1.0)
    assert mask_score(binarize(probs, "binary", 0.5), true) < 0.8
