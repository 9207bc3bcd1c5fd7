"""The LR schedule counts optimizer updates: the same formula with accumulation 1 and 4, on 1 and 2 processes."""
import json
import math

import pytest

from tests.ddp.schedule_lrs import SCHEDULE, Tiny, record
from tests.helpers import ROOT, launch

N_TRAIN = 72  # Tiny's fold 0 trains on 72 of 96 rows


def cosine_with_warmup(t: int, total: int, warmup: int) -> float:
    """timm's cosine schedule in updates: linear warmup from lr/100, then half a cosine from lr to min_lr."""
    lr, min_lr, start = SCHEDULE["lr"], SCHEDULE["min_lr"], SCHEDULE["lr"] / 100
    if t < warmup:
        return start + t * (lr - start) / warmup
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t / total))


def check(run: dict, processes: int, grad_accum: int) -> None:
    batches_per_rank = math.ceil(math.ceil(N_TRAIN / SCHEDULE["batch_size"]) / processes)
    per_epoch = math.ceil(batches_per_rank / grad_accum)
    total, warmup = SCHEDULE["epochs"] * per_epoch, int(SCHEDULE["warmup_epochs"] * per_epoch)
    assert run["updates_per_epoch"] == per_epoch
    assert len(run["lrs"]) == total  # one scheduler step per update: the cosine ends exactly with training
    want = [cosine_with_warmup(t, total, warmup) for t in range(total)]
    assert run["lrs"] == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert run["lrs"][-1] < 0.05 * SCHEDULE["lr"]  # annealed by the last update, not stuck half-way


@pytest.mark.parametrize("grad_accum", [1, 4])
def test_schedule_formula_one_process(tmp_path, grad_accum):
    check(record(str(tmp_path), grad_accum), processes=1, grad_accum=grad_accum)


@pytest.mark.slow
def test_schedule_formula_two_processes(tmp_path):
    launch(ROOT / "tests" / "ddp" / "schedule_lrs.py", str(tmp_path), processes=2)
    ranks = [json.loads((tmp_path / f"lrs.rank{rank}.json").read_text()) for rank in (0, 1)]
    for runs in ranks:
        for grad_accum in (1, 4):
            assert runs[str(grad_accum)]["world"] == 2
            check(runs[str(grad_accum)], processes=2, grad_accum=grad_accum)
        check(runs["recipe"], processes=2, grad_accum=1)
        start, after_frozen_epoch, after_next = runs["recipe"]["conv_sums"][:3]
        assert after_frozen_epoch == start and after_next != after_frozen_epoch  # frozen, then trained under DDP
    assert ranks[0]["recipe"]["conv_sums"] == ranks[1]["recipe"]["conv_sums"]  # the ranks stay in sync


class Plateau(Tiny):
    scores: list = []

    def build_optimizer(self, model):
        optimizer = super().build_optimizer(model)
        self.epoch_lrs = []
        return optimizer

    def compute_metrics(self, probs, targets):
        self.epoch_lrs.append(self.optimizer.param_groups[0]["lr"])
        return {**super().compute_metrics(probs, targets), "score": self.scores[self.epoch]}


@pytest.mark.parametrize("scores, want", [
    ([0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.01, 0.001]),  # no better accuracy: decay after each flat epoch
    ([0.5, 0.6, 0.7, 0.8], [0.1, 0.1, 0.1, 0.1]),  # rising accuracy (higher is better): no decay
])
def test_reduce_on_plateau_follows_the_competition_metric(tmp_path, scores, want):
    cls = type("P", (Plateau,), {"scores": scores})
    trainer = cls(Plateau.config.override(out_dir=str(tmp_path), sched="plateau", plateau_patience=0, lr=0.1,
                                          decay_rate=0.1, epochs=4, warmup_epochs=0, min_lr=1e-6))
    trainer.fit(0)
    assert trainer.epoch_lrs == pytest.approx(want)


def test_step_schedule_decays_every_decay_epochs_counted_in_updates(tmp_path):
    run = record(str(tmp_path), 4, sched="step", warmup_epochs=0.0, decay_epochs=1.0, decay_rate=0.5)
    per_epoch = math.ceil(math.ceil(N_TRAIN / SCHEDULE["batch_size"]) / 4)
    want = [SCHEDULE["lr"] * 0.5 ** (t // per_epoch) for t in range(3 * per_epoch)]
    assert run["lrs"] == pytest.approx(want)
