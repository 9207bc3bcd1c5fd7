"""exp001_baseline: resnet18 from scratch at 32 px, AdamW + cosine, light augmentation.

Hypothesis: a small CNN trained from scratch on the clean train set is a sound first submission,
and its CV will tell how far the shifted test set is from train.
Parent: none.
Result: see runs/exp001_baseline/cv.json and `kit ledger`.
"""
from kit import Config, Trainer, run


class Exp(Trainer):
    config = Config(comp="data/demo", model="resnet18", img_size=32, batch_size=32, epochs=8, lr=2e-3)


if __name__ == "__main__":
    run(Exp)
