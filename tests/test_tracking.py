"""Trackers through Accelerate: what wandb (offline), TensorBoard and MLflow really stored, read back with their readers."""
import json
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from kit.tracking import parse_trackers
from tests.tiny import Tiny
from tests.wandb_records import read_config, read_history_when

UPDATES = 9  # 72 train rows of a Tiny fold / batch 8


class Recorded(Tiny):
    """Tiny that also keeps every batch loss as a Python float: the reference for the throttled train/loss."""

    def train_step(self, batch):
        out = super().train_step(batch)
        self.losses.setdefault((self.fold, self.epoch), []).append(float(out["loss"].detach()))
        return out


def train(tmp_path: Path, **over):
    trainer = Recorded(Tiny.config.override(**{"out_dir": str(tmp_path), "epochs": 2, "log_every": 4, **over}))
    trainer.losses = {}
    result = trainer.finish([trainer.fit(k) for k in trainer.fold_list()])
    return trainer, result


def expected_train_loss(losses: dict, every: int) -> dict:
    """Global step -> mean batch loss since the previous log within the epoch (hand-written reference)."""
    out, step, offset = {}, 0, 0
    for (fold, epoch), ls in sorted(losses.items()):
        if epoch == 0 and fold:
            offset = step
        start = 0
        for n in range(1, len(ls) + 1):
            step += 1
            if (step - offset) % every == 0:
                out[step] = float(np.mean(ls[start:n]))
                start = n
    return out


def metrics_rows(run: Path, fold: int) -> list[dict]:
    return [json.loads(line) for line in (run / f"fold{fold}" / "metrics.jsonl").read_text().splitlines()]


def test_parse_trackers_accepts_a_comma_list_and_names_an_unknown_one():
    assert parse_trackers("none") == [] and parse_trackers("") == []
    assert parse_trackers("tensorboard, wandb") == ["wandb", "tensorboard"]
    with pytest.raises(ValueError, match="unknown tracker 'wandbb'"):
        parse_trackers("wandbb,tensorboard")


def test_wandb_offline_history_holds_every_logged_metric(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    trainer, result = train(tmp_path, log_with="wandb", fold="all")
    run = tmp_path / "tiny"
    files = list(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files  # one wandb run for the process, its folds in one history
    history = read_history_when(files[0], "cv/score")
    # train loss: throttled to every 4th update, equal to the mean of the batch losses since the last log
    logged = {r["_step"]: r["train/loss"] for r in history if "train/loss" in r}
    want = expected_train_loss(trainer.losses, 4)
    assert sorted(logged) == sorted(want) and len(want) == 4 * 4
    np.testing.assert_allclose([logged[s] for s in sorted(want)], [want[s] for s in sorted(want)], rtol=1e-5)
    # epoch metrics of every fold, at steps that keep growing across folds
    epochs = [r for r in history if "valid/score" in r]
    assert [(r["fold"], r["epoch"]) for r in epochs] == [(k, e) for k in range(4) for e in range(2)]
    assert [r["_step"] for r in epochs] == [UPDATES * (2 * k + e + 1) for k in range(4) for e in range(2)]
    for k in range(4):
        assert [r["valid/score"] for r in epochs if r["fold"] == k] == [r["valid/score"] for r in metrics_rows(run, k)]
    # per-class F1 of the best epoch against scikit-learn on the fold's OOF table
    oof = pd.read_parquet(run / "fold0" / "oof.parquet")
    y = np.array(["abc".index(trainer.train_df.set_index("id").label[i]) for i in oof.id])
    f1 = f1_score(y, oof[["a", "b", "c"]].to_numpy().argmax(1), average=None, labels=[0, 1, 2], zero_division=0)
    row = next(r for r in history if "fold0/f1/a" in r)
    assert [row[f"fold0/f1/{c}"] for c in "abc"] == pytest.approx(f1.tolist())
    media = {k: v for r in history for k, v in r.items() if k.endswith("/_type")}
    assert media["fold0/confusion_matrix/_type"] == media["fold0/misclassified/_type"] == "images/separated"
    assert media["fold0/f1_table/_type"] == media["cv/per_class_f1/_type"] == "table-file"
    assert [r["cv/score"] for r in history if "cv/score" in r] == [pytest.approx(result["cv"])]
    config = read_config(files[0])
    assert config["lr"] == 0.05 and config["log_with"] == "wandb" and config["epochs"] == 2
    assert json.loads((run / "summary.json").read_text())["cv/score"] == pytest.approx(result["cv"])


def test_tensorboard_events_read_back_with_event_accumulator(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    trainer, _ = train(tmp_path, log_with="tensorboard")
    dirs = {p.parent for p in (tmp_path / "tiny").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(next(d for d in dirs if d.name == "kit-tiny")), size_guidance={"images": 0}).Reload()
    tags = acc.Tags()
    score = [(e.step, e.value) for e in acc.Scalars("valid/score")]
    rows = metrics_rows(tmp_path / "tiny", 0)
    assert score == [(r["step"], pytest.approx(r["valid/score"])) for r in rows]
    want = expected_train_loss(trainer.losses, 4)
    loss = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert sorted(loss) == [4, 8, 12, 16] == sorted(want)
    np.testing.assert_allclose([loss[s] for s in want], list(want.values()), rtol=1e-5)
    assert "fold0/confusion_matrix" in tags["images"]
    assert acc.Images("fold0/confusion_matrix")[0].width > 50
    assert (tmp_path / "tiny" / "fold0" / "confusion_matrix.png").exists()


def test_mlflow_local_store_read_back_with_the_client(tmp_path):
    import mlflow
    trainer, _ = train(tmp_path, log_with="mlflow")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("kit-tiny").experiment_id])[0]
    assert run.info.run_name == "tiny-fold0" and run.data.tags["group"] == "tiny"
    assert run.data.params["lr"] == "0.05" and run.data.params["log_every"] == "4"
    history = client.get_metric_history(run.info.run_id, "valid/score")
    rows = metrics_rows(tmp_path / "tiny", 0)
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["valid/score"])) for r in rows]
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 4
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "fold0")}
    assert "fold0/confusion_matrix.png" in artifacts


