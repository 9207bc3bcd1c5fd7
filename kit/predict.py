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
from .schemes import run_schemes, scheme_dataset, scheme_table
from .tables import output_columns, score_oof, write_confusion
from .trainer import Trainer
from .tta import COMBINE, parse_views
from .tta_judge import judge_tta, recommend_scheme


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
        path = RunDir(trainer.run_dir).weights(k)
        if path.exists():
            model = trainer.build_model()
            model.load_state_dict(load_state_dict(path))
            found[k] = model.to(trainer.accelerator.device).eval()
    if not found:
        raise FileNotFoundError(f"{trainer.run_dir}: no fold*/best.safetensors to predict with")
    return found


def predict_run(exp: str, tta: str = "none", method: str = "mean", runs: str | Path = "runs", batch_size: int = 0,
                num_workers: int = -1, max_batch: int = -1, oof: bool = True, keep: str = "auto",
                ledger: str | Path | None = None) -> dict:
    """Write runs/<exp>/test.parquet (fold models x views) and the OOF with the same views under every validation
    scheme; return CV without and with TTA per scheme, and whether the views are kept.

    The scheme that decides is the one `kit cvlb` recommends from the ledger at `ledger` (else kit adval's view,
    else the run's own): keep=auto drops views that lower its CV and predicts the test set again without them.
    The test table comes from the test-only path (kit.infer); oof=False stops there, with no train data read.
    """
    views = parse_views(tta)
    if method not in COMBINE:
        raise ValueError(f"--method={method!r}: choose one of {COMBINE}")
    judge_tta({"x": {"cv": None, "cv_tta": None}}, "x", "", keep)  # a bad --keep_tta fails before any work
    run_dir, run = Path(runs) / exp, RunDir(Path(runs) / exp)
    done = predict_run_test(run_dir, ",".join(views), method, batch_size, num_workers, max_batch, fold_tables=True)
    comp = done["trainer"].comp
    if not oof:
        info = {"views": views, "method": method, "folds": done["folds"], "all_folds": False, "metric": comp.metric,
                "cv": None, "cv_tta": None, "oof_tta": None, "fold_tests": done["fold_tests"],
                "test_sha256": folds_mod.file_hash(run.table("test"))}
        run.write_json("predict", info)
        return {**info, "test": str(run.table("test"))}
    overrides = {"batch_size": int(batch_size)} if batch_size else {}
    if num_workers >= 0:
        overrides["num_workers"] = int(num_workers)
    trainer = open_run(exp, runs, **overrides)
    _check_folds_unchanged(trainer, run_dir)
    models = fold_models(trainer)
    scores, primary_scored = score_schemes(trainer, run, models, views, method, max_batch)
    names = run_schemes(trainer.config)
    decision = judge_tta(scores, *recommend_scheme(comp, names, ledger), keep)
    if views != ["none"] and not decision["kept"]:  # the test table, and the fold tables, without the views
        done = predict_run_test(run_dir, "none", method, batch_size, num_workers, max_batch, fold_tables=True)
    kept = decision["kept"] or views == ["none"]
    primary = scores[names[0]]
    all_folds = len(models) == trainer.folds.fold.nunique()
    if all_folds and kept:
        write_confusion(run_dir, comp, trainer.train_df, pd.read_parquet(run.table("oof_tta")), "confusion_tta.png")
    info = {"views": views if kept else ["none"], "method": method, "folds": list(models), "all_folds": all_folds,
            "metric": comp.metric, "cv": primary["cv"], "cv_tta": primary["cv_tta"],
            "oof_tta": run.table("oof_tta").name if kept else None, "tta_views": views, "primary": names[0],
            "schemes": scores, "cv_schemes": {n: s["cv_tta" if kept else "cv"] for n, s in scores.items()},
            **decision, "kept": kept, "fold_tests": done["fold_tests"],
            "test_sha256": folds_mod.file_hash(run.table("test"))}  # ties this record to that test table
    run.write_json("predict", info)
    cv_json = run.read_json("cv")
    if cv_json is not None:  # per-class F1 with the views, beside the plain ones
        cv_json["tta"] = {"views": views, "method": method, "cv_tta": primary["cv_tta"],
                          "per_class_f1": primary_scored["per_class_f1"]}
        run.write_json("cv", cv_json)
    info.update(test=str(run.table("test")), oof_tta=str(run.table("oof_tta")) if kept else None)
    trainer.accelerator.free_memory()
    return info


def score_schemes(trainer: Trainer, run: RunDir, models: dict, views: list[str], method: str,
                  max_batch: int) -> tuple[dict, dict]:
    """({scheme: {cv, cv_tta}}, the run's own scheme scored with TTA): each fold model on its own validation rows
    under every scheme, with the views; oof_tta.parquet (the run's own scheme) and oof_tta_<scheme>.parquet."""
    cfg, comp = trainer.config, trainer.comp
    names = run_schemes(cfg)
    parts = {n: [] for n in names}
    for k, model in models.items():
        valid_ds = trainer.build_datasets(k)[1]
        for name in names:
            ds = scheme_dataset(trainer, valid_ds, name)
            [probs] = predict_dataset(trainer, [model], ds, views, method, cfg.batch_size, cfg.num_workers,
                                       f"fold {k} OOF {name}", max_batch)
            part = pd.DataFrame(probs.astype(np.float32), columns=output_columns(comp))
            part.insert(0, comp.id_column, [str(i) for i in valid_ds.ids])
            parts[name].append(part)
    scores, primary_scored = {}, None
    for name in names:
        oof_tta = pd.concat(parts[name], ignore_index=True)
        oof_tta.to_parquet(run.table(scheme_table(cfg, name).replace("oof", "oof_tta", 1)), index=False)
        scored = score_oof(comp, trainer.train_df, oof_tta)
        primary_scored = primary_scored or scored
        plain = [run.table(scheme_table(cfg, name), k) for k in models]
        cv = score_oof(comp, trainer.train_df, pd.concat(map(pd.read_parquet, plain), ignore_index=True))["score"] \
            if all(p.exists() for p in plain) else None
        scores[name] = {"cv": cv, "cv_tta": scored["score"]}
    return scores, primary_scored


def _check_folds_unchanged(trainer: Trainer, run_dir: Path) -> None:
    """Refuse when folds.csv changed since training: the fold models' validation rows would be wrong."""
    recorded = (RunDir(run_dir).read_json("lineage") or {}).get("folds_hash")
    path = folds_mod.folds_path(trainer.comp)
    if recorded and path.exists() and folds_mod.file_hash(path) != recorded:
        raise ValueError(f"{path} changed since {run_dir.name} was trained (lineage.json folds_hash): its fold models "
                         "would be scored on rows they trained on; retrain, or restore the folds file")

