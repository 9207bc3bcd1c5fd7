"""Each loss against an independent reference (scikit-learn or the formula in numpy), then trained a few steps."""
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, log_loss
from sklearn.utils.class_weight import compute_class_weight

from kit.losses import LOSSES, LossError, MultiHeadLoss, balanced_class_weights, create_loss

# a hand example: 6 rows, 3 classes, every class present
LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [-0.5, 0.2, 2.2], [1.0, 1.0, 0.0],
                   [0.3, -0.2, 0.9], [2.5, -1.0, 0.4]])
Y = np.array([0, 1, 2, 1, 0, 0])
C = 3


def softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def loss_of(fn, logits=LOGITS, y=Y):
    return fn(torch.tensor(logits, dtype=torch.float32), torch.tensor(y)).item()


P, ONEHOT = softmax(LOGITS), np.eye(C)[Y]


def test_ce_is_sklearn_log_loss_and_smoothing_is_the_formula():
    assert loss_of(create_loss("ce", C)) == pytest.approx(log_loss(Y, P), rel=1e-5)
    s = 0.1
    smooth = ((1 - s) * -np.log(P[np.arange(6), Y]) + s / C * -np.log(P).sum(1)).mean()
    assert loss_of(create_loss("ce", C, smoothing=s)) == pytest.approx(smooth, rel=1e-5)
    assert loss_of(create_loss("smooth_ce", C, smoothing=s)) == pytest.approx(smooth, rel=1e-5)


def test_weighted_ce_matches_sklearn_weights_and_weighted_log_loss():
    counts = [50, 10, 25]
    w = balanced_class_weights(counts).numpy()
    labels = np.repeat(np.arange(C), counts)
    np.testing.assert_allclose(w, compute_class_weight("balanced", classes=np.arange(C), y=labels), rtol=1e-6)
    fn = create_loss("weighted_ce", C, class_counts=counts)
    assert loss_of(fn) == pytest.approx(log_loss(Y, P, sample_weight=w[Y]), rel=1e-5)
    assert loss_of(fn, y=ONEHOT) == pytest.approx(log_loss(Y, P, sample_weight=w[Y]), rel=1e-5)  # soft path
    with pytest.raises(LossError, match="empty class"):
        balanced_class_weights([3, 0, 2])


def test_focal_is_the_formula_and_gamma_zero_is_log_loss():
    g = 2.0
    ref = -((1 - P[np.arange(6), Y]) ** g * np.log(P[np.arange(6), Y])).mean()
    assert loss_of(create_loss("focal", C, gamma=g)) == pytest.approx(ref, rel=1e-5)
    assert loss_of(create_loss("focal", C, gamma=0.0)) == pytest.approx(log_loss(Y, P), rel=1e-5)


def test_asymmetric_single_label_is_the_asl_formula():
    eps, gp, gn = 0.1, 1, 4
    w = np.where(ONEHOT == 1, (1 - P) ** gp, P ** gn)  # target: (1-p)^g+, others: p^g-
    t = ONEHOT * (1 - eps) + eps / C
    ref = -(t * w * np.log(P)).sum(1).mean()
    assert loss_of(create_loss("asymmetric", C, smoothing=eps)) == pytest.approx(ref, rel=1e-5)


def test_soft_f1_on_confident_logits_is_one_minus_sklearn_macro_f1():
    pred = np.array([0, 1, 2, 0, 2, 1])
    logits = 60.0 * np.eye(C)[pred]
    want = 1 - f1_score(Y, pred, average="macro")
    assert loss_of(create_loss("soft_f1", C), logits=logits) == pytest.approx(want, abs=1e-5)


def test_bce_is_the_formula_on_one_hot_targets():
    s = 1 / (1 + np.exp(-LOGITS))
    ref = -(ONEHOT * np.log(s) + (1 - ONEHOT) * np.log(1 - s)).mean()
    assert loss_of(create_loss("bce", C)) == pytest.approx(ref, rel=1e-5)


def test_mixed_targets_use_soft_target_cross_entropy_and_asymmetric_refuses():
    t = 0.7 * ONEHOT + 0.3 * np.eye(C)[[1, 2, 0, 0, 1, 2]]
    ref = -(t * np.log(P)).sum(1).mean()
    fn = create_loss("ce", C, soft_targets=True)
    assert type(fn).__name__ == "SoftTargetCrossEntropy"
    assert loss_of(fn, y=t) == pytest.approx(ref, rel=1e-5)
    focal_ref = -(t * (1 - P) ** 2 * np.log(P)).sum(1).mean()
    assert loss_of(create_loss("focal", C, soft_targets=True), y=t) == pytest.approx(focal_ref, rel=1e-5)
    with pytest.raises(LossError, match="--mixup=0 --cutmix=0"):
        create_loss("asymmetric", C, soft_targets=True)
    with pytest.raises(LossError, match="choose from"):
        create_loss("dice", C)


def test_multihead_loss_is_the_sum_of_head_log_losses():
    logits = np.concatenate([LOGITS, LOGITS[:, :2] * 0.5], 1)  # heads of 3 and 2 classes
    y2 = np.array([0, 1, 1, 0, 1, 0])
    fn = MultiHeadLoss({"a": create_loss("ce", 3), "b": create_loss("ce", 2)}, [3, 2])
    got = fn(torch.tensor(logits, dtype=torch.float32), torch.tensor(np.stack([Y, y2], 1))).item()
    assert got == pytest.approx(log_loss(Y, P) + log_loss(y2, softmax(LOGITS[:, :2] * 0.5)), rel=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_trains_a_tiny_model(name):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, :4] @ torch.randn(4, 4, generator=g)).argmax(1)
    counts = torch.bincount(y, minlength=4).tolist()
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    fn = create_loss(name, 4, class_counts=counts)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss = fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], (name, losses[0], losses[-1])
