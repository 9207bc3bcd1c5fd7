"""Segmentation experiments: SegTrainer (smp models and losses), probability masks per fold, TTA, fold averaging.

Tables: runs/<exp>/fold<k>/oof_masks.npz and test_masks.npz hold `ids` and float16 `probs`
(N, outputs, H, W) at model resolution; `collect_run` (called by the Trainer's `finish`, which also
writes summary.json and closes the trackers) merges them into runs/<exp>/oof_masks.npz,
test_masks.npz (mean over folds) and cv.json (CV, per-fold scores, OOF-tuned thresholds).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import segmentation_models_pytorch as smp
import torch

from . import folds as folds_mod
from .competition import CompetitionError, load_competition
from .config import Config
from .nodes import check_same_folds
from .preflight import PreflightError, preflight
from .rundir import RunDir
from .seg_data import SegDataset, check_masks, mask_spec, read_masks, write_masks
from .seg_metrics import SEG_METRICS, binarize, drop_small, mask_score, tune_postprocess, tune_thresholds
from .trainer import Trainer
from .tta import parse_views, predict_views

SEG_LOSSES = ("dice", "bce", "bce_dice", "lovasz", "focal")


@dataclass(frozen=True)
class SegConfig(Config):
    # --- segmentation
    arch: str = "Unet"  # smp architecture: Unet, UnetPlusPlus, FPN, DeepLabV3Plus, ...
    encoder: str = "tu-resnet18"  # smp encoder; tu-<name> is any timm model with features_only
    encoder_weights: str = ""  # empty trains from scratch; "imagenet" needs the network
    seg_loss: str = "bce_dice"  # dice | bce | bce_dice | lovasz | focal (smp.losses; bce is cross-entropy for multiclass)
    threshold: float = 0.5  # sigmoid probability that turns a pixel on (cv.json also holds OOF-tuned ones)
    tta: str = "none"  # views averaged for validation and test masks: none, hflip, flips, rot, d4 or a list


class SumLoss(torch.nn.Module):
    """The sum of several losses on the same (logits, target)."""

    def __init__(self, *losses: torch.nn.Module):
        super().__init__()
        self.losses = torch.nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.losses)


def create_seg_loss(name: str, mode: str) -> torch.nn.Module:
    """An smp loss by name for masks of `mode` (binary, multiclass, multilabel); logits in."""
    if name not in SEG_LOSSES:
        raise ValueError(f"--seg_loss={name!r} is not known; choose from {SEG_LOSSES}")
    bce = torch.nn.CrossEntropyLoss() if mode == "multiclass" else smp.losses.SoftBCEWithLogitsLoss()
    make = {"dice": lambda: smp.losses.DiceLoss(mode, from_logits=True), "bce": lambda: bce,
            "lovasz": lambda: smp.losses.LovaszLoss(mode), "focal": lambda: smp.losses.FocalLoss(mode)}
    if name == "bce_dice":
        return SumLoss(bce, make["dice"]())
    return make[name]()


def create_seg_model(cfg: SegConfig, num_outputs: int) -> torch.nn.Module:
    """An smp model (cfg.arch) over an smp or timm (`tu-`) encoder with `num_outputs` channels."""
    return smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights=cfg.encoder_weights or None,
                            in_channels=3, classes=num_outputs)


def activate(logits: torch.Tensor, mode: str) -> torch.Tensor:
    """Logits -> probabilities: softmax over classes for multiclass, else a sigmoid per channel."""
    return logits.float().softmax(1) if mode == "multiclass" else logits.float().sigmoid()


def predict_probs(model: torch.nn.Module, images: torch.Tensor, mode: str, views: list[str]) -> torch.Tensor:
    """Probability masks of a batch, averaged over TTA views after each view is undone on the mask."""
    return predict_views(lambda x: activate(model(x), mode), images, views, "mean", spatial=True,
                         class_dim=1 if mode == "multiclass" else None)


class SegTrainer(Trainer):
    """Trainer for segmentation competitions: smp model, smp loss, masks in, probability masks out."""

    config: SegConfig = SegConfig()

    def setup_data(self) -> None:
        """Load the competition and its mask spec, check images and masks, read (or make) the folds."""
        cfg = self.config
        unsupported = {"valid_schemes": cfg.valid_schemes, "pseudo": cfg.pseudo, "mixup": cfg.mixup,
                       "cutmix": cfg.cutmix, "sampler": cfg.sampler != "shuffle"}
        for key, value in unsupported.items():  # classification features: they read class labels
            if value:
                raise ValueError(f"--{key}: not available for segmentation experiments (SegTrainer)")
        self.comp = load_competition(cfg.comp)
        self.spec = mask_spec(self.comp)
        if self.comp.submission.get("kind") == "rle":
            from .seg_submit import submission_layout
            submission_layout(self.comp)  # a submission that cannot be built fails before training
        if self.comp.metric not in SEG_METRICS:
            raise CompetitionError(f"{self.comp.root}/competition.yaml: metric: {self.comp.metric!r}; a "
                                   f"segmentation competition is scored by one of {SEG_METRICS}")
        with self.accelerator.main_process_first():
            full = preflight(self.comp, include_test=cfg.predict_test)
            problems = check_masks(self.comp, self.spec, full)
            if problems:
                shown = "\n  ".join(problems[:50])
                raise PreflightError(f"pre-flight found {len(problems)} mask problem(s):\n  {shown}")
            if self.accelerator.is_main_process:  # folds.csv made once, as `kit folds` makes it
                folds_mod.load_folds(self.comp, full, cfg.n_folds, cfg.seed, self.task.fold_scheme)
        check_same_folds(self.accelerator, folds_mod.folds_path(self.comp))  # every machine, the same folds
        self.folds = folds_mod.load_folds(self.comp, full, cfg.n_folds, cfg.seed, self.task.fold_scheme)
        full["_line"] = np.arange(len(full)) + 2  # CSV line of each row, for error messages
        self.train_df = full.head(cfg.limit).copy() if cfg.limit else full
        self.views = parse_views(cfg.tta)
        create_seg_loss(cfg.seg_loss, self.spec.mode)  # a bad loss name fails before any work

    def setup_inference(self) -> None:
        """Load the competition and its mask spec only: what predicting test masks needs."""
        self.comp = load_competition(self.config.comp)
        self.spec = mask_spec(self.comp)
        self.views = parse_views(self.config.tta)

    def data_config_model(self) -> str:
        """A timm encoder (tu-<name>) gives its own data config; smp encoders use ImageNet's."""
        enc = self.config.encoder
        return enc[3:] if enc.startswith("tu-") else ""

    def _dataset(self, rows: pd.DataFrame | None, ids: list, split: str) -> SegDataset:
        where = "test" if split == "test" else "train"
        paths = [self.comp.image_path(i, where) for i in ids]
        lines = None if rows is None else rows["_line"].tolist()
        view_seed = self.config.seed if split == "valid" and self.config.valid_aug != "none" else None
        ds = SegDataset(self.comp, self.spec, rows, paths, self.build_transforms(split), lines, view_seed)
        ds.ids = list(ids)
        return ds

    def build_datasets(self, fold: int):
        """(train, valid) image + mask datasets of one fold."""
        parts = [self._dataset(rows, rows[self.comp.id_column].tolist(), split)
                 for split, rows in self.split_fold(fold).items()]
        return parts[0], parts[1]

    def build_test_dataset(self):
        """The test images, with ids, under the eval pipeline."""
        return self._dataset(None, self.comp.read_test()[self.comp.id_column].tolist(), "test")

    def build_model(self) -> torch.nn.Module:
        """An smp model over an smp or timm encoder with one output per mask channel."""
        return create_seg_model(self.config, self.spec.num_outputs)

    def build_loss(self) -> torch.nn.Module:
        """The smp loss named by --seg_loss."""
        return create_seg_loss(self.config.seg_loss, self.spec.mode)

    def train_step(self, batch: dict) -> dict:
        """Forward a batch of images; the loss against its masks."""
        return {"loss": self.loss_fn(self.model(batch["image"]), batch["mask"])}

    def eval_step(self, batch: dict) -> dict:
        """Probability masks (with the --tta views undone and averaged)."""
        return {"probs": predict_probs(self.model, batch["image"], self.spec.mode, self.views)}

    def compute_metrics(self, probs: np.ndarray, targets: np.ndarray) -> dict:
        """Dice and IoU of the thresholded masks; `score` is the competition's metric."""
        pred = binarize(probs, self.spec.mode, self.config.threshold)
        out = {m: mask_score(pred, targets, m) for m in SEG_METRICS}
        return {"score": out[self.comp.metric], **out}

    def write_predictions(self, split: str, ids: list, probs: np.ndarray) -> None:
        """Save one fold's `oof` or `test` probability masks (fold<k>/<split>_masks.npz)."""
        write_masks(RunDir(self.run_dir).masks(split, self.fold), ids, probs)

    def collect_run(self) -> dict:
        """Merge fold masks: OOF CV and tuned thresholds (cv.json), test masks averaged over folds."""
        return collect_seg_run(self)

    def truth_masks(self, ids: list) -> np.ndarray:
        """Train masks of `ids` at model resolution, (N, classes, H, W) 0/1."""
        rows = self.train_df.set_index(self.comp.id_column).loc[list(ids)].reset_index()
        return self._dataset(rows, ids, "valid").targets.numpy()