def _check_offline_run(run: Path, seconds: float):
    files = list(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    history = read_history_when(files[0], "fold0/f1/a")
    assert [r["epoch"] for r in history if "valid/score" in r] == [0, 1]
    assert seconds < 60, seconds


def test_wandb_online_with_unreachable_host_trains_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: connection refused
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):  # a proxy skips the direct check
        monkeypatch.delenv(var, raising=False)
    t0 = time.perf_counter()
    with pytest.warns(UserWarning, match="wandb host unreachable"):
        train(tmp_path, log_with="wandb")
    _check_offline_run(tmp_path / "tiny", time.perf_counter() - t0)


def test_wandb_init_timeout_falls_back_to_offline(tmp_path, monkeypatch):
    with socket.socket() as server:  # accepts connections, never answers: wandb's init times out
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        held = []

        def hold():
            try:
                while True:
                    held.append(server.accept())
            except OSError:  # the server socket closed at the end of the test
                pass

        threading.Thread(target=hold, daemon=True).start()
        monkeypatch.setenv("WANDB_MODE", "online")
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
        t0 = time.perf_counter()
        with pytest.warns(UserWarning, match="wandb init failed"):
            train(tmp_path, log_with="wandb,tensorboard")
        _check_offline_run(tmp_path / "tiny", time.perf_counter() - t0)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "tiny" / "kit-tiny")).Reload()  # the other tracker logs on
    assert [e.step for e in acc.Scalars("valid/score")] == [UPDATES, 2 * UPDATES]


def test_no_tracker_still_writes_the_summary_sweeps_read(tmp_path):
    _, result = train(tmp_path, log_with="none", fold="all", epochs=1)
    summary = json.loads((tmp_path / "tiny" / "summary.json").read_text())
    assert summary["cv/score"] == pytest.approx(result["cv"])
    assert summary["valid/score"] == metrics_rows(tmp_path / "tiny", 3)[-1]["valid/score"]
    assert not list((tmp_path / "tiny").glob("wandb"))


def test_train_loss_logging_reads_the_device_only_on_logging_steps(tmp_path):
    from torch.overrides import TorchFunctionMode

    class CountReads(TorchFunctionMode):
        """Counts tensor -> Python reads (each one a host sync on a GPU)."""
        reads = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            caller = sys._getframe(1).f_code.co_filename  # the sampler's host-side index tensors are no device read
            if getattr(func, "__name__", "") in ("item", "__float__", "tolist", "numpy", "cpu") and \
                    "torch/utils/data" not in caller.replace("\\", "/"):
                CountReads.reads += 1
            return func(*args, **(kwargs or {}))

    class Counted(Tiny):
        def _train_epoch(self):  # count inside the training loop only
            with CountReads():
                return super()._train_epoch()

    arms = {"never": {"log_with": "none", "log_every": 10 * UPDATES},
            "bar only": {"log_with": "none", "log_every": 2},
            "tracker": {"log_with": "tensorboard", "log_every": 2}}
    counts = {}
    for arm, over in arms.items():
        CountReads.reads = 0
        Counted(Tiny.config.override(out_dir=str(tmp_path / arm.replace(" ", "_")), epochs=1, **over)).fit(0)
        counts[arm] = CountReads.reads
    # the epoch end reads twice (the step log flush, the epoch's mean loss); nothing else without a logging step
    assert counts["never"] == 2, counts
    # steps 2, 4, 6, 8: one read each, shared by the progress bar and the trackers
    assert counts["bar only"] == counts["tracker"] == 2 + UPDATES // 2, counts


def test_a_run_resumed_from_its_checkpoint_logs_to_the_same_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_id = lambda f: f.parent.name.rsplit("-", 1)[1]  # noqa: E731 - offline-run-<time>-<id>
    train(tmp_path, log_with="wandb", fold="0")
    first = {run_id(f) for f in (tmp_path / "tiny").glob("wandb/offline-run-*/run-*.wandb")}
    train(tmp_path, log_with="wandb", fold="0")  # resume=auto: the finished run's last checkpoint
    resumed = {run_id(f) for f in (tmp_path / "tiny").glob("wandb/offline-run-*/run-*.wandb")}
    assert len(first) == 1 and resumed == first
    train(tmp_path, log_with="wandb", fold="0", resume="never")  # a fresh start is a new wandb run
    fresh = {run_id(f) for f in (tmp_path / "tiny").glob("wandb/offline-run-*/run-*.wandb")}
    assert len(fresh) == 2 and first < fresh
