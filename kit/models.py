"""Models from timm, with pretrained weights from a local file or the hub."""
from __future__ import annotations

from pathlib import Path

import timm
import torch

from .errors import KitError


class WeightsError(KitError, RuntimeError):
    """Pretrained weights could not be found or loaded; the message says what to do."""


def load_state_dict(path: str | Path) -> dict:
    """Read a .safetensors or torch checkpoint, unwrapping common containers and prefixes."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    # torch.compile and DDP wrap parameter names; strip so any of them loads into a plain model
    for prefix in ("_orig_mod.", "module."):
        state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    return state


def load_weights(model: torch.nn.Module, path: str | Path, strict_head: bool = False) -> None:
    """Load weights into `model`; a classifier of another size is skipped unless strict_head."""
    state = load_state_dict(path)
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if skipped and strict_head:
        raise WeightsError(f"{path}: shape mismatch for {skipped}")
    state = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise WeightsError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")


def create_model(name: str, num_classes: int, pretrained: bool = False, weights: str = "",
                 drop_rate: float = 0.0, in_chans: int = 3) -> torch.nn.Module:
    """A timm model; `weights` (a local file) wins over `pretrained` (the hub)."""
    if name not in timm.list_models() and name.split(".")[0] not in timm.list_models():
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        raise WeightsError(f"timm has no model {name!r}; similar: {close}")
    try:
        model = timm.create_model(name, pretrained=pretrained and not weights, num_classes=num_classes,
                                  drop_rate=drop_rate, in_chans=in_chans)
    except (OSError, ConnectionError, RuntimeError) as e:
        if not pretrained:
            raise
        raise WeightsError(
            f"could not fetch pretrained weights for {name!r} from the hub ({type(e).__name__}: {e}). "
            "Offline? Download them where there is a network and pass --weights=/path/to/file.safetensors, "
            "or train from scratch with --pretrained=false."
        ) from e
    if weights:
        load_weights(model, weights)
    return model
