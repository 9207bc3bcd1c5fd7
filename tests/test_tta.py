"""TTA views: batched output equals a per-view loop; every inverse restores the orientation."""
import numpy as np
import pytest
import timm
import torch

from kit import tta


def test_every_inverse_restores_an_asymmetric_mask():
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., 0, :4] = 1  # an L: no symmetry of the square maps it onto itself
    mask[..., :3, 0] = 2
    for name, (fwd, inv) in tta.VIEWS.items():
        moved = fwd(mask)
        assert name == "none" or not torch.equal(moved, mask), name
        assert torch.equal(inv(moved), mask), name


def test_views_are_the_eight_distinct_symmetries():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    outs = {tuple(fwd(x).flatten().tolist()) for fwd, _ in tta.VIEWS.values()}
    assert len(outs) == 8


@pytest.mark.parametrize("spec", ["hflip", "d4", "none,vflip,rot90"])
@pytest.mark.parametrize("method", ["mean", "gmean"])
@pytest.mark.parametrize("max_batch", [0, 6])  # 6 rows: the views of 3 images go two by two
def test_batched_views_equal_a_per_view_loop(spec, method, max_batch):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=5, pretrained=False).eval()
    x = torch.randn(3, 3, 32, 32)
    views = tta.parse_views(spec)
    fn = lambda t: model(t).softmax(1)
    with torch.no_grad():
        got = tta.predict_views(fn, x, views, method, max_batch=max_batch)
        ref = [fn(tta.VIEWS[v][0](x)).numpy() for v in views]
    want = np.mean(ref, 0) if method == "mean" else np.exp(np.mean(np.log(np.clip(ref, 1e-7, None)), 0))
    if method == "gmean":
        want = want / want.sum(1, keepdims=True)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


@pytest.mark.parametrize("max_batch", [0, 4])
def test_spatial_outputs_are_undone_before_averaging(max_batch):
    x = torch.rand(2, 1, 8, 8)
    identity = lambda t: t  # a "segmentation model" that returns its input: every view must map back to x
    got = tta.predict_views(identity, x, tta.parse_views("d4"), spatial=True, class_dim=None, max_batch=max_batch)
    torch.testing.assert_close(got, x)


def test_forward_passes_are_capped_on_a_cpu():
    sizes = []
    fn = lambda t: sizes.append(len(t)) or t.flatten(1)[:, :4].softmax(1)  # noqa: E731
    x = torch.rand(32, 3, 64, 64)
    assert tta.auto_max_batch(x, "cpu") == 64 and tta.auto_max_batch(x, "cuda") == 0
    tta.predict_views(fn, x, tta.parse_views("d4"), max_batch=tta.auto_max_batch(x, "cpu"))
    assert sizes == [64, 64, 64, 64]
    sizes.clear()
    small = x[..., :32, :32]
    tta.predict_views(fn, small, tta.parse_views("d4"), max_batch=tta.auto_max_batch(small, "cpu"))
    assert sizes == [256]


def test_unknown_view_and_non_square_input_are_named():
    with pytest.raises(ValueError, match="did you mean 'hflip'"):
        tta.parse_views("hflp")
    with pytest.raises(ValueError, match="square"):
        tta.stack_views(torch.zeros(1, 3, 8, 6), ["rot90"])
