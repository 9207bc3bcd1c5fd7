"""EMA: its weights are what is evaluated, selected and saved as best; its state saves and restores."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from kit.ema import create_ema
from tests.tiny import Tiny, TinyNet


class Snapshots(Tiny):
    """Keeps the raw and the EMA weights as they are when each epoch is evaluated."""

    def compute_metrics(self, probs, targets):
        raw = self.accelerator.unwrap_model(self.model).state_dict()
        self.snaps = getattr(self, "snaps", []) + [({k: v.clone() for k, v in raw.items()},
                                                    {k: v.clone() for k, v in self.ema.module.state_dict().items()})]
        return super().compute_metrics(probs, targets)


def test_ema_weights_are_evaluated_selected_and_saved(tmp_path):
    trainer = Snapshots(Snapshots.config.override(out_dir=str(tmp_path), ema_decay=0.9, epochs=3, lr=0.2))
    trainer.fit(0)
    fold = tmp_path / "tiny" / "fold0"
    rows = [json.loads(line) for line in (fold / "metrics.jsonl").read_text().splitlines()]
    best_epoch = int(np.argmax([r["valid/score"] for r in rows]))
    best = load_file(str(fold / "best.safetensors"))
    raw, ema = trainer.snaps[best_epoch]
    for k in best:
        torch.testing.assert_close(best[k], ema[k])
    assert any(not torch.allclose(raw[k], ema[k]) for k in raw)  # EMA is not the raw model
    # the OOF table and the logged score are those of the saved (EMA) weights, recomputed by hand
    model = TinyNet()
    model.load_state_dict(best)
    _, valid = trainer.build_datasets(0)
    with torch.no_grad():
        probs = model(valid.x).softmax(-1).numpy()
    oof = pd.read_parquet(fold / "oof.parquet").set_index("id").loc[valid.ids]
    np.testing.assert_allclose(oof[["a", "b", "c"]].to_numpy(), probs, atol=1e-5)
    assert rows[best_epoch]["valid/score"] == pytest.approx(float((probs.argmax(1) == valid.targets.numpy()).mean()))


def test_ema_state_saves_and_restores_through_accelerate(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    ema = create_ema(model, 0.99)
    for step in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        ema.update(model, step=step)
    acc = Accelerator(cpu=True)
    acc.register_for_checkpointing(ema)  # what a resumable run's checkpoint carries
    acc.save_state(str(tmp_path / "state"))
    saved = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in ema.module.parameters():
            p.zero_()
    acc.load_state(str(tmp_path / "state"))
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v, saved[k])
    with pytest.raises(ValueError, match="ema_decay"):
        create_ema(model, 1.5)
