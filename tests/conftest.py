"""Shared fixtures: the demo competition, made once per test session (per xdist worker)."""
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no release check over the network
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A pristine demo competition; copy it (demo_copy) before changing anything."""
    from kit.demo import make_demo
    return make_demo(tmp_path_factory.mktemp("demo") / "demo")


@pytest.fixture
def demo_copy(demo_dir, tmp_path) -> Path:
    """A private, writable copy of the demo competition."""
    dst = tmp_path / "demo"
    shutil.copytree(demo_dir, dst, ignore=shutil.ignore_patterns(".kit_cache", "folds.csv"))
    return dst
