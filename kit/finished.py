"""A finished fold: marked done once its weights and tables are written, skipped on relaunch, trimmed to best weights.

A `--fold=all` run killed in fold k is relaunched with the same command: folds with a valid
fold<j>/done.json are neither trained nor predicted again, fold k resumes from its newest complete
checkpoint (kit/resume.py), the rest start. Once a fold is done its full-state checkpoints (model,
optimizer, RNGs: hundreds of MB each for real models) are deleted; `best.safetensors`, the tables and
the logs stay. `--keep_fold_ckpts` keeps them.
"""
from __future__ import annotations

import shutil
import time

from .data import build_loader
from .lineage import record_fold_end
from .resume import adopt_backoff, checkpoint_root, config_changes
from .rundir import RunDir
from .schemes import extra_schemes, predict_schemes


def finished_summary(trainer) -> dict | None:
    """The fold's record when it finished under these settings and every file it wrote is there; else None."""
    cfg, acc, fold = trainer.config, trainer.accelerator, trainer.fold
    if cfg.resume != "auto":  # never: train again; a named checkpoint: resume from it
        return None
    done = RunDir(trainer.run_dir).read_done(fold)
    if done is None:
        return None
    saved = done.get("config", {})
    adopt_backoff(trainer, saved)
    cfg = trainer.config
    why = config_changes(saved, cfg.to_dict())
    if not why and cfg.predict_test and not saved.get("predict_test"):
        why = "test predictions are asked for now"
    if not why and not set(extra_schemes(cfg)) <= set(done.get("schemes", [])):
        why = f"validation schemes {extra_schemes(cfg)} are asked for now"
    missing = [f for f in done.get("files", []) if not (trainer.fold_dir / f).exists()]
    if not why and missing:
        why = f"{trainer.fold_dir / missing[0]} is missing"
    if why:
        acc.print(f"fold {fold}: finished earlier, but {why}: it runs again")
        return None
    return done


def skip_finished(trainer) -> dict | None:
    """Before a fold: its summary when it has finished (nothing trained or predicted), else None.

    A fold that runs again loses its done.json first, so a kill halfway never leaves it looking finished.
    """
    acc = trainer.accelerator
    done = finished_summary(trainer)
    acc.wait_for_everyone()  # every process has read done.json before rank 0 may remove it
    if done is None:
        if acc.is_main_process:
            RunDir(trainer.run_dir).done_path(trainer.fold).unlink(missing_ok=True)
        return None
    summary = done["summary"]
    acc.print(f"fold {trainer.fold}: finished earlier (best {trainer.comp.metric} {summary['score']:.4f} at epoch "
              f"{summary['best_epoch']}): kept, not trained or predicted again (--resume=never trains it again)")
    if acc.is_main_process and not done["config"].get("keep_fold_ckpts"):
        drop_checkpoints(trainer)  # a kill between done.json and the clean-up left them; ones kept on purpose stay
    tracking = trainer.tracking  # the same tracker run goes on, its steps growing across folds as uninterrupted
    tracking.continued = True
    if not tracking.summary:  # every fold done: summary.json is written again from what it held
        tracking.summary.update(RunDir(trainer.run_dir).read_json("summary") or {})
    tracking.offset = tracking.summary.get("_step", tracking.offset) + done.get("steps", 0)
    tracking.summary["_step"] = tracking.offset
    acc.wait_for_everyone()
    return summary


def end_fold(trainer, valid_ds) -> dict:
    """After training: log the fold, predict extra schemes and the test set with the best weights, mark it done,
    drop its full-state checkpoints; return its summary."""
    cfg, acc = trainer.config, trainer.accelerator
    trainer.tracking.log_fold_end(valid_ds)
    predict_schemes(trainer, valid_ds)
    if cfg.predict_test:
        test_ds = trainer.build_test_dataset()
        loader = acc.prepare_data_loader(build_loader(test_ds, cfg.batch_size, cfg.num_workers, shuffle=False))
        probs = trainer.predict_loader(loader)
        if acc.is_main_process:
            trainer.write_predictions("test", test_ds.ids, probs)
    acc.wait_for_everyone()
    summary = {"fold": trainer.fold, "best_epoch": trainer.best_epoch, "score": trainer.best}
    if acc.is_main_process:
        mark_done(trainer, summary)
        if not cfg.keep_fold_ckpts:
            drop_checkpoints(trainer)
    acc.wait_for_everyone()
    return summary


OUTPUTS = (".safetensors", ".parquet", ".npz")  # weights and prediction tables: a relaunch checks they are all there


def mark_done(trainer, summary: dict) -> None:
    """Write fold<k>/done.json last: the summary, the config, and the weights and tables the fold wrote."""
    cfg, fold_dir = trainer.config, trainer.fold_dir
    files = sorted(p.name for p in fold_dir.iterdir() if p.is_file() and p.suffix in OUTPUTS)
    record = {"summary": summary, "steps": trainer.step, "config": cfg.to_dict(), "schemes": extra_schemes(cfg),
              "files": files, "finished_at": time.time()}
    RunDir(trainer.run_dir).write_done(trainer.fold, record)
    record_fold_end(trainer, summary)


def drop_checkpoints(trainer) -> None:
    """Delete a finished fold's full-state checkpoints (its best weights are in best.safetensors)."""
    root = checkpoint_root(trainer)
    if root.exists():
        shutil.rmtree(root)
        trainer.accelerator.print(f"fold {trainer.fold}: done; removed {root} (best.safetensors kept; "
                                  f"--keep_fold_ckpts=true keeps checkpoints)")
