"""The pixels of the frames the user gave, in the clip that comes out (`known_pixels`).

A model makes its frames as latents of its VAE, and the VAE redraws what it is given: on the shapes model a
frame through the VAE comes back about 30 dB off, a small shape's edges soft, while the frames of a clip the user
gave (keyframes, the input frames of `interpolate-frames`) are the answer at their place. With `known_pixels`:

- each given frame comes out as the user gave it (resized to the clip's size), not as its VAE round trip;
- each made frame that lies between two given frames is redrawn from their pixels: both are warped onto it by
  optical flow (OpenCV's Farneback flow from the made frame to the given one, on grey levels), and each pixel takes the
  warped given pixels where they agree with the model's (a Gaussian weight on their difference, `TOLERANCE`) and
  the model's own where neither does (what the given frames do not show: something uncovered, a new object).

The model decides where things are; the given frames say what they look like. LDMVFI's decoder (Danier et al.
2024, latent diffusion for frame interpolation) likewise takes the input frames' pixels through warping rather
than leaving them to the latent space. Frames before the first given frame or after the last are left as made:
there is only one side to take pixels from, and the nearer a given frame, the more of the clip is the model's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vidldm.errors import VidldmError

#: How far (0-1 levels, mean over the channels, on a 3x3 blur) a warped given pixel may differ from the model's and
#: still count as the same thing: the Gaussian weight's width. Chosen on clips apart from the evaluation's
#: (docs/evaluation.md, "Frame-rate upsampling with the given frames' pixels").
TOLERANCE = 10 / 255
_BLUR = 0.7  # px, Gaussian sigma of the copies the agreement is judged on
_OWN_WEIGHT = float(np.exp(-4))  # the model's pixel counts as a warped one two tolerances off: it wins where none agrees


def with_known_pixels(frames: np.ndarray, given: Mapping[int, np.ndarray], tolerance: float = TOLERANCE) -> np.ndarray:
    """Clips `(B, F, H, W, 3)` float in [0, 1] and the given frames `{index: (H, W, 3) float in [0, 1]}` (already
    at the clip's size) -> the clips with the given frames put back and the frames between two of them redrawn
    from their pixels (module docstring). `frames` itself is not changed."""
    if not given:
        return frames
    cv2 = _opencv()
    out = frames.copy()
    order = sorted(given)
    for index in order:
        out[:, index] = given[index]
    grey = {i: _grey(cv2, given[i]) for i in order}
    for left, right in zip(order, order[1:]):
        for index in range(left + 1, right):
            for b in range(out.shape[0]):
                out[b, index] = _redraw(cv2, frames[b, index], (given[left], grey[left]), (given[right], grey[right]),
                                         tolerance=tolerance)
    return out


def _redraw(cv2, made: np.ndarray, *sources: tuple[np.ndarray, np.ndarray], tolerance: float) -> np.ndarray:
    """One made frame `(H, W, 3)` redrawn from the `(frame, grey)` sources warped onto it."""
    made_grey = _grey(cv2, made)
    total = np.full(made.shape[:2], _OWN_WEIGHT, dtype=np.float32)
    acc = made.astype(np.float32) * _OWN_WEIGHT
    for frame, grey in sources:
        warped = _warp(cv2, frame.astype(np.float32), _flow(cv2, made_grey, grey))
        weight = np.exp(-((_difference(cv2, warped, made) / tolerance) ** 2))
        acc += weight[..., None] * warped
        total += weight
    return (acc / total[..., None]).astype(made.dtype)


def _difference(cv2, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`(H, W)`: how far `a` and `b` `(H, W, 3)` differ around each pixel, on their blurred copies (a sharp edge
    and the model's soft one are the same thing; something in one and not the other is not), the largest
    difference in the 3x3 around it (a pixel at the border of a disagreement disagrees too)."""
    soft = [cv2.GaussianBlur(x.astype(np.float32), (0, 0), _BLUR) for x in (a, b)]
    return cv2.dilate(np.abs(soft[0] - soft[1]).mean(axis=-1), np.ones((3, 3), np.uint8))


def _flow(cv2, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`(H, W, 2)` float32: where each pixel of the grey `source` is in the grey `target`."""
    # Farneback's dense flow (3 pyramid levels, 9-px windows): on a soft made frame against a sharp given one
    # it finds the shift where DIS flow fell short (1.6 of 2 px on a test square), and it read better on the
    # tuning clips (31.5 against 31.4 dB at the best settings of each)
    return cv2.calcOpticalFlowFarneback(source, target, None, 0.5, 3, 9, 5, 5, 1.1, 0)


def _warp(cv2, frame: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`frame` `(H, W, 3)` sampled where `flow` points: the frame as seen from the flow's source."""
    h, w = flow.shape[:2]
    x, y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(frame, x + flow[..., 0], y + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _grey(cv2, frame: np.ndarray) -> np.ndarray:
    """`(H, W, 3)` float in [0, 1] -> `(H, W)` uint8 grey levels, what the flow takes."""
    return cv2.cvtColor((np.clip(frame, 0, 1) * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)


def _opencv():
    try:
        import cv2
    except ImportError as err:
        raise VidldmError("known_pixels needs OpenCV: pip install opencv-python-headless") from err
    return cv2
