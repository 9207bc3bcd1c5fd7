"""Test-only prediction: a run's fold models on the test images, and nothing else.

No train table, no pre-flight of the train images, no folds file, no write into the data folder and no
call to the model hub: the run's own experiment class (its experiment.py snapshot) is opened in
inference mode, its config tells it how to feed the model, and each fold's best.safetensors gives the
weights. `kit predict`, `kit predict-seg`, `kit export`'s timing and the exported notebook all use it.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from pathlib import Path

import numpy as np
import yaml

import torch

from .config import load_config
from .data import build_loader
from .models import load_state_dict
from .progress import progress
from .rundir import RunDir
from .trainer import Trainer
from .transforms import normalize_images
from .tta import auto_max_batch, predict_views


def experiment_class(source: Path | None, class_name: str = "", config_path: Path | None = None) -> type:
    """The Trainer subclass defined in `source` (the named one first); the base trainer of the config's kind else."""
    if source is not None and Path(source).is_file() and Path(source).suffix == ".py":
        spec = importlib.util.spec_from_file_location(f"kit_run_{Path(source).stem}_{abs(hash(str(source)))}", source)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # inspect.getfile(cls) finds the file through sys.modules
        spec.loader.exec_module(module)
        found = [c for _, c in inspect.getmembers(module, inspect.isclass)
                 if issubclass(c, Trainer) and c.__module__ == module.__name__]
        named = [c for c in found if c.__name__ == class_name]
        if named or found:
            return (named or found)[0]
    if config_path is not None and "encoder" in (yaml.safe_load(Path(config_path).read_text()) or {}):
        from .segmentation import SegTrainer
        return SegTrainer
    return Trainer


def load_experiment_class(run_dir: Path) -> type:
    """The Trainer subclass that trained a run: its experiment.py snapshot, else the file lineage names."""
    lineage = RunDir(run_dir).read_json("lineage") or {}
    for src in (run_dir / "experiment.py", Path(lineage.get("experiment_file") or "")):
        if src.is_file() and src.suffix == ".py":
            return experiment_class(src, lineage.get("trainer_class", ""), RunDir(run_dir).config_path)
    return experiment_class(None, "", RunDir(run_dir).config_path)


def open_member(config_path: Path, cls: type, comp: str | Path | None = None, name: str = "", device: str = "",
                **overrides) -> Trainer:
    """A trainer of `cls` in inference mode with the run's saved config; the hub is never asked for weights."""
    if device == "cpu":  # read by Accelerate when its state is first made in this process
        os.environ["ACCELERATE_USE_CPU"] = "true"
    cfg = load_config(config_path, type(cls.config))
    changes = {"pretrained": False, "weights": "", "log_with": "none", "name": name or cfg.name or "run", **overrides}
    if hasattr(cfg, "encoder_weights"):  # every weight is overwritten by best.safetensors
        changes["encoder_weights"] = ""
    if comp:
        changes["comp"] = str(comp)
    return cls(cfg.override(**changes), inference=True)


def run_weights(run_dir: Path) -> dict[int, Path]:
    """Each fold's best weights of a run folder, by fold number."""
    found = RunDir(run_dir).fold_files(RunDir(run_dir).weights)
    if not found:
        raise FileNotFoundError(f"{run_dir}: no fold*/best.safetensors to predict with: train the experiment first")
    return found


def load_fold_model(trainer: Trainer, path: Path):
    """The experiment's own build_model() with a fold's best weights, in eval mode on the trainer's device."""
    model = trainer.build_model()
    model.load_state_dict(load_state_dict(path))
    return model.to(trainer.accelerator.device).eval()


def is_segmentation(trainer: Trainer) -> bool:
    """Whether the trainer predicts probability masks (SegTrainer) rather than class probabilities."""
    return trainer.task.masks


def predict_member(trainer: Trainer, weights: dict[int, Path], views: list[str], method: str = "mean",
                   batch_size: int = 0, num_workers: int = -1, max_batch: int = -1,
                   fold_probs: list | None = None) -> tuple[list, np.ndarray]:
    """(test ids, probabilities averaged over the fold models) with the given TTA views.

    fold_probs, when given a list, receives each fold model's probabilities (classification only).
    """
    cfg = trainer.config
    models = [load_fold_model(trainer, p) for p in weights.values()]
    ds = trainer.build_test_dataset()
    bs, nw = batch_size or cfg.batch_size, cfg.num_workers if num_workers < 0 else num_workers
    if is_segmentation(trainer):  # SegTrainer.eval_step applies its own views and undoes them on the masks
        trainer.views = list(views)
        per_fold = predict_dataset(trainer, models, ds, ["none"], "mean", bs, nw, "test", max_batch)
        total = None
        for p in per_fold:  # as training stores them (float16 per fold) and collect_seg_run averages them
            p = p.astype(np.float16).astype(np.float32)
            total = p if total is None else total + p
        return list(ds.ids), total / len(per_fold)
    per_fold = predict_dataset(trainer, models, ds, views, method, bs, nw, "test", max_batch)
    if fold_probs is not None:  # each fold model's own table, for pseudo-labels that must not mix folds
        fold_probs.extend(per_fold)
    return list(ds.ids), np.mean(per_fold, 0)


