"""Validation schemes side by side: one run's OOF under extra fixed validation views, each scored.

A scheme is the view validation images are seen in: `plain` (the eval pipeline) or an augmentation
preset such as `testlike` (one fixed, seeded view per image). The run's own scheme selects the best
epoch; the extra ones are predicted with the best weights, so every submission carries one CV per
scheme and `kit cvlb` can tell which of them moves with the leaderboard.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .data import ImageDataset, build_loader
from .rundir import RunDir
from .tables import score_oof, write_probs
from .transforms import build_eval_transforms, build_train_transforms


def primary_scheme(cfg) -> str:
    """The scheme the run validates (and selects epochs) with."""
    return "plain" if cfg.valid_aug == "none" else cfg.valid_aug


def extra_schemes(cfg) -> list[str]:
    """The extra schemes `--valid_schemes` asks for, without the primary one."""
    names = [s.strip() for s in str(cfg.valid_schemes).split(",") if s.strip()]
    return [s for s in dict.fromkeys(names) if s != primary_scheme(cfg)]


def run_schemes(cfg) -> list[str]:
    """Every scheme a run scores: its own first, then the extra ones."""
    return [primary_scheme(cfg), *extra_schemes(cfg)]


def scheme_table(cfg, scheme: str) -> str:
    """The fold table (without .parquet) that holds a scheme's OOF: `oof` for the run's own, else oof_<scheme>."""
    return "oof" if scheme == primary_scheme(cfg) else f"oof_{scheme}"


def scheme_dataset(trainer, valid_ds, scheme: str):
    """A fold's validation rows as `scheme` sees them: the run's own dataset, or one fixed seeded view per row."""
    cfg = trainer.config
    if scheme == primary_scheme(cfg):
        return valid_ds
    plain, norm = scheme == "plain", trainer.norm
    transform = (build_eval_transforms(cfg.img_size, norm) if plain
                 else build_train_transforms(scheme, cfg.img_size, norm))
    ds = ImageDataset(valid_ds.paths, valid_ds.targets.numpy(), transform, None if plain else cfg.seed)
    ds.ids, ds.cache = list(valid_ds.ids), valid_ds.cache  # the same rows: the same decoded images
    return ds


def predict_schemes(trainer, valid_ds) -> None:
    """Predict a fold's validation rows under every extra scheme; write fold<k>/oof_<scheme>.parquet."""
    cfg, acc = trainer.config, trainer.accelerator
    for scheme in extra_schemes(cfg):
        ds = scheme_dataset(trainer, valid_ds, scheme)
        loader = acc.prepare_data_loader(build_loader(ds, cfg.batch_size, cfg.num_workers, shuffle=False))
        probs = trainer.predict_loader(loader)
        if acc.is_main_process:
            write_probs(RunDir(trainer.run_dir).table(f"oof_{scheme}", trainer.fold), valid_ds.ids, probs, trainer.comp)
    acc.wait_for_everyone()


def collect_schemes(run_dir: Path, cfg, comp, train_df: pd.DataFrame) -> dict | None:
    """CV per scheme over the folds every scheme has; written to runs/<exp>/schemes.json."""
    run_dir, run = Path(run_dir), RunDir(run_dir)
    extras = extra_schemes(cfg)
    if not extras:
        return None
    names = {s: scheme_table(cfg, s) for s in run_schemes(cfg)}
    folds = sorted(int(d.name[4:]) for d in run_dir.glob("fold*")
                   if d.name[4:].isdigit() and all(run.table(t, d.name[4:]).exists() for t in names.values()))
    if not folds:
        return None
    scores = {}
    for scheme, table in names.items():
        oof = pd.concat([pd.read_parquet(run.table(table, k)) for k in folds], ignore_index=True)
        scores[scheme] = score_oof(comp, train_df, oof)["score"]
    out = {"primary": primary_scheme(cfg), "folds": folds, "cv": scores}
    RunDir(run_dir).write_json("schemes", out)
    return out
