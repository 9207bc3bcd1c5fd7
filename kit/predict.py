"""`kit predict`: a trained run's fold models x TTA views -> test.parquet, and the same TTA on the OOF rows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import folds as folds_mod
from .infer import load_experiment_class, predict_dataset, predict_run_test
from .models import load_state_dict
from .rundir import RunDir
from .tables import output_columns, score_oof, write_confusion
from .trainer import Trainer
from .tta import COMBINE, parse_views


def open_run(exp: str, runs: str | Path = "runs", **overrides) -> Trainer:
    """A Trainer of runs/<exp> with the run's saved config (no tracker, nothing written)."""
    run_dir, run = Path(runs) / exp, RunDir(Path(runs) / exp)
    if not run.has_config():
        raise FileNotFoundError(f"{run.config_path} not found: train the experiment first")
    cls = load_experiment_class(run_dir)
    config = run.config(type(cls.config))
    config = config.override(name=run_dir.name, out_dir=str(run_dir.parent), log_with="none", pretrained=False,
                             weights="", **overrides)  # every weight is overwritten by best.safetensors
    return cls(config)


def fold_models(trainer: Trainer) -> dict[int, torch.nn.Module]:
    """Each fold's best weights in an eval-mode model on the trainer's device, by fold number."""
    found = {}
    for k in sorted(trainer.folds.fold.unique().tolist()):
        path = trainer.run_dir / f"fold{k}" / "best.safetensors"
        if path.exists():
            model = trainer.build_model()
            model.load_state_dict(load_state_dict(path))
            found[k] = model.to(trainer.accelerator.device).eval()
    if not found:
        raise FileNotFoundError(f"{trainer.run_dir}: no fold*/best.safetensors to predict with")
    return found


def predict_run(exp: str, tta: str = "none", method: str = "mean", runs: str | Path = "runs", batch_size: int = 0,
                num_workers: int = -1, max_batch: int = -1, oof: bool = True) -> dict:
    """Write runs/<exp>/test.parquet (fold models x views) and oof_tta.parquet; return CV without and with TTA.

    The test table comes from the test-only path (kit.infer); oof=False stops there, with no train data read.
    """
    views = parse_views(tta)
    if method not in COMBINE:
        raise ValueError(f"--method={method!r}: choose one of {COMBINE}")
    run_dir = Path(runs) / exp
    done = predict_run_test(run_dir, ",".join(views), method, batch_size, num_workers, max_batch)
    comp = done["trainer"].comp
    if not oof:
        info = {"views": views, "method": method, "folds": done["folds"], "all_folds": False, "metric": comp.metric,
                "cv": None, "cv_tta": None, "oof_tta": None, "test_sha256": folds_mod.file_hash(run_dir / "test.parquet")}
        RunDir(run_dir).write_json("predict", info)
        return {**info, "test": str(run_dir / "test.parquet")}
    overrides = {"batch_size": int(batch_size)} if batch_size else {}
    if num_workers >= 0:
        overrides["num_workers"] = int(num_workers)
    trainer = open_run(exp, runs, **overrides)
    _check_folds_unchanged(trainer, run_dir)
    cfg = trainer.config
    models = fold_models(trainer)
    # OOF: each fold model on its own validation rows, so CV says whether the views help
    oof_parts, plain_parts = [], []
    for k, model in models.items():
        valid_ds = trainer.build_datasets(k)[1]
        [probs] = predict_dataset(trainer, [model], valid_ds, views, method, cfg.batch_size, cfg.num_workers,
                                   f"fold {k} OOF", max_batch)
        part = pd.DataFrame(probs.astype(np.float32), columns=output_columns(comp))
        part.insert(0, comp.id_column, [str(i) for i in valid_ds.ids])
        oof_parts.append(part)
        plain = run_dir / f"fold{k}" / "oof.parquet"
        if plain.exists():
            plain_parts.append(pd.read_parquet(plain))
    oof_tta = pd.concat(oof_parts, ignore_index=True)
    oof_tta.to_parquet(run_dir / "oof_tta.parquet", index=False)
    scored = score_oof(comp, trainer.train_df, oof_tta)
    plain = pd.concat(plain_parts, ignore_index=True) if len(plain_parts) == len(models) else None
    cv = score_oof(comp, trainer.train_df, plain)["score"] if plain is not None else None
    all_folds = len(models) == trainer.folds.fold.nunique()
    if all_folds:
        write_confusion(run_dir, comp, trainer.train_df, oof_tta, "confusion_tta.png")
    info = {"views": views, "method": method, "folds": list(models), "all_folds": all_folds, "metric": comp.metric,
            "cv": cv, "cv_tta": scored["score"], "oof_tta": "oof_tta.parquet",
            "test_sha256": folds_mod.file_hash(run_dir / "test.parquet")}  # ties this record to that test table
    run = RunDir(run_dir)
    run.write_json("predict", info)
    cv_json = run.read_json("cv")
    if cv_json is not None:  # per-class F1 with the views, beside the plain ones
        cv_json["tta"] = {**{k: info[k] for k in ("views", "method", "cv_tta")},
                          "per_class_f1": scored["per_class_f1"]}
        run.write_json("cv", cv_json)
    info.update(test=str(run_dir / "test.parquet"), oof_tta=str(run_dir / "oof_tta.parquet"))
    trainer.accelerator.free_memory()
    return info


def _check_folds_unchanged(trainer: Trainer, run_dir: Path) -> None:
    """Refuse when folds.csv changed since training: the fold models' validation rows would be wrong."""
    recorded = (RunDir(run_dir).read_json("lineage") or {}).get("folds_hash")
    path = folds_mod.folds_path(trainer.comp)
    if recorded and path.exists() and folds_mod.file_hash(path) != recorded:
        raise ValueError(f"{path} changed since {run_dir.name} was trained (lineage.json folds_hash): its fold models "
                         "would be scored on rows they trained on; retrain, or restore the folds file")

