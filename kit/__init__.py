"""kit: a competition kit for image classification and segmentation on Accelerate + timm."""
import os
from importlib import import_module

# albumentations asks the network for a newer release at import; offline (Kaggle notebooks, clusters) that waits.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__all__ = ["Competition", "Config", "Trainer", "load_competition", "run"]
_HOMES = {"Competition": "competition", "load_competition": "competition", "Config": "config",
          "Trainer": "trainer", "run": "launch"}


def __getattr__(name: str):
    # Lazy: `kit` sub-commands that never train should not pay for importing torch and timm.
    if name in _HOMES:
        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'kit' has no attribute {name!r}")
