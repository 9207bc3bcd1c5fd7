"""Segmentation TTA: each view is undone on the mask, so an asymmetric mask comes back as it was."""
import pytest
import torch

from kit.segmentation import predict_probs
from kit.tta import PRESETS, VIEWS, stack_views, unstack_views


def l_shape(n=9) -> torch.Tensor:
    """An L whose every flip and rotation differs from it: (1, 1, n, n)."""
    m = torch.zeros(1, 1, n, n)
    m[0, 0, 1:7, 2] = 1
    m[0, 0, 6, 2:6] = 1
    m[0, 0, 1, 3] = 1
    return m


def test_the_mask_is_asymmetric_under_every_view():
    m = l_shape()
    for name, (fwd, _) in VIEWS.items():
        if name != "none":
            assert not torch.equal(fwd(m), m), name


@pytest.mark.parametrize("view", list(VIEWS))
def test_each_inverse_restores_the_original_orientation(view):
    m = l_shape()
    fwd, inv = VIEWS[view]
    assert torch.equal(inv(fwd(m)), m)
    per_view = unstack_views(stack_views(m, [view]), [view], spatial=True)
    assert torch.equal(per_view[0], m)


class PixelModel(torch.nn.Module):
    """A segmenter that looks at each pixel alone: logits = 8 * (red - 0.5), so it commutes with every view."""

    def forward(self, x):
        return 8 * (x[:, :1] - 0.5)


class CornerModel(torch.nn.Module):
    """A segmenter that always marks the top-left pixel: its views disagree once undone."""

    def forward(self, x):
        out = torch.full_like(x[:, :1], -20.0)
        out[..., 0, 0] = 20.0
        return out


@pytest.mark.parametrize("preset", ["hflip", "flips", "rot", "d4"])
def test_tta_mask_is_in_the_original_orientation(preset):
    m = l_shape()
    image = m.repeat(1, 3, 1, 1)
    probs = predict_probs(PixelModel(), image, "binary", PRESETS[preset])
    assert torch.equal(probs > 0.5, m > 0.5)
    assert torch.allclose(probs, predict_probs(PixelModel(), image, "binary", ["none"]))
    # a model that is not equivariant: undone views put the corner in different places, averaged
    views = PRESETS[preset]
    corner = predict_probs(CornerModel(), image, "binary", views)
    # only the identity and the transpose leave the top-left pixel where it is
    assert corner[0, 0, 0, 0] == pytest.approx(sum(v in ("none", "transpose") for v in views) / len(views), abs=1e-6)
    assert corner.sum() == pytest.approx(1.0, abs=1e-4)  # each view's mark lands on one pixel
    marked = {tuple(i) for i in (corner[0, 0] > 1e-3).nonzero().tolist()}
    assert marked <= {(0, 0), (0, 8), (8, 0), (8, 8)} and len(marked) == min(len(views), 4)


def test_multiclass_tta_keeps_a_distribution_per_pixel():
    m = l_shape()
    logits_model = lambda x: torch.cat([-8 * (x[:, :1] - 0.5), 8 * (x[:, :1] - 0.5)], 1)  # noqa: E731
    probs = predict_probs(logits_model, m.repeat(1, 3, 1, 1), "multiclass", PRESETS["d4"])
    assert torch.allclose(probs.sum(1), torch.ones(1, 9, 9))
    assert torch.equal(probs.argmax(1, keepdim=True), m.long())
