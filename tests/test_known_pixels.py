"""`known_pixels`: the given frames come out as given, and frames between two of them are redrawn from their
pixels where they agree with what the model drew (vidldm.known_pixels)."""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from vidldm.known_pixels import with_known_pixels  # noqa: E402


def square(x: float, size: int = 64, blur: float = 0.0, colour=(0.9, 0.2, 0.1), extra: bool = False) -> np.ndarray:
    """A frame `(H, W, 3)` in [0, 1]: a 12-px square whose left edge is at `x` on dark grey, optionally blurred
    (what a VAE round trip does to edges) and with a second object the given frames do not have."""
    frame = np.full((size, size, 3), 0.15, dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # coverage of each pixel by the square, so sub-pixel positions are exact
    cover_x = np.clip(np.minimum(xx + 1, x + 12) - np.maximum(xx, x), 0, 1)
    cover_y = np.clip(np.minimum(yy + 1, 38) - np.maximum(yy, 26), 0, 1)
    frame += (cover_x * cover_y)[..., None] * (np.array(colour, dtype=np.float32) - 0.15)
    if extra:
        frame[50:58, 4:12] = (0.1, 0.8, 0.2)
    if blur:
        frame = cv2.GaussianBlur(frame, (0, 0), blur)
    return frame


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(1 / np.mean((a.astype(np.float64) - b) ** 2))


def test_given_frames_come_out_as_given_and_the_frames_between_take_their_pixels():
    truth = np.stack([square(20 + 2 * i) for i in range(5)])
    made = np.stack([square(20 + 2 * i, blur=1.2) for i in range(5)])[None]  # right places, soft edges
    given = {0: truth[0], 2: truth[2], 4: truth[4]}
    out = with_known_pixels(made, given)
    assert out.shape == made.shape and out is not made
    for i in given:
        assert np.array_equal(out[0, i], truth[i])
    for i in (1, 3):
        assert psnr(out[0, i], truth[i]) > psnr(made[0, i], truth[i]) + 10
    assert np.array_equal(made[0, 1], square(22, blur=1.2))  # the input is left alone


def test_what_the_given_frames_do_not_show_stays_the_models():
    given = {0: square(20), 2: square(24)}
    made = np.stack([square(20), square(22, extra=True), square(24)])[None]
    out = with_known_pixels(made, given)[0, 1]
    assert np.abs(out[50:58, 4:12] - made[0, 1, 50:58, 4:12]).max() < 0.05  # the new object is kept
    assert psnr(out, square(22, extra=True)) > 35


def test_frames_outside_the_given_ones_and_no_given_frames_are_left_as_made():
    made = np.stack([square(20 + 2 * i, blur=1.2) for i in range(5)])[None]
    out = with_known_pixels(made, {1: square(22), 3: square(26)})
    assert np.array_equal(out[0, 0], made[0, 0]) and np.array_equal(out[0, 4], made[0, 4])
    assert with_known_pixels(made, {}) is made
