"""SegTrainer parts: smp models and losses by config, mask tables, RLE submissions built, validated, scored."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from kit.competition import load_competition
from kit.leaderboard import score_submission
from kit.rle import rle_decode, rle_encode
from kit.seg_data import mask_spec
from kit.seg_metrics import binarize, mask_score, pair_scores
from kit.seg_submit import build_rle_submission
from kit.segmentation import SEG_LOSSES, SegConfig, create_seg_loss, create_seg_model, read_masks, write_masks
from kit.validate import validate_submission


@pytest.mark.parametrize("arch, encoder", [("Unet", "tu-test_resnet"), ("FPN", "resnet18"),
                                           ("DeepLabV3Plus", "tu-test_resnet"), ("Unet", "tu-resnet18")])
def test_smp_models_over_timm_and_smp_encoders(arch, encoder):
    model = create_seg_model(SegConfig(arch=arch, encoder=encoder), 3)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("mode", ["binary", "multilabel", "multiclass"])
@pytest.mark.parametrize("name", SEG_LOSSES)
def test_every_loss_trains_every_mode(name, mode):
    torch.manual_seed(0)
    channels = {"binary": 1, "multilabel": 2, "multiclass": 3}[mode]
    if mode == "multiclass":
        target = torch.randint(0, 3, (2, 8, 8))
    else:
        target = (torch.rand(2, channels, 8, 8) > 0.5).float()
    logits = torch.zeros(2, channels, 8, 8, requires_grad=True)
    loss_fn = create_seg_loss(name, mode)
    opt = torch.optim.SGD([logits], lr=1.0)
    first = loss_fn(logits, target)
    for _ in range(5):
        opt.zero_grad()
        loss = loss_fn(logits, target)
        loss.backward()
        opt.step()
    assert torch.isfinite(first) and loss_fn(logits, target) < first  # it can learn the masks


def test_bce_dice_is_the_sum_of_its_parts():
    import segmentation_models_pytorch as smp
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    want = smp.losses.SoftBCEWithLogitsLoss()(logits, target) + smp.losses.DiceLoss("binary")(logits, target)
    assert create_seg_loss("bce_dice", "binary")(logits, target) == pytest.approx(want.item())
    with pytest.raises(ValueError, match="seg_loss"):
        create_seg_loss("jaccard", "binary")


def test_mask_table_round_trip(tmp_path):
    probs = np.random.default_rng(0).random((3, 2, 4, 4)).astype(np.float32)
    write_masks(tmp_path / "m.npz", ["007", "b", "c"], probs)
    ids, back = read_masks(tmp_path / "m.npz")
    assert ids == ["007", "b", "c"] and np.allclose(back, probs, atol=1e-3)


@pytest.fixture(scope="module")
def seg_demo(tmp_path_factory):
    from kit.demo import make_demo
    return make_demo(tmp_path_factory.mktemp("seg") / "demo_seg", task="segmentation")


def truth_probs(comp, ids, size):
    """Probability masks at `size` from the hidden solution: 0.8 on, 0.2 off."""
    spec = mask_spec(comp)
    sol = pd.read_csv(comp.path(comp.leaderboard), dtype=str, keep_default_na=False).set_index("id")
    out = np.zeros((len(ids), 2, size, size), np.float32)
    for n, i in enumerate(ids):
        for c, cls in enumerate(spec.classes):
            m = rle_decode(sol.at[i, cls], spec.image_size, "F")
            out[n, c] = torch.nn.functional.interpolate(torch.tensor(m[None, None], dtype=torch.float32),
                                                        size=(size, size), mode="nearest")[0, 0]
    return 0.2 + 0.6 * out


@pytest.mark.parametrize("size", [64, 32])
def test_perfect_masks_submit_valid_rle_and_score_one(seg_demo, tmp_path, size):
    comp = load_competition(seg_demo)
    ids = comp.read_test().id.tolist()[::-1]  # any order: the submission follows the sample's
    run = tmp_path / "run"
    run.mkdir()
    write_masks(run / "test_masks.npz", ids, truth_probs(comp, ids, size))
    (run / "cv.json").write_text(json.dumps({"threshold": [0.5, 0.5]}))
    sub = build_rle_submission(comp, run)
    sample = pd.read_csv(seg_demo / "sample_submission.csv", dtype=str)
    assert list(sub.columns) == list(sample.columns) and sub.id.tolist() == sample.id.tolist()
    csv = tmp_path / "sub.csv"
    sub.to_csv(csv, index=False)
    assert validate_submission(comp, csv) == []
    scores = score_submission(comp, csv)
    if size == 64:
        assert scores == {"public": pytest.approx(1.0), "private": pytest.approx(1.0)}
    else:  # masks predicted at half resolution are upsampled: close, not exact
        assert 0.85 < scores["public"] < 1.0
    # a threshold above every probability empties the masks: only empty-truth pairs still score
    empty = build_rle_submission(comp, run, threshold=0.9)
    assert (empty[["circle", "rectangle"]] == "").all().all()


def test_local_score_matches_numpy_dice_and_validation_catches_bad_rle(seg_demo, tmp_path):
    comp = load_competition(seg_demo)
    sol = pd.read_csv(comp.path(comp.leaderboard), dtype=str, keep_default_na=False)
    rng = np.random.default_rng(0)
    sub = sol[["id", "circle", "rectangle"]].copy()
    for col in ("circle", "rectangle"):  # keep half the masks, replace the rest with noise
        noisy = [rle_encode((rng.random((64, 64)) < 0.1).astype(np.uint8)) for _ in range(len(sub))]
        sub[col] = np.where(rng.random(len(sub)) < 0.5, sub[col], noisy)
    csv = tmp_path / "noisy.csv"
    sub.sort_values("id").to_csv(csv, index=False)
    assert validate_submission(comp, csv) == []
    scores = score_submission(comp, csv)
    for usage in ("Public", "Private"):
        part = sol[sol.Usage == usage].set_index("id")
        s = sub.set_index("id").loc[part.index]
        dec = lambda t, c: np.stack([rle_decode(v, (64, 64)) for v in t[c]])  # noqa: E731
        pred = np.stack([dec(s, "circle"), dec(s, "rectangle")], 1)
        true = np.stack([dec(part, "circle"), dec(part, "rectangle")], 1)
        a, b = pred.astype(bool), true.astype(bool)
        inter, total = (a & b).sum((2, 3)), a.sum((2, 3)) + b.sum((2, 3))
        numpy_dice = np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1)).mean()
        assert scores[usage.lower()] == pytest.approx(numpy_dice)
        assert scores[usage.lower()] == pytest.approx(pair_scores(pred, true).mean())
    sub.loc[3, "circle"] = "5 3 4 1"
    sub.loc[5, "rectangle"] = "4095 9"
    sub.to_csv(csv, index=False)
    problems = validate_submission(comp, csv)
    assert len(problems) == 2
    assert "row 5, column 'circle'" in problems[0] and "does not come after" in problems[0]
    assert "row 7, column 'rectangle'" in problems[1] and "beyond the image's 4096 pixels" in problems[1]


def test_trainer_preflight_names_a_malformed_rle_row_before_training(seg_demo, tmp_path):
    import shutil

    from kit.preflight import PreflightError
    from kit.segmentation import SegTrainer
    comp_dir = tmp_path / "c"
    shutil.copytree(seg_demo, comp_dir, ignore=shutil.ignore_patterns(".kit_cache", "folds.csv"))
    train = pd.read_csv(comp_dir / "train.csv", dtype=str, keep_default_na=False)
    train.loc[4, "rectangle"] = "10 5 12 3"
    train.to_csv(comp_dir / "train.csv", index=False)
    cfg = SegConfig(comp=str(comp_dir), out_dir=str(tmp_path / "runs"), predict_test=False)
    with pytest.raises(PreflightError, match=r"train.csv:6 column 'rectangle' .*does not come after"):
        SegTrainer(cfg)
    assert not (comp_dir / "folds.csv").exists()  # nothing written before the data is fixed


def test_long_layout_one_row_per_image_and_class(seg_demo, tmp_path):
    import shutil

    import yaml
    root = tmp_path / "long"
    shutil.copytree(seg_demo, root, ignore=shutil.ignore_patterns(".kit_cache", "folds.csv"))
    spec = yaml.safe_load((root / "competition.yaml").read_text())
    spec["submission"] = {"kind": "rle", "layout": "long", "columns": ["id", "EncodedPixels"]}
    (root / "competition.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(Exception, match="test_csv"):
        build_rle_submission(load_competition(root), tmp_path)
    spec["test_csv"] = "test.csv"
    (root / "competition.yaml").write_text(yaml.safe_dump(spec))
    sol = pd.read_csv(root / "leaderboard" / "solution.csv", dtype=str, keep_default_na=False)
    sol[["id"]].to_csv(root / "test.csv", index=False)
    long = sol.melt(id_vars=["id", "Usage"], value_vars=["circle", "rectangle"], var_name="cls",
                    value_name="EncodedPixels")
    long["id"] = long.id + "_" + long.cls
    long[["id", "EncodedPixels", "Usage"]].to_csv(root / "leaderboard" / "solution.csv", index=False)
    long[["id"]].assign(EncodedPixels="").sort_values("id").to_csv(root / "sample_submission.csv", index=False)
    comp = load_competition(root)
    ids = comp.read_test().id.tolist()
    run = tmp_path / "run"
    run.mkdir()
    # the wide solution's masks, predicted perfectly
    write_masks(run / "test_masks.npz", ids, truth_probs(load_competition(seg_demo), ids, 64))
    sub = build_rle_submission(comp, run, threshold=0.5)
    assert len(sub) == 2 * len(ids) and sub.id.iloc[0].rsplit("_", 1)[1] in ("circle", "rectangle")
    csv = tmp_path / "long.csv"
    sub.to_csv(csv, index=False)
    assert validate_submission(comp, csv) == []
    assert score_submission(comp, csv) == {"public": pytest.approx(1.0), "private": pytest.approx(1.0)}
    sub.loc[sub.id.str.endswith("_circle"), "EncodedPixels"] = ""  # drop every circle
    sub.to_csv(csv, index=False)
    assert score_submission(comp, csv)["public"] < 0.9


@pytest.mark.parametrize("override", [{"mixup": 0.2}, {"sampler": "balanced"}, {"valid_schemes": "plain,testlike"}])
def test_classification_only_options_are_refused(seg_demo, override):
    from kit.segmentation import SegTrainer
    key = next(iter(override))
    with pytest.raises(ValueError, match=f"--{key}: not available for segmentation"):
        SegTrainer(SegConfig(comp=str(seg_demo), **override))


def test_multiclass_png_competition_trains_and_submits_in_process(tmp_path):
    """PNG masks with a class index per pixel: softmax, cross-entropy + dice, arg-max masks, RLE out."""
    import cv2
    import yaml

    from kit.seg_demo import draw_sample
    from kit.segmentation import SegTrainer
    rng = np.random.default_rng(0)
    root = tmp_path / "mc"
    for d in ("train", "test", "masks"):
        (root / d).mkdir(parents=True)
    ids = [f"im{i:02d}" for i in range(24)]
    for n, i in enumerate(ids):
        img, m = draw_sample(rng)
        split = "train" if n < 18 else "test"
        cv2.imwrite(str(root / split / f"{i}.png"), img)
        if split == "train":
            cv2.imwrite(str(root / "masks" / f"{i}.png"), (m[..., 0] + 2 * m[..., 1]).astype(np.uint8))
    pd.DataFrame({"id": ids[:18]}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": ids[18:], "EncodedPixels_circle": "", "EncodedPixels_rectangle": ""}).to_csv(
        root / "sample_submission.csv", index=False)
    (root / "competition.yaml").write_text(yaml.safe_dump({
        "task": "segmentation", "classes": ["circle", "rectangle"], "image_size": [64, 64], "metric": "iou",
        "masks": {"mode": "multiclass", "source": "png", "folder": "masks"},
        "submission": {"kind": "rle", "columns": ["id", "EncodedPixels_circle", "EncodedPixels_rectangle"]}}))
    cfg = SegConfig(comp=str(root), out_dir=str(tmp_path / "runs"), name="mc", encoder="tu-test_resnet",
                    img_size=32, batch_size=6, epochs=1, num_workers=0, n_folds=3, tta="hflip", seg_loss="bce_dice")
    trainer = SegTrainer(cfg)
    summary = trainer.fit(0)
    cv = trainer.finish([summary])
    assert cv["min_area"] == 0 and cv["threshold"] == 0.5  # arg-max masks: nothing tuned
    row = json.loads((tmp_path / "runs" / "mc" / "fold0" / "metrics.jsonl").read_text())
    assert row["valid/score"] == row["valid/iou"]
    # the fold's score is that of its stored (float16) OOF masks against the PNG masks at model resolution;
    # after one epoch the softmax is near-uniform, so float16 rounding may move arg-maxes off valid/iou's
    oof_ids, oof = read_masks(tmp_path / "runs" / "mc" / "fold0" / "oof_masks.npz")
    pngs = [cv2.resize(cv2.imread(str(root / "masks" / f"{i}.png"), cv2.IMREAD_GRAYSCALE), (32, 32),
                       interpolation=cv2.INTER_NEAREST) for i in oof_ids]
    truth = np.stack([np.stack([p == k for k in (1, 2)]) for p in pngs])
    assert cv["per_fold"][0] == pytest.approx(mask_score(binarize(oof, "multiclass", 0.5), truth, "iou"))
    ids_out, probs = read_masks(tmp_path / "runs" / "mc" / "test_masks.npz")
    assert ids_out == ids[18:] and probs.shape == (6, 3, 32, 32)
    assert np.allclose(probs.sum(1), 1, atol=1e-2)  # softmax over background + 2 classes
    sub = build_rle_submission(load_competition(root), tmp_path / "runs" / "mc")
    csv = tmp_path / "sub.csv"
    sub.to_csv(csv, index=False)
    assert validate_submission(load_competition(root), csv) == []
