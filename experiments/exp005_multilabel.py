"""exp005_multilabel: the digits' properties (even, big, prime, loop), any number per image.

Hypothesis: the baseline recipe carries over to a multilabel competition unchanged but for the loss:
one sigmoid per property trained with BCE, per-class thresholds tuned on the OOF for the submission.
Parent: exp001_baseline (same model, size and schedule), on `kit demo-data --task=multilabel`.
Result: see README (CV micro-F1 / public / private).
"""
from kit import Config, Trainer, run


class Exp(Trainer):
    config = Config(comp="data/demo_multilabel", model="resnet18", img_size=32, batch_size=32, epochs=8, lr=2e-3,
                    loss="bce")  # independent classes: a sigmoid each (asymmetric also works)


if __name__ == "__main__":
    run(Exp)
