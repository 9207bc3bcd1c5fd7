"""MixUp/CutMix: soft targets sum to 1 per row, and an odd-size batch never reaches timm's Mixup."""
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.data import Mixup

from kit.competition import Competition
from kit.mixing import MixingError, create_mixer, mix_batch
from kit.tasks import task_of
from tests.tiny import Tiny


@pytest.mark.parametrize("mixup, cutmix, smoothing", [(0.4, 0.0, 0.0), (0.0, 1.0, 0.0), (0.4, 1.0, 0.1)])
def test_mixed_targets_are_probability_rows(mixup, cutmix, smoothing):
    torch.manual_seed(0)
    np.random.seed(0)  # timm draws the mixing ratio with numpy
    mixer = create_mixer(mixup, cutmix, prob=1.0, smoothing=smoothing, num_classes=5, batch_size=8)
    images = torch.rand(8, 3, 16, 16)
    for _ in range(5):
        batch = {"image": images.clone(), "target": torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]), "index": torch.arange(8)}
        out = mix_batch(mixer, batch)
        t = out["target"]
        assert t.shape == (8, 5) and (t >= 0).all()
        torch.testing.assert_close(t.sum(1), torch.ones(8))
        assert not torch.equal(out["image"], images)  # the images were really mixed
        assert (t.max(1).values < 1).any()  # and so were the labels


def test_mixing_is_off_by_default_and_odd_batch_or_multihead_is_refused():
    assert create_mixer(0.0, 0.0, 1.0, 0.0, 5, 7) is None
    with pytest.raises(MixingError, match="--batch_size=7 must be even"):
        create_mixer(0.2, 0.0, 1.0, 0.0, 5, 7)
    heads = {"a": ["x", "y"], "b": ["u", "v"]}
    multihead = Competition(root=Path("."), name="mh", task="multihead", heads=heads, classes=list("0123"))
    with pytest.raises(MixingError, match="multihead"):
        task_of(multihead).check_mixing()  # the Trainer asks its task before building the mixer
    multilabel = Competition(root=Path("."), name="ml", task="multilabel", classes=["a", "b"])
    with pytest.raises(MixingError, match="multilabel"):
        task_of(multilabel).check_mixing()


class SizeRecordingMixup(Mixup):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.sizes = []

    def __call__(self, x, target):
        self.sizes.append(len(x))
        return super().__call__(x, target)


class OddRows(Tiny):
    n_rows = 100  # fold 0 trains on 75 rows: batches of 4 leave a last batch of 3

    def build_mixer(self):
        cfg = self.config
        self.recorder = SizeRecordingMixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, num_classes=3)
        return self.recorder


def test_odd_last_batch_is_dropped_before_mixup_and_training_runs(tmp_path):
    trainer = OddRows(OddRows.config.override(out_dir=str(tmp_path), batch_size=4, mixup=0.2, cutmix=1.0,
                                              epochs=2, loss="focal"))
    assert 75 % 4 == 3
    trainer.fit(0)
    assert trainer.recorder.sizes == [4] * (2 * (75 // 4))  # every batch of both epochs, none of size 3
