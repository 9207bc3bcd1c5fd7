"""The class-balanced sampler: equal classes over 10,000 draws, in one process and per rank under DDP."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kit.sampling import ClassBalancedSampler, create_sampler
from tests.ddp.sampler_draws import LABELS
from tests.helpers import ROOT, launch
from tests.tiny import Tiny


def assert_balanced(indices, n_classes=4, tol=0.10):
    counts = np.bincount(LABELS[np.asarray(indices)], minlength=n_classes)
    equal = len(indices) / n_classes
    assert np.all(np.abs(counts - equal) <= tol * equal), counts


def test_balanced_over_10000_draws_and_new_draw_each_epoch():
    sampler = ClassBalancedSampler(LABELS, num_samples=10_000, seed=3)
    first = list(sampler)
    assert len(first) == 10_000
    assert_balanced(first)
    assert first == list(sampler)  # same epoch, same draw (every rank agrees)
    sampler.set_epoch(1)
    assert first != list(sampler)
    # the plain draw is 10:2:1:0.2; sqrt softens it but keeps the order
    dataset = SimpleNamespace(targets=LABELS)
    counts = np.bincount(LABELS[list(create_sampler("sqrt", dataset, seed=0))], minlength=4)
    plain_share = 10 / len(LABELS) * len(LABELS)  # draws of the rarest class without the sampler
    assert counts[0] > counts[1] > counts[2] > counts[3] > 3 * plain_share
    assert create_sampler("shuffle", dataset) is None
    with pytest.raises(ValueError, match="choose from"):
        create_sampler("oversample", dataset)
    with pytest.raises(ValueError, match="dataset.targets"):
        create_sampler("balanced", SimpleNamespace(targets=None))


@pytest.mark.slow
def test_each_rank_draws_its_own_balanced_share_under_two_processes(tmp_path):
    out = tmp_path / "draws"
    launch(ROOT / "tests" / "ddp" / "sampler_draws.py", str(out), processes=2)
    ranks = [json.loads((tmp_path / f"draws.rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    single = ClassBalancedSampler(LABELS, num_samples=10_000, seed=3)
    for epoch in (0, 1):
        single.set_epoch(epoch)
        stream = np.array(list(single)).reshape(-1, 10)  # batches of 10 dealt to the ranks in turn
        for r in ranks:
            mine = r["epochs"][epoch]
            assert len(mine) == 5_000
            assert_balanced(mine)
            np.testing.assert_array_equal(np.array(mine).reshape(-1, 10), stream[r["rank"]::2])
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]  # Accelerate passed the epoch to the sampler


class Imbalanced(Tiny):
    """80% of the rows in class 0; records the classes the train loop sees."""

    def setup_data(self):
        super().setup_data()
        g = torch.Generator().manual_seed(1)
        rare = torch.randint(1, 3, (self.n_rows,), generator=g)
        self.y = torch.where(torch.rand(self.n_rows, generator=g) < 0.8, 0, rare)
        self.seen = []

    def train_step(self, batch):
        self.seen += batch["target"].tolist()
        return super().train_step(batch)


@pytest.mark.parametrize("sampler", ["shuffle", "balanced"])
def test_trainer_draws_through_the_configured_sampler(tmp_path, sampler):
    trainer = Imbalanced(Imbalanced.config.override(out_dir=str(tmp_path), sampler=sampler, epochs=2))
    trainer.fit(0)
    counts = np.bincount(trainer.seen, minlength=3)
    if sampler == "shuffle":
        assert counts[0] > 0.7 * counts.sum()
    else:
        assert np.all(counts > 0.22 * counts.sum()), counts  # a third each, give or take the draw