def run_views(run_dir: Path, cfg, tta: str = "", method: str = "") -> tuple[list[str], str]:
    """TTA views and their combination: given, else what `kit predict` last used, else the config's (or none)."""
    from .tables import current_predict
    from .tta import parse_views
    info = current_predict(run_dir) or {}
    if not info and RunDir(run_dir).masks("test").exists():
        info = RunDir(run_dir).read_json("predict") or {}  # masks carry no table hash
    views = tta or info.get("views") or info.get("tta") or getattr(cfg, "tta", "") or "none"
    return parse_views(views), method or info.get("method", "mean")


def predict_run_test(run_dir: Path, tta: str = "", method: str = "", batch_size: int = 0, num_workers: int = -1,
                     max_batch: int = -1, device: str = "", out_dir: Path | None = None,
                     fold_tables: bool = False) -> dict:
    """A run folder's test predictions through the test-only path: test.parquet or test_masks.npz in out_dir.

    fold_tables: also each fold model's TTA'd table, fold<k>/test_tta.parquet of the run (what pseudo-labels
    read); with no views there is none, and an older one is removed.
    """
    run_dir, run = Path(run_dir), RunDir(run_dir)
    if not run.has_config():
        raise FileNotFoundError(f"{run.config_path} not found: train the experiment first")
    cls = load_experiment_class(run_dir)
    trainer = open_member(run.config_path, cls, name=run_dir.name, device=device, out_dir=str(run_dir.parent))
    views, method = run_views(run_dir, trainer.config, tta, method)
    weights = run_weights(run_dir)
    per_fold = [] if fold_tables and not is_segmentation(trainer) else None
    ids, probs = predict_member(trainer, weights, views, method, batch_size, num_workers, max_batch, per_fold)
    out = Path(out_dir or run_dir)
    path = write_test(trainer, out, ids, probs)
    written = write_fold_tta(run, trainer.comp, ids, dict(zip(weights, per_fold)) if views != ["none"] else {}) \
        if per_fold is not None else {}
    trainer.accelerator.free_memory()
    return {"views": views, "method": method, "folds": list(weights), "path": str(path), "trainer": trainer,
            "fold_tests": written}


def write_fold_tta(run: RunDir, comp, ids: list, per_fold: dict[int, np.ndarray]) -> dict[str, str]:
    """fold<k>/test_tta.parquet for each fold model given ({fold: path in the run}); stale ones are removed."""
    from .tables import write_probs
    for k, old in run.fold_files(lambda k: run.table("test_tta", k)).items():
        if k not in per_fold:
            old.unlink()
    written = {}
    for k, probs in per_fold.items():
        path = run.table("test_tta", k)
        write_probs(path, ids, probs, comp)
        written[str(k)] = str(path.relative_to(run.path))
    return written


def write_test(trainer: Trainer, out: Path, ids: list, probs: np.ndarray) -> Path:
    """test.parquet (class probabilities) or test_masks.npz (probability masks) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if is_segmentation(trainer):
        from .seg_data import write_masks
        path = RunDir(out).masks("test")
        write_masks(path, ids, probs)
        return path
    from .tables import write_probs
    path = RunDir(out).table("test")
    write_probs(path, ids, probs, trainer.comp)
    return path


def _renorm_heads(trainer: Trainer, probs: torch.Tensor) -> torch.Tensor:
    """Renormalise a geometric mean within each head (multi-head) or over all classes."""
    sizes = trainer.task.groups(probs.shape[1])
    return torch.cat([p / p.sum(1, keepdim=True) if p.shape[1] > 1 else p for p in probs.split(sizes, 1)], 1)


@torch.no_grad()
def predict_dataset(trainer: Trainer, models: list, dataset, views: list[str], method: str, batch_size: int,
                    num_workers: int, desc: str = "predict", max_batch: int = -1) -> list[np.ndarray]:
    """Per model, (rows, classes) probabilities over the views; the data is read once for all models and views.

    max_batch caps the rows of one forward pass (-1: kit.tta.auto_max_batch for the device; 0: no cap).
    """
    acc = trainer.accelerator
    loader = build_loader(dataset, batch_size, num_workers, shuffle=False)
    outs = [[] for _ in models]
    for batch in progress(loader, f"{desc}: {len(models)} model(s) x {len(views)} view(s)"):
        x = normalize_images(batch["image"].to(acc.device), trainer.norm, trainer.config.channels_last)  # uint8 in
        cap = auto_max_batch(x, acc.device) if max_batch < 0 else max_batch
        fn = lambda t: trainer.eval_step({"image": t})["probs"].float()  # noqa: E731  the experiment's own eval_step
        for j, model in enumerate(models):
            with trainer.using_model(model), acc.autocast():
                p = predict_views(fn, x, views, method, class_dim=None, max_batch=cap)
            outs[j].append((_renorm_heads(trainer, p) if method == "gmean" else p).cpu())
    return [torch.cat(o).numpy() for o in outs]


def predict_masks(exp: str, runs: str | Path = "runs", tta: str = "", batch_size: int = 0,
                  device: str = "") -> Path:
    """Predict the test set again from every fold's best weights (TTA, fold mean): runs/<exp>/test_masks.npz.

    Through the test-only path (kit.infer): the run's own experiment class builds the model, and no
    train data is read.
    """
    from .segmentation import SegConfig
    run_dir = Path(runs) / exp
    done = predict_run_test(run_dir, tta or RunDir(run_dir).config(SegConfig).tta, "mean", batch_size, device=device)
    RunDir(run_dir).write_json("predict", {"tta": done["views"], "folds": done["folds"]})
    return RunDir(run_dir).masks("test")
