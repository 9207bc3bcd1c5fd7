"""Fine-tuning a backbone: a lower learning rate for it and freezing it for the first epochs."""
from __future__ import annotations

import torch


def head_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of the classifier's parameters (timm's `get_classifier()`); the rest is the backbone."""
    if not hasattr(model, "get_classifier"):
        raise TypeError(f"{type(model).__name__} has no get_classifier(): --backbone_lr_scale and "
                        "--freeze_epochs need a timm model (or a model that defines it)")
    head = {id(p) for p in model.get_classifier().parameters()}
    return {n for n, p in model.named_parameters() if id(p) in head}


def param_groups(model: torch.nn.Module, weight_decay: float, backbone_lr_scale: float) -> list[dict]:
    """Optimizer groups: backbone / head x decay / no decay; timm schedulers honour `lr_scale`."""
    head = head_parameter_names(model)
    groups: dict = {}
    for name, p in model.named_parameters():
        part = "head" if name in head else "backbone"
        no_decay = p.ndim <= 1 or name.endswith(".bias")  # timm's rule: no decay on biases and norms
        key = (part, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_scale": backbone_lr_scale if part == "backbone" else 1.0}
        groups[key]["params"].append(p)
    return list(groups.values())


def set_backbone_trainable(model: torch.nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze every parameter outside the classifier."""
    head = head_parameter_names(model)
    for name, p in model.named_parameters():
        if name not in head:
            p.requires_grad_(trainable)
