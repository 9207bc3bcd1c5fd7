"""The Trainer: every Accelerate call of the kit lives here. Override the public build_*/step methods."""
from __future__ import annotations

import contextlib
import inspect
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from safetensors.torch import load_file, save_file
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from tqdm.auto import tqdm

from . import folds as folds_mod
from .checkpoint import write_aside
from .competition import load_competition
from .config import Config
from .data import ImageDataset, build_loader
from .ema import create_ema, eval_module
from .finetune import param_groups, set_backbone_trainable
from .finished import end_fold, skip_finished
from .image_cache import attach_cache
from .lineage import write_lineage
from .memory import compile_in_place, set_channels_last
from .metrics import LOWER_IS_BETTER, is_better
from .mixing import create_mixer, mix_batch
from .models import create_model
from .nodes import check_run_dir_shared, check_same_folds
from .preflight import preflight
from .preprocess import resolve_norm
from .progress import progress
from .resume import LoopState, begin_epoch, check_loss, end_epoch, end_step, find_resume, restore_run, state_alias
from .rundir import RunDir
from .sampling import create_sampler
from .tasks import task_of
from .schemes import collect_schemes
from .tables import write_probs
from .tracking import Tracking, parse_trackers, sweep_run_name
from .transforms import build_eval_transforms, build_train_transforms, normalize_batch


