"""exp004_sam: sharpness-aware minimisation (SAM) on the baseline, as an `optimizer_step` override.

Hypothesis: SAM steps toward flat minima, which should transfer better to the shifted test set.
Each update takes two forward/backward passes: the gradient at w + rho * g / |g| moves w.
Parent: exp001_baseline.
Result: not measured yet (the recipe is what this file shows; checkpoints and resume are untouched).
"""
import torch

from kit import Config, Trainer, run


class Exp(Trainer):
    config = Config(comp="data/demo", model="resnet18", img_size=32, batch_size=32, epochs=8, lr=2e-3)
    rho = 0.05  # radius of the neighbourhood whose worst case is minimised

    def optimizer_step(self, batch: dict) -> None:
        """Climb to the worst nearby weights, take the gradient there, step from the original weights."""
        if not self.accelerator.sync_gradients:  # accumulating: no update on this batch
            return super().optimizer_step(batch)
        params = [p for p in self.model.parameters() if p.grad is not None]
        with torch.no_grad():
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
            climbs = [p.grad * (self.rho / (norm + 1e-12)) for p in params]
            for p, climb in zip(params, climbs):
                p.add_(climb)
        self.optimizer.zero_grad(set_to_none=True)
        self.backward_step(self.train_step(batch)["loss"])  # the gradient at the climbed weights
        with torch.no_grad():
            for p, climb in zip(params, climbs):
                p.sub_(climb)
        super().optimizer_step(batch)


if __name__ == "__main__":
    run(Exp)
