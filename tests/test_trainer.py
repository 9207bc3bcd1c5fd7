"""The Trainer's loop on synthetic tensors: a tiny subclass, no images, no competition files."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from kit import Competition, Config, Trainer

N, D, C = 96, 10, 3


class TensorDataset(torch.utils.data.Dataset):
    def __init__(self, x, y, ids):
        self.x, self.targets, self.ids = x, y, ids

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "target": self.targets[i], "index": i}


class Synthetic(Trainer):
    """A linear-separable 3-class problem; no batch norm, so accumulation is exact."""

    config = Config(name="synthetic", epochs=4, batch_size=8, lr=0.05, num_workers=0, predict_test=False,
                    warmup_epochs=0, clip_grad=0, optimizer="sgd", weight_decay=0.0)

    def setup_data(self):
        self.comp = Competition(root=self.run_dir, name="synthetic", classes=["a", "b", "c"], metric="accuracy")
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(N, D, generator=g)
        self.y = self.x[:, :C].argmax(1)
        ids = [f"r{i}" for i in range(N)]
        self.train_df = pd.DataFrame({"id": ids, "label": [self.comp.classes[k] for k in self.y]})
        self.folds = pd.DataFrame({"id": ids, "fold": np.arange(N) % 4})

    def build_datasets(self, fold):
        tr, va = self.folds.fold.to_numpy() != fold, self.folds.fold.to_numpy() == fold
        ids = np.array(self.train_df.id)
        return (TensorDataset(self.x[tr], self.y[tr], list(ids[tr])),
                TensorDataset(self.x[va], self.y[va], list(ids[va])))

    def build_model(self):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(D, 32), torch.nn.Tanh(), torch.nn.Linear(32, C))


def test_loss_falls_and_best_checkpoint_and_metrics_written(tmp_path):
    trainer = Synthetic(Synthetic.config.override(out_dir=str(tmp_path)))
    summary = trainer.fit(0)
    rows = [json.loads(line) for line in (tmp_path / "synthetic" / "fold0" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in rows]
    assert len(rows) == 4 and losses[-1] < 0.7 * losses[0], losses
    assert (tmp_path / "synthetic" / "fold0" / "best.safetensors").exists()
    oof = pd.read_parquet(tmp_path / "synthetic" / "fold0" / "oof.parquet")
    assert sorted(oof["id"]) == sorted(f"r{i}" for i in range(0, N, 4))
    assert summary["score"] == max(r["valid/score"] for r in rows)


class RecordingSGD(torch.optim.SGD):
    """SGD that keeps a copy of the gradients it was asked to apply."""

    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.seen = []

    def step(self, closure=None):
        self.seen.append([p.grad.detach().clone() for g in self.param_groups for p in g["params"]])
        return super().step(closure)


class Recording(Synthetic):
    def build_optimizer(self, model):
        self.recorder = RecordingSGD(model.parameters(), lr=0.0)
        return self.recorder


def test_accumulation_of_4x8_equals_batch_32(tmp_path):
    base = Recording.config.override(out_dir=str(tmp_path), epochs=1)
    big = Recording(base.override(name="big", batch_size=32, grad_accum=1))
    big.fit(0)
    small = Recording(base.override(name="small", batch_size=8, grad_accum=4))
    small.fit(0)
    # 72 train rows: batch 32 -> updates of 32, 32, 8; 4 x 8 -> 32, 32, 8 (the last one short)
    assert len(big.recorder.seen) == len(small.recorder.seen) == 3
    for grads_big, grads_small in zip(big.recorder.seen[:2], small.recorder.seen[:2]):
        for a, b in zip(grads_big, grads_small):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class BatchNormOddTail(Synthetic):
    """72 train rows at batch 71: the last batch would hold one row, which BatchNorm cannot train on."""

    config = Synthetic.config.override(name="bn_tail", batch_size=71, epochs=1)

    def build_model(self):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(D, 32), torch.nn.BatchNorm1d(32), torch.nn.Linear(32, C))


def test_a_last_batch_of_one_row_is_dropped_not_crashed_on(tmp_path):
    trainer = BatchNormOddTail(BatchNormOddTail.config.override(out_dir=str(tmp_path)))
    summary = trainer.fit(0)
    assert trainer.step == 1 and summary["score"] is not None


class ScalerSkips(Synthetic):
    """fp16 autocast with a real GradScaler starting too high: the first optimizer steps are skipped."""

    config = Synthetic.config.override(name="scaler_skips", epochs=1, ema_decay=0.5)

    def build_optimizer(self, model):
        # Accelerate attaches a scaler only for fp16 on an accelerator; torch's GradScaler runs on the CPU too
        self.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 19, growth_interval=10**6)
        self.seen, self.skipped = [], []
        return super().build_optimizer(model)

    def train_step(self, batch):
        ema = torch.cat([p.detach().flatten() for p in self.ema.module.parameters()]).clone()
        self.seen.append((self.step, self.optimizer.param_groups[0]["lr"], ema))
        with torch.autocast("cpu", dtype=torch.float16):  # fp16 gradients overflow past 65504
            return super().train_step(batch)

    def optimizer_step(self, batch):
        super().optimizer_step(batch)
        self.skipped.append(self.accelerator.optimizer_step_was_skipped)


def test_a_skipped_fp16_step_advances_neither_the_schedule_nor_the_ema(tmp_path):
    trainer = ScalerSkips(ScalerSkips.config.override(out_dir=str(tmp_path)))
    trainer.fit(0)
    skipped = trainer.skipped
    assert 0 < sum(skipped) < len(skipped) - 2, skipped  # some steps skipped, later ones applied
    assert trainer.step == len(skipped) - sum(skipped)
    for (step0, lr0, ema0), (step1, lr1, ema1), skip in zip(trainer.seen, trainer.seen[1:], skipped):
        if skip:
            assert step1 == step0 and lr1 == lr0 and torch.equal(ema1, ema0)
        else:
            assert step1 == step0 + 1 and lr1 != lr0 and not torch.equal(ema1, ema0)
