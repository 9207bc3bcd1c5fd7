"""Mask spec, mask loading from PNG files and RLE columns, the image+mask dataset, mask pre-flight."""
import albumentations as A
import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from albumentations.pytorch import ToTensorV2

from kit.competition import CompetitionError, load_competition
from kit.rle import RLEError, rle_encode
from kit.seg_data import SegDataset, check_masks, load_mask, mask_spec


def write_comp(root, masks: dict, classes, target_columns=(), rows=None, **extra):
    """A 3-image segmentation competition with 8x6 images; `rows` adds train.csv columns."""
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = ["a", "b", "c"]
    for i in ids:
        cv2.imwrite(str(root / "train" / f"{i}.png"), rng.integers(0, 255, (8, 6, 3), dtype=np.uint8))
    pd.DataFrame({"id": ids, **(rows or {})}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": ["t"], **{c: "" for c in classes}}).to_csv(root / "sample_submission.csv", index=False)
    spec = {"task": "segmentation", "classes": list(classes), "image_size": [8, 6], "masks": masks, "metric": "dice",
            "submission": {"kind": "rle", "columns": ["id", *classes]}, **extra}
    if target_columns:  # PNG competitions leave it out
        spec["target_columns"] = list(target_columns)
    (root / "competition.yaml").write_text(yaml.safe_dump(spec))
    return load_competition(root)


def asymmetric(h=8, w=6, seed=0):
    m = np.zeros((h, w), np.uint8)
    m[1:6, 1] = 1
    m[5, 1:4] = 1  # an L: no flip or rotation maps it onto itself
    return np.roll(m, seed, axis=1)


def test_png_binary_multiclass_and_multilabel(tmp_path):
    # binary: any non-zero pixel is on
    comp = write_comp(tmp_path / "bin", {"mode": "binary", "source": "png", "folder": "masks"}, ["ship"])
    (comp.root / "masks").mkdir()
    cv2.imwrite(str(comp.root / "masks" / "a.png"), asymmetric() * 255)
    spec = mask_spec(comp)
    mask = load_mask(comp, spec, pd.Series({"id": "a"}))
    assert mask.shape == (8, 6, 1) and np.array_equal(mask[..., 0], asymmetric())
    # multiclass: pixel value k is class k, 0 background
    comp = write_comp(tmp_path / "mc", {"mode": "multiclass", "source": "png", "folder": "masks"}, ["x", "y"])
    (comp.root / "masks").mkdir()
    values = asymmetric() + 2 * asymmetric(seed=3) * (1 - asymmetric())
    cv2.imwrite(str(comp.root / "masks" / "a.png"), values.astype(np.uint8))
    spec = mask_spec(comp)
    assert spec.num_outputs == 3
    mask = load_mask(comp, spec, pd.Series({"id": "a"}))
    assert np.array_equal(mask[..., 0], values == 1) and np.array_equal(mask[..., 1], values == 2)
    # multilabel: one file per class
    comp = write_comp(tmp_path / "ml", {"mode": "multilabel", "source": "png", "folder": "m",
                                        "pattern": "{id}_{class}.png"}, ["x", "y"])
    (comp.root / "m").mkdir()
    cv2.imwrite(str(comp.root / "m" / "a_x.png"), asymmetric() * 255)
    cv2.imwrite(str(comp.root / "m" / "a_y.png"), asymmetric(seed=2) * 255)
    mask = load_mask(comp, mask_spec(comp), pd.Series({"id": "a"}))
    assert np.array_equal(mask[..., 1], asymmetric(seed=2))
    problems = check_masks(comp, mask_spec(comp), comp.read_train())
    assert len(problems) == 4 and "train.csv:3" in problems[0] and "b_x.png: missing" in problems[0]


def test_rle_columns_in_both_orders(tmp_path):
    m = asymmetric()
    for order in ("F", "C"):
        comp = write_comp(tmp_path / order, {"mode": "binary", "source": "rle", "order": order}, ["ship"],
                          ["EncodedPixels"], rows={"EncodedPixels": [rle_encode(m, order), "", "1 3"]})
        spec = mask_spec(comp)
        df = comp.read_train()
        assert np.array_equal(load_mask(comp, spec, df.iloc[0])[..., 0], m)
        assert load_mask(comp, spec, df.iloc[1]).sum() == 0


def test_malformed_rle_is_named_by_line_and_column(tmp_path):
    comp = write_comp(tmp_path, {"mode": "multilabel", "source": "rle"}, ["x", "y"], ["rx", "ry"],
                      rows={"rx": ["", "1 2", "3 4"], "ry": ["", "4 1 2 1", "1 99"]})
    spec = mask_spec(comp)
    problems = check_masks(comp, spec, comp.read_train())
    assert len(problems) == 2
    assert "train.csv:3 column 'ry' (id 'b')" in problems[0] and "does not come after" in problems[0]
    assert "train.csv:4 column 'ry' (id 'c')" in problems[1] and "beyond the image's 48 pixels" in problems[1]
    with pytest.raises(RLEError, match=r"train.csv:4 column 'ry' \(id 'c'\)"):
        load_mask(comp, spec, comp.read_train().iloc[2], line=4)


@pytest.mark.parametrize("masks, classes, cols, match", [
    ({"mode": "binary"}, ["a", "b"], ["r1", "r2"], "exactly one class"),
    ({"mode": "semantic"}, ["a"], ["r"], "masks.mode"),
    ({"mode": "binary", "order": "K"}, ["a"], ["r"], "masks.order"),
    ({"mode": "multilabel", "source": "rle"}, ["a", "b"], ["r1"], "one RLE column per class"),
    ({"mode": "multilabel", "source": "png", "pattern": "{id}.png"}, ["a", "b"], [], "masks.pattern"),
])
def test_bad_spec_names_the_key(tmp_path, masks, classes, cols, match):
    comp = write_comp(tmp_path, masks, classes, cols, rows={c: ["", "", ""] for c in cols})
    with pytest.raises(CompetitionError, match=match):
        mask_spec(comp)


def test_dataset_moves_mask_with_image(tmp_path):
    m = asymmetric()
    comp = write_comp(tmp_path, {"mode": "binary", "source": "rle"}, ["ship"], ["rle"],
                      rows={"rle": [rle_encode(m), "", ""]})
    spec = mask_spec(comp)
    image = cv2.cvtColor(cv2.imread(str(comp.root / "train" / "a.png")), cv2.COLOR_BGR2RGB)
    flip = A.Compose([A.HorizontalFlip(p=1.0), A.Resize(16, 12, interpolation=cv2.INTER_NEAREST), ToTensorV2()])
    ds = SegDataset(comp, spec, comp.read_train(), [comp.image_path("a", "train")], flip)
    item = ds[0]
    want = cv2.resize(m[:, ::-1].copy(), (12, 16), interpolation=cv2.INTER_NEAREST)
    assert item["mask"].shape == (1, 16, 12) and item["mask"].dtype == torch.float32
    assert np.array_equal(item["mask"][0].numpy(), want)
    want_img = cv2.resize(image[:, ::-1].copy(), (12, 16), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), want_img)
    assert ds.targets.numpy().shape == (1, 1, 16, 12)


