"""RLE: round trips in both pixel orders, a hand-checked example, empty masks, malformed strings."""
import numpy as np
import pytest

from kit.rle import RLEError, rle_decode, rle_encode

# A 4x5 mask: rows 1-2 of column 1, and row 0 of column 4.
HAND = np.zeros((4, 5), np.uint8)
HAND[1:3, 1] = 1
HAND[0, 4] = 1


def test_hand_checked_example_in_both_orders():
    # column-major numbers pixels down each column: (r, c) -> c * 4 + r + 1
    assert rle_encode(HAND, "F") == "6 2 17 1"
    # row-major numbers pixels along each row: (r, c) -> r * 5 + c + 1
    assert rle_encode(HAND, "C") == "5 1 7 1 12 1"
    assert np.array_equal(rle_decode("6 2 17 1", (4, 5), "F"), HAND)
    assert np.array_equal(rle_decode("5 1 7 1 12 1", (4, 5), "C"), HAND)


@pytest.mark.parametrize("order", ["F", "C"])
def test_round_trip_on_random_masks(order):
    rng = np.random.default_rng(0)
    for density in (0.02, 0.3, 0.7, 1.0):
        mask = (rng.random((37, 23)) < density).astype(np.uint8)
        rle = rle_encode(mask, order)
        assert np.array_equal(rle_decode(rle, mask.shape, order), mask)
    full = np.ones((6, 7), np.uint8)
    assert rle_encode(full, order) == "1 42"


def test_orders_differ_on_a_non_symmetric_mask():
    assert rle_encode(HAND, "F") != rle_encode(HAND, "C")
    assert not np.array_equal(rle_decode("6 2 17 1", (4, 5), "C"), HAND)


def test_empty_mask_is_the_empty_string():
    assert rle_encode(np.zeros((3, 3))) == ""
    assert rle_decode("", (3, 3)).sum() == 0
    assert rle_decode("  ", (3, 3)).shape == (3, 3)


@pytest.mark.parametrize("bad, why", [
    ("1 2 3", "even count"), ("0 2", "1-based"), ("5 2 3 1", "does not come after"), ("1 x", "not an integer"),
    ("3 0", "length 0"), ("19 3", "beyond the image's 20 pixels"), ("nan", "missing value"),
])
def test_malformed_rle_raises_naming_the_row(bad, why):
    with pytest.raises(RLEError, match=why) as e:
        rle_decode(bad, (4, 5), where="train.csv:7 column 'circle'")
    assert "train.csv:7 column 'circle'" in str(e.value)


def test_bad_order_is_refused():
    with pytest.raises(ValueError, match="column-major"):
        rle_encode(HAND, "K")
