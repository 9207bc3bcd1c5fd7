"""Run under `accelerate launch`: record the learning rate of every optimizer update, for accumulation 1 and 4."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's kit and tests

from tests.tiny import Tiny  # noqa: E402

SCHEDULE = dict(epochs=3, batch_size=4, lr=0.1, min_lr=1e-4, warmup_epochs=1.0, sched="cosine", optimizer="adamw")


class LRRecorder(Tiny):
    """Records the lr each real optimizer update runs with (a step pre-hook fires on updates only)."""

    def build_optimizer(self, model):
        optimizer = super().build_optimizer(model)
        self.lrs, self.conv_sums = [], [model.conv.weight.sum().item()]
        optimizer.register_step_pre_hook(lambda opt, args, kw: self.lrs.append(opt.param_groups[0]["lr"]))
        return optimizer

    def compute_metrics(self, probs, targets):
        self.conv_sums.append(self.accelerator.unwrap_model(self.model).conv.weight.sum().item())
        return super().compute_metrics(probs, targets)

    def build_scheduler(self, optimizer, updates_per_epoch):
        self.updates_per_epoch = updates_per_epoch
        return super().build_scheduler(optimizer, updates_per_epoch)


def record(out_dir: str, grad_accum: int, **changes) -> dict:
    """Train fold 0 and return the recorded learning rates, the update count per epoch, the conv weight sums."""
    trainer = LRRecorder(LRRecorder.config.override(out_dir=out_dir, grad_accum=grad_accum, **{**SCHEDULE, **changes}))
    trainer.fit(0)
    return {"lrs": trainer.lrs, "updates_per_epoch": trainer.updates_per_epoch, "conv_sums": trainer.conv_sums,
            "rank": trainer.accelerator.process_index, "world": trainer.accelerator.num_processes}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    runs = {accum: record(str(out / f"runs{accum}"), accum) for accum in (1, 4)}
    # the rest of the recipe under DDP: a backbone frozen then unfrozen, EMA, CutMix/MixUp, balanced sampling
    runs["recipe"] = record(str(out / "recipe"), 1, freeze_epochs=1, ema_decay=0.9, mixup=0.2, cutmix=1.0,
                            loss="focal", sampler="balanced")
    (out / f"lrs.rank{runs[1]['rank']}.json").write_text(json.dumps(runs))
