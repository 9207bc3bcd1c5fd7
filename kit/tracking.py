"""Experiment tracking through Accelerate's trackers (wandb, TensorBoard, MLflow): what is logged, and when.

The Trainer calls four hooks: `start` (per fold), `log_update` (per optimizer update, throttled to
`log_every`), `log_epoch`, `log_fold_end` and `finish`. The network never stops training: wandb goes
offline when no key is configured, when its host cannot be reached, or when its init times out.
"""
from __future__ import annotations

import netrc
import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from .rundir import RunDir

TRACKERS = ("wandb", "tensorboard", "mlflow")  # wandb first: its init may fail over to offline and restart
_PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard", "mlflow": "mlflow"}


def parse_trackers(log_with: str) -> list[str]:
    """`wandb,tensorboard` -> ['wandb', 'tensorboard']; 'none' or '' -> []; an unknown name is an error."""
    names = [n.strip().lower() for n in str(log_with).split(",") if n.strip() and n.strip().lower() != "none"]
    for n in names:
        if n not in TRACKERS:
            raise ValueError(f"--log_with={log_with!r}: unknown tracker {n!r}; choose from "
                             f"{', '.join(TRACKERS)} or none (comma-separated for several)")
    import importlib.util
    for n in names:
        if importlib.util.find_spec(_PACKAGES[n]) is None:
            raise ValueError(f"--log_with={log_with!r}: {n} is not installed (pip install 'kit[tracking]')")
    return sorted(set(names), key=TRACKERS.index)


def sweep_run_name(stem: str) -> str:
    """Under a wandb sweep agent each trial gets its own run folder, named by the agent's run id."""
    run_id = os.environ.get("WANDB_RUN_ID")
    return f"{stem}-{run_id}" if os.environ.get("WANDB_SWEEP_ID") and run_id else stem


