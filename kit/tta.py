"""Test-time augmentation views of NCHW batches: run in one forward pass, undone on spatial outputs."""
from __future__ import annotations

import difflib
from typing import Callable

import torch


def _rot(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: torch.rot90(t, k, (-2, -1))


# name: (forward on the image, inverse on a spatial output such as a mask). Every view is a symmetry of
# the square (the dihedral group D4), so its inverse is exact.
VIEWS: dict[str, tuple[Callable, Callable]] = {
    "none": (lambda t: t, lambda t: t),
    "hflip": (lambda t: t.flip(-1), lambda t: t.flip(-1)),
    "vflip": (lambda t: t.flip(-2), lambda t: t.flip(-2)),
    "rot90": (_rot(1), _rot(-1)),
    "rot180": (_rot(2), _rot(2)),
    "rot270": (_rot(3), _rot(1)),
    "transpose": (lambda t: t.transpose(-2, -1), lambda t: t.transpose(-2, -1)),
    "transverse": (lambda t: t.transpose(-2, -1).flip(-2, -1), lambda t: t.flip(-2, -1).transpose(-2, -1)),
}
PRESETS = {
    "none": ["none"],
    "hflip": ["none", "hflip"],
    "flips": ["none", "hflip", "vflip"],
    "rot": ["none", "rot90", "rot180", "rot270"],
    "d4": list(VIEWS),
}
COMBINE = ("mean", "gmean")
# Measured with benchmarks/bench_tta.py (resnet18): on a CPU, one pass over about this many pixels (256 rows
# of 32x32, 64 of 64x64) is the cheapest per image; larger passes leave the caches and cost more.
CPU_PIXELS_PER_PASS = 2 ** 18


def parse_views(spec: str | list | tuple) -> list[str]:
    """Views named by a preset (none, hflip, flips, rot, d4) or a comma-separated list of view names."""
    if isinstance(spec, (list, tuple)):
        names = [str(s).strip() for s in spec]
    elif spec in PRESETS:
        return list(PRESETS[spec])
    else:
        names = [s.strip() for s in str(spec).split(",") if s.strip()]
    for name in names:
        if name not in VIEWS:
            close = difflib.get_close_matches(name, list(VIEWS) + list(PRESETS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown TTA view {name!r}{hint}; views: {', '.join(VIEWS)}; presets: "
                             f"{', '.join(PRESETS)}")
    if not names:
        raise ValueError("no TTA views given")
    return names


def stack_views(x: torch.Tensor, views: list[str]) -> torch.Tensor:
    """All views of a batch concatenated along the batch axis: (len(views) * N, C, H, W)."""
    if x.shape[-1] != x.shape[-2] and any(v in ("rot90", "rot270", "transpose", "transverse") for v in views):
        raise ValueError(f"TTA views {views} turn the image by 90 degrees: they need square images, got "
                         f"{tuple(x.shape[-2:])}")
    return torch.cat([VIEWS[v][0](x) for v in views])


def unstack_views(out: torch.Tensor, views: list[str], spatial: bool) -> torch.Tensor:
    """Split a batched output back into (len(views), N, ...), undoing each view where `spatial`."""
    parts = out.chunk(len(views))
    if spatial:
        parts = [VIEWS[v][1](p) for v, p in zip(views, parts)]
    return torch.stack(parts)


def combine_views(per_view: torch.Tensor, method: str = "mean", class_dim: int | None = 1) -> torch.Tensor:
    """Average probabilities over views (axis 0): arithmetic `mean` or geometric `gmean`.

    The geometric mean is renormalised over `class_dim` (softmax outputs); pass None for sigmoid outputs.
    """
    if method == "mean":
        return per_view.mean(0)
    if method != "gmean":
        raise ValueError(f"unknown TTA combine {method!r}; use one of {COMBINE}")
    g = per_view.clamp_min(1e-7).log().mean(0).exp()
    return g if class_dim is None else g / g.sum(class_dim, keepdim=True)


def auto_max_batch(x: torch.Tensor, device) -> int:
    """Rows per forward pass: all views at once on an accelerator, about CPU_PIXELS_PER_PASS pixels on a CPU."""
    if torch.device(device).type != "cpu":
        return 0
    return max(len(x), CPU_PIXELS_PER_PASS // (x.shape[-1] * x.shape[-2]))


def predict_views(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, views: list[str],
                  method: str = "mean", spatial: bool = False, class_dim: int | None = 1,
                  max_batch: int = 0) -> torch.Tensor:
    """fn(x) averaged over views, batched into one forward pass (outputs are probabilities).

    max_batch caps the rows of one forward pass: views then go in groups (at least one view a pass).
    On a CPU a very large batch leaves the caches and costs more per image than a few smaller ones.
    """
    if views == ["none"]:
        return fn(x)
    per = max(1, max_batch // len(x)) if max_batch else len(views)
    groups = [views[i:i + per] for i in range(0, len(views), per)]
    per_view = torch.cat([unstack_views(fn(stack_views(x, g)), g, spatial) for g in groups])
    return combine_views(per_view, method, class_dim)
