"""Run-length encoding of masks as Kaggle writes it: 1-indexed "start length" pairs.

Pixels are numbered in column-major order (`order="F"`: down the first column, then the next,
as most Kaggle segmentation competitions do) or row-major (`order="C"`); the competition says which.
An empty mask is the empty string.
"""
from __future__ import annotations

import numpy as np

from .errors import KitError

ORDERS = ("F", "C")


class RLEError(KitError, ValueError):
    """A run-length string cannot be a mask of the given size; the message names where it came from."""


def _check_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"RLE order {order!r}: use 'F' (column-major) or 'C' (row-major)")
    return order


def rle_encode(mask: np.ndarray, order: str = "F") -> str:
    """A 2-D mask (non-zero = on) as 1-indexed 'start length' pairs; '' for an empty mask."""
    if np.ndim(mask) != 2:
        raise ValueError(f"rle_encode needs a 2-D mask, got shape {np.shape(mask)}")
    flat = np.asarray(mask).ravel(order=_check_order(order)) != 0
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])  # run starts and ends (0-based, end exclusive)
    starts, ends = edges[::2], edges[1::2]
    pairs = np.stack([starts + 1, ends - starts], axis=1).ravel()
    return " ".join(map(str, pairs.tolist()))


def rle_decode(rle: str, shape: tuple[int, int], order: str = "F", where: str = "RLE") -> np.ndarray:
    """A uint8 mask of `shape` from a run-length string; raise RLEError naming `where` if malformed."""
    from .validate import rle_problem  # the one definition of a valid run-length string
    h, w = int(shape[0]), int(shape[1])
    text = "" if rle is None or (isinstance(rle, float) and np.isnan(rle)) else str(rle)
    problem = rle_problem(text, h * w)
    if problem:
        raise RLEError(f"{where}: {problem}")
    flat = np.zeros(h * w, dtype=np.uint8)
    nums = np.asarray(text.split(), dtype=np.int64)
    for start, length in zip(nums[::2] - 1, nums[1::2]):
        flat[start:start + length] = 1
    return flat.reshape((h, w), order=_check_order(order))
