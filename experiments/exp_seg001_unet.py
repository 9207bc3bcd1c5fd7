"""exp_seg001_unet: smp Unet over a timm resnet18 (tu-) encoder on the shapes demo, BCE + dice, from scratch.

Hypothesis: a small Unet separates circles from rectangles at 64 px within a few epochs; thresholds
tuned on the OOF masks (cv.json) add a little over 0.5.
Parent: none.
Result: see runs/exp_seg001_unet/cv.json and `kit ledger`.
"""
from kit.segmentation import SegConfig, SegTrainer
from kit import run


class Exp(SegTrainer):
    config = SegConfig(comp="data/demo_seg", arch="Unet", encoder="tu-resnet18", seg_loss="bce_dice",
                       img_size=64, batch_size=16, epochs=8, lr=2e-3, aug="none", tta="flips")


if __name__ == "__main__":
    run(Exp)