def collect_seg_run(trainer: SegTrainer) -> dict:
    """cv.json (per-fold and whole-OOF scores, tuned thresholds) and test_masks.npz averaged over folds."""
    run_dir, comp, spec, cfg = trainer.run_dir, trainer.comp, trainer.spec, trainer.config
    run = RunDir(run_dir)
    all_folds = sorted(trainer.folds.fold.unique().tolist())
    done = [k for k in all_folds if run.masks("oof", k).exists()]
    result = {"folds_done": done, "cv": None, "metric": comp.metric, "per_fold": {}}
    ids, parts = [], []
    for k in done:
        fold_ids, fold_probs = read_masks(run.masks("oof", k))
        ids, parts = ids + fold_ids, parts + [(k, fold_probs, trainer.truth_masks(fold_ids))]
    if done:
        oof, truth = np.concatenate([p for _, p, _ in parts]), np.concatenate([t for _, _, t in parts])
        fixed = mask_score(binarize(oof, spec.mode, cfg.threshold), truth, comp.metric)
        result.update(threshold=cfg.threshold, oof_fixed_threshold=fixed, oof_score=fixed)
        result["min_area"] = 0
        if spec.mode != "multiclass":  # softmax masks take the arg-max: nothing to tune
            result["threshold"], result["oof_threshold_only"] = tune_thresholds(oof, truth, comp.metric)
            tuned = tune_postprocess(oof, truth, comp.metric)
            result.update(threshold=tuned["threshold"], min_area=tuned["min_area"], oof_score=tuned["score"])
        # per fold with the post-processing the submission will use, so a partial run's CV describes it
        post = lambda p: drop_small(binarize(p, spec.mode, result["threshold"]), result["min_area"])  # noqa: E731
        result["per_fold"] = {k: mask_score(post(p), t, comp.metric) for k, p, t in parts}
        if len(done) == len(all_folds):
            write_masks(run.masks("oof"), ids, oof)
            result["cv"] = result["oof_score"]
    tests = [run.masks("test", k) for k in done]
    tests = [p for p in tests if p.exists()]
    if tests:
        test_ids, mean = read_masks(tests[0])
        for p in tests[1:]:  # fold averaging of probabilities, never of thresholded masks
            other_ids, other = read_masks(p)
            if other_ids != test_ids:
                raise ValueError(f"{p}: test ids differ from {tests[0]}")
            mean += other
        write_masks(run.masks("test"), test_ids, mean / len(tests))
        result["test_folds"] = [int(p.parent.name[4:]) for p in tests]
    RunDir(run_dir).write_json("cv", result)
    return result
