"""A lower learning rate for the backbone, and a backbone frozen for the first epochs."""
import pytest
import timm
import torch

from kit.finetune import head_parameter_names, param_groups
from tests.tiny import Tiny


def test_timm_model_groups_scale_the_backbone_lr_through_the_scheduler(tmp_path):
    model = timm.create_model("test_resnet", num_classes=3)
    head = head_parameter_names(model)
    assert head == {n for n, _ in model.get_classifier().named_parameters(prefix="fc")}
    trainer = Tiny(Tiny.config.override(out_dir=str(tmp_path), backbone_lr_scale=0.1, lr=0.01, optimizer="adamw",
                                        weight_decay=0.05, warmup_epochs=0))
    optimizer = trainer.build_optimizer(model)
    scheduler = trainer.build_scheduler(optimizer, updates_per_epoch=10)
    scheduler.step_update(num_updates=5)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in optimizer.param_groups:
        in_head = {names[id(p)] in head for p in g["params"]}
        assert len(in_head) == 1  # a group is all backbone or all head
        want = scheduler._get_lr(5)[0] * (1.0 if in_head.pop() else 0.1)
        assert g["lr"] == pytest.approx(want)
        assert g["weight_decay"] == (0.0 if all(p.ndim <= 1 for p in g["params"]) else 0.05)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


class Frozen(Tiny):
    def compute_metrics(self, probs, targets):
        state = self.accelerator.unwrap_model(self.model).state_dict()
        self.snaps = getattr(self, "snaps", []) + [{k: v.clone() for k, v in state.items()}]
        return super().compute_metrics(probs, targets)


def test_backbone_frozen_for_the_first_epoch_then_trained(tmp_path):
    trainer = Frozen(Frozen.config.override(out_dir=str(tmp_path), freeze_epochs=1, epochs=2))
    torch.manual_seed(0)
    start = trainer.build_model().state_dict()
    trainer.fit(0)
    after1, after2 = trainer.snaps
    torch.testing.assert_close(after1["conv.weight"], start["conv.weight"])  # frozen in epoch 0
    assert not torch.allclose(after1["fc.weight"], start["fc.weight"])  # the head learned
    assert not torch.allclose(after2["conv.weight"], after1["conv.weight"])  # unfrozen in epoch 1


def test_a_model_without_a_classifier_is_named():
    with pytest.raises(TypeError, match="Sequential has no get_classifier"):
        param_groups(torch.nn.Sequential(torch.nn.Linear(2, 2)), 0.0, 0.1)
