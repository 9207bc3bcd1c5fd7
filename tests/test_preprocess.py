"""Model-aware preprocessing: each timm model's own mean/std/interpolation in every pipeline, overridable, recorded."""
import cv2
import numpy as np
import pytest
import yaml

from kit.config import Config, load_config, save_config
from kit.data import read_image
from kit.preprocess import resolve_norm
from kit.trainer import Trainer
from kit.transforms import normalize_images

# OpenAI CLIP's published normalisation, typed in here rather than read from timm
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_MODEL = "vit_xsmall_patch16_clip_224"


def by_hand(path, size, mean, std, interpolation):
    img = cv2.resize(read_image(path), (size, size), interpolation=interpolation).astype(np.float32) / 255
    return ((img - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1)


def seen(ds, trainer) -> np.ndarray:
    """The first image as the model sees it: the loader's uint8, normalised on the device with the run's norm."""
    return normalize_images(ds[0]["image"][None], trainer.norm)[0].numpy()


def test_clip_model_gets_its_own_mean_and_std_in_train_and_eval_pipelines(demo_copy, tmp_path):
    cfg = Config(comp=str(demo_copy), model=CLIP_MODEL, aug="none", num_workers=0, out_dir=str(tmp_path / "runs"))
    trainer = Trainer(cfg)
    assert trainer.config.mean == ",".join(repr(v) for v in CLIP_MEAN)
    assert trainer.norm.mean == pytest.approx(CLIP_MEAN) and trainer.norm.std == pytest.approx(CLIP_STD)
    assert trainer.norm.interpolation == "bicubic"
    train_ds, valid_ds = trainer.build_datasets(0)
    test_ds = trainer.build_test_dataset()
    for ds in (train_ds, valid_ds, test_ds):
        want = by_hand(ds.paths[0], 32, CLIP_MEAN, CLIP_STD, cv2.INTER_CUBIC)
        np.testing.assert_allclose(seen(ds, trainer), want, atol=1e-5)
    # ImageNet's statistics would give other pixels: the test can tell them apart
    imagenet = by_hand(valid_ds.paths[0], 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), cv2.INTER_CUBIC)
    assert np.abs(seen(valid_ds, trainer) - imagenet).max() > 0.05

    # the resolved values are what the run folder records, and they load back unchanged
    save_config(trainer.config, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (saved["mean"], saved["interpolation"]) == (trainer.config.mean, "bicubic")
    assert load_config(tmp_path / "config.yaml") == trainer.config


def test_config_fields_override_the_model_defaults(demo_copy, tmp_path):
    cfg = Config(comp=str(demo_copy), model=CLIP_MODEL, mean="0.5,0.5,0.5", std="0.25,0.25,0.25",
                 interpolation="nearest", aug="none", num_workers=0, out_dir=str(tmp_path / "runs"))
    trainer = Trainer(cfg, inference=True)
    ds = trainer.build_test_dataset()
    np.testing.assert_allclose(seen(ds, trainer), by_hand(ds.paths[0], 32, (0.5,) * 3, (0.25,) * 3,
                                                                cv2.INTER_NEAREST), atol=1e-5)
    assert not (demo_copy / ".kit_cache").exists() and not (demo_copy / "folds.csv").exists()  # inference reads only


def test_timm_defaults_and_bad_values():
    assert resolve_norm("resnet18").mean == pytest.approx((0.485, 0.456, 0.406))
    assert resolve_norm("test_resnet").mean == pytest.approx((0.5, 0.5, 0.5))
    assert resolve_norm("no_such_model_anywhere").interpolation == "bilinear"  # an own model: ImageNet's
    with pytest.raises(ValueError, match="--mean="):
        resolve_norm("resnet18", mean="0.5,0.5")
    with pytest.raises(ValueError, match="--interpolation="):
        resolve_norm("resnet18", interpolation="cubic")


def test_configs_saved_before_preprocessing_was_recorded_load_as_imagenet_bilinear(tmp_path):
    data = Config().to_dict()
    for key in ("mean", "std", "interpolation"):
        data.pop(key)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    cfg = load_config(tmp_path / "config.yaml")
    assert (cfg.mean, cfg.interpolation) == ("0.485,0.456,0.406", "bilinear")