def test_multiclass_target_is_a_class_index_map(tmp_path):
    comp = write_comp(tmp_path, {"mode": "multiclass", "source": "rle"}, ["x", "y"], ["rx", "ry"],
                      rows={"rx": [rle_encode(asymmetric()), "", ""], "ry": [rle_encode(asymmetric(seed=4)), "", ""]})
    spec = mask_spec(comp)
    ds = SegDataset(comp, spec, comp.read_train(), [comp.image_path(i, "train") for i in "abc"],
                    A.Compose([ToTensorV2()]))
    target = ds[0]["mask"]
    assert target.dtype == torch.long and target.shape == (8, 6)
    assert set(target.unique().tolist()) == {0, 1, 2}
    assert np.array_equal(ds.targets.numpy()[0, 1], asymmetric(seed=4))


def test_augmentation_is_drawn_per_row_and_epoch(tmp_path):
    """As for images: row i of epoch e gets the same augmentation whatever came before it (exact resume)."""
    m = asymmetric()
    comp = write_comp(tmp_path, {"mode": "binary", "source": "rle"}, ["ship"], ["rle"],
                      rows={"rle": [rle_encode(m), rle_encode(asymmetric(seed=2)), ""]})
    pipeline = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.Transpose(p=0.5), ToTensorV2()])
    ds = SegDataset(comp, mask_spec(comp), comp.read_train(), [comp.image_path(i, "train") for i in "abc"],
                    pipeline)
    ds.seed_augmentation(7)

    def draws(epoch, rows):
        ds.set_epoch(epoch)
        return [(ds[i]["image"].clone(), ds[i]["mask"].clone()) for i in rows]

    first = draws(0, [0, 1])
    again = draws(0, [1, 0])[::-1]  # another order, other draws in between: the same views
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    views = {draws(e, [0])[0][1].numpy().tobytes() for e in range(8)}
    assert len(views) > 1  # a new draw each epoch
    raw = cv2.cvtColor(cv2.imread(str(comp.root / "train" / "a.png")), cv2.COLOR_BGR2RGB)
    for e in range(8):  # image and mask always moved together: the mask's view is the image's
        image, mask = draws(e, [0])[0]
        turn = lambda x, t, flip: np.flip(np.swapaxes(x, 0, 1) if t else x, flip)  # noqa: E731
        views = [(turn(raw, t, flip), turn(m, t, flip)) for t in (False, True) for flip in ((), (0,), (1,), (0, 1))]
        [seen_m] = [vm for vi, vm in views if np.array_equal(image.permute(1, 2, 0).numpy(), vi)]
        assert np.array_equal(mask[0].numpy(), seen_m)
