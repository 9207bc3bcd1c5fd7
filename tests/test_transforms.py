"""The augmentation hook (any albumentations pipeline from a file or a module:function) and seeded views."""
import albumentations as A
import numpy as np
import pytest
import torch

from kit.data import seed_pipeline
from kit.transforms import build_train_transforms


def names(pipeline):
    return [type(t).__name__ for t in pipeline.transforms]


def noisy_flips(size):
    """A pipeline factory a user would write in their own module."""
    return [A.HorizontalFlip(p=1.0), A.GaussNoise(std_range=(0.1, 0.2), p=1.0)]


@pytest.mark.parametrize("suffix, fmt", [(".yaml", "yaml"), (".json", "json")])
def test_saved_albumentations_pipeline_is_loaded_and_finished(tmp_path, suffix, fmt):
    path = tmp_path / f"augs{suffix}"
    A.save(A.Compose([A.VerticalFlip(p=1.0), A.CoarseDropout(p=1.0)]), str(path), data_format=fmt)
    pipeline = build_train_transforms(str(path), 24)
    assert names(pipeline) == ["VerticalFlip", "CoarseDropout", "Resize", "Normalize", "ToTensorV2"]
    img = np.tile(np.arange(32, dtype=np.uint8)[:, None, None] * 8, (1, 32, 3))  # rows brighten downwards
    out = pipeline(image=img)["image"]
    assert tuple(out.shape) == (3, 24, 24)
    assert out[0, 0].mean() > out[0, -1].mean()  # flipped vertically: the bright rows are on top


def test_module_function_hook_and_clear_errors(tmp_path):
    pipeline = build_train_transforms("tests.test_transforms:noisy_flips", 16)
    assert names(pipeline)[:2] == ["HorizontalFlip", "GaussNoise"] and names(pipeline)[-1] == "ToTensorV2"
    with pytest.raises(FileNotFoundError, match="augs.yaml"):
        build_train_transforms(str(tmp_path / "augs.yaml"), 16)
    with pytest.raises(ValueError, match="cannot call nope"):
        build_train_transforms("tests.test_transforms:nope", 16)
    with pytest.raises(KeyError, match="module:function"):
        build_train_transforms("extreme", 16)


def test_seeded_pipeline_is_a_function_of_its_seed_alone():
    """Each row's view depends on its seed only, not on what the pipeline drew before (workers, resume)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pipeline = build_train_transforms("heavy", 32)
    views = {}
    for seed in (5, 6, 5, 7, 6):
        seed_pipeline(pipeline, seed)
        out = pipeline(image=image)["image"]
        if seed in views:
            assert torch.equal(views[seed], out), f"seed {seed} gave two different views"
        views[seed] = out
    # distinct seeds draw distinct views (heavy has many random transforms)
    assert not torch.equal(views[5], views[6]) and not torch.equal(views[6], views[7])
    # every transform draws from the one shared generator: the view is not the old per-transform seeding
    assert all(t.random_generator is pipeline.random_generator for t in pipeline.transforms)


def test_device_normalisation_is_bitwise_the_cpu_pipelines_for_every_pixel_value():
    from kit.transforms import build_eval_transforms, normalize_images
    rng = np.random.default_rng(0)
    # every value in every channel at least once, then random images through the heavy preset
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2).repeat(4, 0)  # (4, 256, 3)
    ramp = np.ascontiguousarray(np.concatenate([ramp, ramp[:, ::-1]], 0)[:, :256])
    cpu = A.Compose([A.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(image=ramp)["image"]  # independent
    dev = normalize_images(torch.from_numpy(ramp).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert dev.dtype == np.float32 and np.array_equal(dev, cpu)
    for seed in range(3):
        img = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
        want = build_train_transforms("heavy", 32)
        got = build_train_transforms("heavy", 32, normalize=False)
        seed_pipeline(want, seed)
        seed_pipeline(got, seed)
        a, raw = want(image=img)["image"], got(image=img)["image"]
        assert raw.dtype == torch.uint8 and names(got)[-2:] == ["Resize", "ToTensorV2"]
        b = normalize_images(raw[None], channels_last=True)
        assert torch.equal(b[0], a) and b.is_contiguous(memory_format=torch.channels_last)
    plain = build_eval_transforms(32)(image=img)["image"][None]
    assert normalize_images(plain) is plain  # normalised already (a user's pipeline): left as it is
    with pytest.raises(ValueError, match="4 channels"):
        normalize_images(torch.zeros(1, 4, 8, 8, dtype=torch.uint8))