def wandb_logged_in() -> bool:
    """A key in WANDB_API_KEY or in ~/.netrc for the wandb host (no network call)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host and port opens within `timeout` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode() -> str:
    """WANDB_MODE when set; else online when logged in and the host answers, offline otherwise.

    Behind a proxy a direct connection proves nothing, so only wandb's init timeout guards there.
    """
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode and mode != "online":
        return mode
    if not mode and not wandb_logged_in():
        return "offline"
    behind_proxy = any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"))
    if not behind_proxy and not host_reachable(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")):
        warnings.warn("wandb host unreachable: logging offline (`wandb sync` uploads the run later)")
        return "offline"
    return "online"


class Tracking:
    """The trackers of one training process; a no-op apart from summary.json when log_with is none."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.names = parse_trackers(trainer.config.log_with)
        self.every = max(1, int(trainer.config.log_every))
        self.started, self.offset, self.summary = False, 0, {}
        self.continued = False  # a relaunch that skipped finished folds: the tracker run goes on, as after a resume
        self._window = (None, 0.0, 0)  # (epoch, loss sum, batches) at the last logged update

    @property
    def step(self) -> int:
        """Global step across folds: trackers need it to grow monotonically within one run."""
        return self.offset + self.trainer.step

    def start(self) -> None:
        """Open the tracker run once per process (the name ties an experiment's folds together)."""
        if self.started:
            self.offset = self.summary.get("_step", self.offset)
            return
        self.started = True
        if not self.names:
            return
        t = self.trainer
        acc, cfg = t.accelerator, t.config
        project = os.environ.get("WANDB_PROJECT") or f"kit-{t.comp.name}"
        kwargs = self._init_kwargs()
        try:
            acc.init_trackers(project, config=cfg.to_dict(), init_kwargs=kwargs)
        except Exception as e:  # noqa: BLE001 - any network failure of wandb: go offline, never crash
            if "wandb" not in kwargs or kwargs["wandb"]["mode"] != "online":
                raise
            warnings.warn(f"wandb init failed ({type(e).__name__}: {str(e)[:200]}); logging offline")
            for tracker in acc.trackers:  # those started before wandb failed; the rest never opened
                if tracker.name != "wandb":
                    try:
                        tracker.finish()
                    except AttributeError:
                        pass
            acc.trackers = []
            kwargs["wandb"]["mode"] = "offline"
            kwargs["wandb"]["id"] = self._wandb_id(kwargs["wandb"]["name"], fresh=True)  # the failed id stays taken
            acc.init_trackers(project, config=cfg.to_dict(), init_kwargs=kwargs)

    def _wandb_id(self, run_name: str, fresh: bool = False) -> str:
        """The run's wandb id: kept in the run folder, so a run resumed from a checkpoint logs to the same run."""
        import uuid
        t = self.trainer
        path = t.run_dir / f".wandb_id-{run_name}"
        if not fresh and (t.resume_dir is not None or self.continued) and path.exists():
            return path.read_text().strip()
        run_id = uuid.uuid4().hex[:12]
        path.write_text(run_id)
        return run_id

    def _init_kwargs(self) -> dict:
        t = self.trainer
        cfg = t.config
        run_name = t.name if cfg.fold == "all" else f"{t.name}-fold{cfg.fold}"
        out = {}
        if "wandb" in self.names and t.accelerator.is_main_process:
            import wandb
            mode = wandb_mode()
            timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", 30))
            out["wandb"] = {"name": run_name, "group": t.name, "job_type": f"fold{cfg.fold}", "dir": str(t.run_dir),
                            "mode": mode, "settings": wandb.Settings(init_timeout=timeout)}
            t.run_dir.mkdir(parents=True, exist_ok=True)
            out["wandb"].update(id=self._wandb_id(run_name), resume="allow")
        if "mlflow" in self.names and t.accelerator.is_main_process:
            import mlflow
            root = Path(cfg.out_dir).resolve()
            if not os.environ.get("MLFLOW_TRACKING_URI"):  # MLflow 3 retired the plain-file store: a local SQLite one
                root.mkdir(parents=True, exist_ok=True)
                mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
            out["mlflow"] = {"run_name": run_name, "logging_dir": str(root / "mlartifacts"),
                             "tags": {"group": t.name, "fold": str(cfg.fold)}}
        return out

    def log_update(self, loss_sum, batches: int) -> float | None:
        """Every `log_every` updates: the mean train loss since the last read (the only host sync), to the trackers."""
        t = self.trainer
        if t.step % self.every or not t.accelerator.is_main_process:
            return None
        epoch, s0, n0 = self._window
        if epoch != t.epoch:
            s0, n0 = 0.0, 0
        total = float(loss_sum.item())
        self._window = (t.epoch, total, batches)
        if batches <= n0:
            return None
        mean = (total - s0) / (batches - n0)
        if self.names:
            t.accelerator.log({"train/loss": mean, "train/lr": t.optimizer.param_groups[0]["lr"]}, step=self.step)
        return mean

    def log_epoch(self, row: dict) -> None:
        """Epoch metrics to the trackers; their last values also go to summary.json (what sweeps read)."""
        values = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.summary.update(values, _step=self.step)
        if self.names:
            self.trainer.accelerator.log(values, step=self.step)

    def log_fold_end(self, valid_ds) -> None:
        """Per-class F1 table, confusion matrix and misclassified images of the fold's best epoch."""
        t = self.trainer
        if not self.names or not t.accelerator.is_main_process or not t.task.one_label_per_row:
            return
        from .tables import read_probs
        ids, probs = read_probs(RunDir(t.run_dir).table("oof", t.fold), t.comp)
        order = {str(i): k for k, i in enumerate(valid_ds.ids)}
        rows = np.array([order[i] for i in ids])
        y, pred = valid_ds.targets.numpy()[rows], probs.argmax(1)
        prefix = f"fold{t.fold}"
        self._log_class_f1(f"{prefix}/f1", y, probs)
        from .figures import confusion_figure, displayable, figure_to_array, image_grid_figure
        images = {f"{prefix}/confusion_matrix": figure_to_array(confusion_figure(y, pred, t.comp.classes))}
        wrong = np.nonzero(y != pred)[0][:32]
        if len(wrong):
            pics = [_raw_image(valid_ds, rows[k]) for k in wrong]
            titles = [f"{t.comp.classes[y[k]]} -> {t.comp.classes[pred[k]]}" for k in wrong]
            grid = image_grid_figure([displayable(p) for p in pics], titles)
            images[f"{prefix}/misclassified"] = figure_to_array(grid)
        self._log_images(images)

    def finish(self, result: dict | None) -> None:
        """CV and per-class F1 of the whole OOF; write summary.json; close the trackers."""
        t = self.trainer
        acc = t.accelerator
        if acc.is_main_process and result is not None:
            if result.get("cv") is not None:
                self.summary["cv/score"] = result["cv"]
                if self.names:
                    acc.log({"cv/score": result["cv"]}, step=self.step)
                    f1 = result.get("per_class_f1") or {}
                    if f1:
                        self._log_table("cv/per_class_f1", ["class", "f1"], [[c, v] for c, v in f1.items()])
            summary = {k: v for k, v in self.summary.items() if not k.startswith("_")}
            RunDir(t.run_dir).write_json("summary", summary)
        if self.names and acc.is_main_process:
            # not acc.end_training(): that also tears down the process group the Trainer still waits on
            for tracker in acc.trackers:
                tracker.finish()
            acc.trackers = []

    # ---------------------------------------------------------------- per-tracker details
    def _log_class_f1(self, prefix: str, y: np.ndarray, probs: np.ndarray) -> None:
        from sklearn.metrics import precision_recall_fscore_support
        labels = np.arange(len(self.trainer.comp.classes))
        _, _, f1, support = precision_recall_fscore_support(y, probs.argmax(1), labels=labels, zero_division=0)
        classes = self.trainer.comp.classes
        self.trainer.accelerator.log({f"{prefix}/{c}": float(v) for c, v in zip(classes, f1)}, step=self.step)
        self._log_table(f"{prefix}_table", ["class", "f1", "support"],
                        [[str(c), float(v), int(s)] for c, v, s in zip(classes, f1, support)])

    def _log_table(self, name: str, columns: list[str], data: list[list]) -> None:
        acc = self.trainer.accelerator
        for tracker in acc.trackers:
            if tracker.name == "wandb":
                tracker.log_table(name, columns=columns, data=data, step=self.step)
            elif tracker.name == "tensorboard":
                lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                lines += ["| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + " |"
                          for r in data]
                tracker.writer.add_text(name, "\n".join(lines), global_step=self.step)
                tracker.writer.flush()
            elif tracker.name == "mlflow":
                import mlflow
                mlflow.log_table({c: [r[i] for r in data] for i, c in enumerate(columns)}, f"{name}.json")

    def _log_images(self, images: dict) -> None:
        acc = self.trainer.accelerator
        png_dir = self.trainer.fold_dir
        from PIL import Image
        for key, arr in images.items():
            Image.fromarray(arr).save(png_dir / f"{key.split('/')[-1]}.png")
        for tracker in acc.trackers:
            if tracker.name == "wandb":
                tracker.log_images({k: [v] for k, v in images.items()}, step=self.step)
            elif tracker.name == "tensorboard":
                for k, v in images.items():
                    tracker.writer.add_image(k, v, global_step=self.step, dataformats="HWC")
                tracker.writer.flush()
            elif tracker.name == "mlflow":
                import mlflow
                for k, v in images.items():
                    mlflow.log_image(v, f"{k}.png")


def _raw_image(ds, i: int):
    """The image as read from disk when the dataset has paths (no normalisation), else its tensor."""
    if hasattr(ds, "paths"):
        from .data import read_image
        return read_image(ds.paths[i])
    return ds[i]["image"]