class Trainer:
    """Train and evaluate one experiment on one or all folds of a competition."""

    config: Config = Config()
    # the loop's counters live in one LoopState (saved and restored by kit/resume.py); these names read it
    epoch, step, best, best_epoch = (state_alias(name) for name in ("epoch", "step", "best", "best_epoch"))

    def __init__(self, config: Config | None = None, inference: bool = False):
        self.config = cfg = config if config is not None else type(self).config
        # mean/std/interpolation of every pipeline: the model's unless set, recorded in config.yaml
        self.norm = resolve_norm(self.data_config_model(), cfg.mean, cfg.std, cfg.interpolation)
        self.config = cfg = cfg.override(**self.norm.as_fields())
        self.name = cfg.name or sweep_run_name(Path(inspect.getfile(type(self))).stem)
        self.run_dir = Path(cfg.out_dir) / self.name
        self.accelerator = Accelerator(
            gradient_accumulation_steps=cfg.grad_accum,
            log_with=parse_trackers(cfg.log_with) or None,
            project_dir=str(self.run_dir),
            # a frozen backbone gets no gradients; DDP must be told to expect parameters without one
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.freeze_epochs > 0)],
            # pinned uint8 batches copy to the GPU while it still computes (no effect on the CPU)
            dataloader_config=DataLoaderConfiguration(non_blocking=True),
        )
        self.fold = self.ema = self.mixer = self.resume_dir = None
        self.state = LoopState()
        self.tracking = Tracking(self)
        if inference:
            self.setup_inference()
        else:
            self.setup_data()
            check_run_dir_shared(self.accelerator, self.run_dir)  # several machines: one run folder they all see

    @property
    def task(self):
        """What differs between competition kinds (kit/tasks.py), for this trainer's competition."""
        return task_of(self.comp)

    # ------------------------------------------------------------------ override points
    def setup_data(self) -> None:
        """Load the competition, run the pre-flight checks, read (or make) the folds."""
        cfg = self.config
        self.comp = load_competition(cfg.comp)
        acc = self.accelerator
        with acc.main_process_first():  # rank 0 writes folds and the scan cache first
            full = preflight(self.comp, include_test=cfg.predict_test)
            if acc.is_main_process:  # the only process that may create folds.csv (once per run, not per machine)
                folds_mod.load_folds(self.comp, full, cfg.n_folds, cfg.seed, self.task.fold_scheme)
        check_same_folds(acc, folds_mod.folds_path(self.comp))
        self.folds = folds_mod.load_folds(self.comp, full, cfg.n_folds, cfg.seed, self.task.fold_scheme)
        self.train_df = folds_mod.limit_rows(full, self.comp.target, cfg.limit) if cfg.limit else full
        self.class_index = {c: i for i, c in enumerate(self.comp.classes)}

    def setup_inference(self) -> None:
        """Load the competition only: what predicting the test images needs (no train data, nothing written)."""
        self.comp = load_competition(self.config.comp)
        self.class_index = {c: i for i, c in enumerate(self.comp.classes)}

    def data_config_model(self) -> str:
        """The timm model whose data config gives mean/std/interpolation when the config leaves them empty."""
        return self.config.model

    def build_transforms(self, split: str):
        """Albumentations pipeline for 'train', 'valid' or 'test': uint8 out, normalised on the device as the model
        expects (`self.norm`)."""
        cfg = self.config
        if split == "train":
            return build_train_transforms(cfg.aug, cfg.img_size, self.norm, normalize=False)
        if split == "valid" and cfg.valid_aug != "none":
            return build_train_transforms(cfg.valid_aug, cfg.img_size, self.norm, normalize=False)
        return build_eval_transforms(cfg.img_size, self.norm, normalize=False)

    def split_fold(self, fold: int) -> dict[str, pd.DataFrame]:
        """{'train': rows of the other folds, 'valid': rows of `fold`} of the train table."""
        df = self.train_df.merge(self.folds, on=self.comp.id_column, how="left")
        train, valid = df[df.fold != fold], df[df.fold == fold]
        return {"train": train.reset_index(drop=True), "valid": valid.reset_index(drop=True)}

    def build_datasets(self, fold: int):
        """(train, valid) datasets of one fold."""
        parts = []
        for split, rows in self.split_fold(fold).items():
            paths = [self.comp.image_path(i, "train") for i in rows[self.comp.id_column]]
            targets = self.task.encode_targets(rows, self.comp.train_csv)  # (N,), (N, heads) or (N, classes)
            view_seed = self.config.seed if split == "valid" and self.config.valid_aug != "none" else None
            ds = ImageDataset(paths, targets, self.build_transforms(split), view_seed)
            ds.ids = rows[self.comp.id_column].tolist()
            parts.append(ds)
        if self.config.pseudo:
            from .pseudo import add_pseudo_rows
            train_ids = set(self.train_df[self.comp.id_column])
            parts[0], self.soft_targets = add_pseudo_rows(parts[0], self.config.pseudo, self.comp, fold, train_ids)
        return parts[0], parts[1]

    def build_test_dataset(self):
        """The test set, with ids, under the eval pipeline."""
        ids = self.comp.read_test()[self.comp.id_column].tolist()
        ds = ImageDataset([self.comp.image_path(i, "test") for i in ids], None, self.build_transforms("test"))
        ds.ids = ids
        return ds

    def build_model(self) -> torch.nn.Module:
        """A timm model sized to the competition's classes."""
        cfg = self.config
        return create_model(cfg.model, self.comp.num_classes, cfg.pretrained, cfg.weights, cfg.drop_rate)

    def build_loss(self) -> torch.nn.Module:
        """The loss named by --loss (one per head for multihead; soft targets when mixing)."""
        return self.task.build_loss(self.config, self.train_df)

    def build_mixer(self):
        """MixUp/CutMix (timm's Mixup) applied to each train batch, or None."""
        cfg = self.config
        if cfg.mixup > 0 or cfg.cutmix > 0:
            self.task.check_mixing()
        return create_mixer(cfg.mixup, cfg.cutmix, cfg.mix_prob, cfg.smoothing, self.comp.num_classes, cfg.batch_size)

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """Optimizer through timm (weight decay skips biases and norms; the backbone may learn slower)."""
        cfg = self.config
        params = model if cfg.backbone_lr_scale == 1 else param_groups(model, cfg.weight_decay, cfg.backbone_lr_scale)
        return create_optimizer_v2(params, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def build_scheduler(self, optimizer, updates_per_epoch: int):
        """LR schedule through timm, stepped once per optimizer update (plateau: once per epoch, on the metric)."""
        cfg = self.config
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
            warmup_lr=cfg.lr / 100, min_lr=cfg.min_lr, step_on_epochs=cfg.sched == "plateau",
            updates_per_epoch=updates_per_epoch, decay_epochs=cfg.decay_epochs, decay_rate=cfg.decay_rate,
            patience_epochs=cfg.plateau_patience, plateau_mode="min" if self.comp.metric in LOWER_IS_BETTER else "max",
        )
        return scheduler

    def train_step(self, batch: dict) -> dict:
        """Forward one batch; return a dict with the `loss` to back-propagate."""
        logits = self.model(batch["image"])
        return {"loss": self.loss_fn(logits, batch["target"])}

    def eval_step(self, batch: dict) -> dict:
        """Forward one batch without gradients; return class `probs`."""
        return {"probs": self.task.output_probs(self.model(batch["image"]).float())}

    def compute_metrics(self, probs: np.ndarray, targets: np.ndarray) -> dict:
        """Validation metrics; `score` is the competition metric that selects the best epoch."""
        return self.task.compute_metrics(probs, targets)

    def backward_step(self, loss: torch.Tensor) -> None:
        """Back-propagate `loss` (Accelerate scales it for fp16 and gradient accumulation)."""
        self.accelerator.backward(loss)

    def optimizer_step(self, batch: dict) -> None:
        """Clip the gradients at an update, then step the optimizer; override for two-step updates (SAM)."""
        acc, clip = self.accelerator, self.config.clip_grad
        if acc.sync_gradients and clip > 0:
            acc.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()

    def scheduler_step(self) -> None:
        """Advance the LR schedule to the current update count (called once per applied update)."""
        self.scheduler.step_update(num_updates=self.step)

    def write_predictions(self, split: str, ids: list, probs: np.ndarray) -> None:
        """Save one fold's `oof` or `test` probabilities keyed by id (fold<k>/<split>.parquet)."""
        write_probs(RunDir(self.run_dir).table(split, self.fold), ids, probs, self.comp)

    # ------------------------------------------------------------------ public entry points
    def fit(self, fold: int) -> dict:
        """Train one fold; keep the best weights by the competition metric; write OOF (and test) tables.

        A fold that finished earlier under the same settings is skipped (kit/finished.py)."""
        cfg, acc = self.config, self.accelerator
        set_seed(cfg.seed)
        self.fold, self.fold_dir = fold, self.run_dir / f"fold{fold}"
        finished = skip_finished(self)  # kit/finished.py: a fold done earlier is neither trained nor predicted again
        if finished is not None:
            return finished
        self.resume_dir = find_resume(self)  # None: a fresh start
        cfg = self.config  # the checks above may take an earlier --auto_batch back-off (kit/resume.py adopt_backoff)
        self._start_run_dir()
        train_ds, valid_ds = self.build_datasets(fold)
        for part, ds in (("train", train_ds), ("valid", valid_ds)):
            why_not = attach_cache(ds, cfg.image_cache)  # kit/image_cache.py
            if why_not:
                acc.print(f"fold {fold}: {part} images are not cached ({why_not}): decoded every epoch")
        self.valid_ids = valid_ds.ids
        model = set_channels_last(self.build_model(), cfg.channels_last)
        self.ema = create_ema(model, cfg.ema_decay, acc.device)  # a plain copy, before compile and Accelerate wrap
        self.model = compile_in_place(model) if cfg.compile else model
        # Soft pseudo-labels need the soft-target loss whatever the experiment's own loss is.
        soft = getattr(self, "soft_targets", False)
        self.loss_fn, self.mixer = SoftTargetCrossEntropy() if soft else self.build_loss(), self.build_mixer()
        optimizer = self.build_optimizer(self.model)
        sampler = create_sampler(cfg.sampler, train_ds, self.comp, cfg.seed)
        # Mixup needs even batches; BatchNorm cannot train on a last batch of one row (pseudo rows make any size).
        drop_last = self.mixer is not None or len(sampler if sampler is not None else train_ds) % cfg.batch_size == 1
        train_loader = build_loader(train_ds, cfg.batch_size, cfg.num_workers, shuffle=True, seed=cfg.seed,
                                    drop_last=drop_last, sampler=sampler)
        valid_loader = build_loader(valid_ds, cfg.batch_size, cfg.num_workers, shuffle=False)
        self.model, self.optimizer, self.train_loader, self.valid_loader = acc.prepare(
            self.model, optimizer, train_loader, valid_loader)
        # Not passed to prepare(): a prepared scheduler steps once per process; ours steps per update.
        self.scheduler = self.build_scheduler(self.optimizer, math.ceil(len(self.train_loader) / cfg.grad_accum))
        start_epoch = restore_run(self, self.resume_dir)  # kit/resume.py: every counter, RNG and state
        for epoch in range(start_epoch, cfg.epochs):
            self.epoch = epoch
            if cfg.freeze_epochs:
                set_backbone_trainable(acc.unwrap_model(self.model), epoch >= cfg.freeze_epochs)
            t0 = time.perf_counter()
            train_loss = self._train_epoch()
            probs = self.predict_loader(self.valid_loader)
            metrics = self.compute_metrics(probs, valid_ds.targets.numpy())
            row = {"fold": fold, "epoch": epoch, "step": self.step, "train_loss": train_loss,
                   "lr": self.optimizer.param_groups[0]["lr"], **{f"valid/{k}": v for k, v in metrics.items()},
                   "seconds": round(time.perf_counter() - t0, 2)}
            improved = is_better(self.comp.metric, metrics["score"], self.best)
            if improved:
                self.best, self.best_epoch = metrics["score"], epoch
                self._save_best(probs)
            self._log(row)
            self.scheduler.step(epoch + 1, metric=metrics["score"])  # only plateau acts per epoch
            stop = bool(cfg.patience and epoch - self.best_epoch >= cfg.patience)
            end_epoch(self, improved, stop)  # a complete checkpoint of the run after every epoch
            if stop:
                acc.print(f"early stop: no better {self.comp.metric} for {cfg.patience} epochs")
                break
        self._load_best()
        summary = end_fold(self, valid_ds)  # schemes and test predicted, fold marked done, its checkpoints dropped
        acc.print(f"fold {fold}: best {self.comp.metric} {self.best:.4f} at epoch {self.best_epoch}")
        self.release()
        return summary

    def predict_loader(self, loader) -> np.ndarray:
        """Class probabilities for a prepared loader, gathered from every process in dataset order."""
        with self.using_model(eval_module(self.model, self.ema)), self.accelerator.autocast():  # EMA weights if on
            return self._predict(loader)

    @contextlib.contextmanager
    def using_model(self, model: torch.nn.Module):
        """Inside the block eval_step runs `model` (EMA weights, a fold model at predict time); then the trainer's own."""
        own, self.model = getattr(self, "model", None), model  # an inference-mode trainer has none of its own
        try:
            yield model
        finally:
            self.model = own

    @torch.no_grad()
    def _predict(self, loader) -> np.ndarray:
        self.model.eval()
        probs, index = [], []
        for batch in progress(loader, "predict", self.accelerator.is_local_main_process):
            out = self.eval_step(normalize_batch(batch, self.norm, self.config.channels_last))
            p, i = self.accelerator.gather_for_metrics((out["probs"], batch["index"]))
            probs.append(p.cpu())
            index.append(i.cpu())
        probs, index = torch.cat(probs).numpy(), torch.cat(index).numpy()
        n = len(loader.dataset)
        if len(index) != n or not np.array_equal(np.sort(index), np.arange(n)):
            raise RuntimeError(f"gathered {len(index)} predictions for {n} rows: some are duplicated or missing")
        return probs[np.argsort(index)]

    # ------------------------------------------------------------------ loop internals
    def _train_epoch(self) -> float:
        acc = self.accelerator
        self.model.train()
        # data order and augmentation from (seed, epoch); after a resume, the batches done are skipped
        loader, first, loss_sum = begin_epoch(self)  # loss summed on device
        bar = progress(loader, f"fold {self.fold} epoch {self.epoch}", acc.is_local_main_process)
        n = first - 1
        for n, batch in enumerate(bar, first):
            batch = normalize_batch(batch, self.norm, self.config.channels_last)  # uint8 came to the device: normalised here
            if self.mixer is not None:
                batch = mix_batch(self.mixer, batch)
            with acc.accumulate(self.model):
                out = self.train_step(batch)
                skip = check_loss(self, out["loss"], batch, n)  # NaN/inf: skipped within budget, else stops
                self.backward_step(out["loss"])
                if not skip:
                    self.optimizer_step(batch)
                self.optimizer.zero_grad(set_to_none=True)
            if skip:
                continue
            loss_sum += out["loss"].detach()
            if acc.sync_gradients:
                updated = not acc.optimizer_step_was_skipped  # fp16: the scaler found inf gradients
                if updated:
                    self.step += 1
                    self.scheduler_step()
                    shown = self.tracking.log_update(loss_sum, n)  # a host sync only every log_every updates
                    if shown is not None:  # the bar shows what was read for the trackers, no read of its own
                        bar.set_postfix(loss=f"{shown:.4f}")
                    if self.ema is not None:
                        self.ema.update(acc.unwrap_model(self.model), step=self.step)
                end_step(self, n, loss_sum, updated)  # a mid-epoch checkpoint every --ckpt_every updates
        return (acc.reduce(loss_sum, "mean") / max(n, 1)).item()

    def _start_run_dir(self) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            self.fold_dir.mkdir(parents=True, exist_ok=True)
            run = RunDir(self.run_dir)
            run.save_config(self.config)
            run.save_config(self.config, fold=self.fold)
            if self.resume_dir is None:  # a resumed run keeps (and trims) its log
                RunDir(self.run_dir).log("metrics", self.fold).unlink(missing_ok=True)
            write_lineage(self)  # and experiment.py, run-level and per fold
        self.tracking.start()
        acc.wait_for_everyone()

    def _save_best(self, probs: np.ndarray) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            model = acc.unwrap_model(eval_module(self.model, self.ema))  # the EMA weights when EMA is on
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            meta = {"epoch": str(self.epoch), "score": str(self.best)}
            write_aside(RunDir(self.run_dir).weights(self.fold), lambda tmp: save_file(state, str(tmp), metadata=meta))
            self.write_predictions("oof", self.valid_ids, probs)
        acc.wait_for_everyone()

    def _load_best(self) -> None:
        state = load_file(str(RunDir(self.run_dir).weights(self.fold)))  # on CPU; load_state_dict copies to device
        self.accelerator.unwrap_model(self.model).load_state_dict(state)
        if self.ema is not None:  # the best weights are EMA weights: test predictions come from them
            self.ema.module.load_state_dict(state)

    def _log(self, row: dict) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            with open(RunDir(self.run_dir).log("metrics", self.fold), "a") as f:
                f.write(json.dumps(row) + "\n")
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            tqdm.write(" ".join(f"{k}={v}" for k, v in shown.items()))
        self.tracking.log_epoch(row)

    def release(self) -> None:
        """Drop the fold's model, optimizer, loaders, EMA and mixer and free their memory (after a fold, or an OOM)."""
        self.model = self.optimizer = self.train_loader = self.valid_loader = self.ema = self.mixer = None
        self.accelerator.free_memory()

    def fold_list(self) -> list[int]:
        """The folds `config.fold` asks for: one integer, or every fold in folds.csv for 'all'."""
        return folds_mod.select_folds(self.folds, self.config.fold)

    def finish(self, summaries: list[dict]) -> dict | None:
        """After the folds: run-level tables and cv.json (collect_run), summary.json, trackers closed; every kind."""
        result = self.collect_run() if self.accelerator.is_main_process else None
        self.tracking.finish(result)
        self.accelerator.wait_for_everyone()
        return result

    def collect_run(self) -> dict:
        """Merge fold tables into run-level oof/test tables and cv.json (main process); returns cv.json's content."""
        from .tables import collect_run
        result = collect_run(self.run_dir, self.comp, self.train_df, self.folds)
        result["schemes"] = collect_schemes(self.run_dir, self.config, self.comp, self.train_df)
        return result
