"""A Canny edge detector in torch, for canny ControlNets given a plain video (`--control-preprocess canny`).

    frames (F, H, W, 3) uint8 --grey, Gaussian blur--> Sobel gradients --thin to one pixel (non-maximum
    suppression)--> strong edges (>= high) grown along weak ones (>= low) --> white edges on black (F, H, W, 3)

No downloaded weights and no OpenCV: the four steps of Canny (1986) as convolutions and comparisons, frame by frame.
The thresholds are on the gradient's L2 magnitude of 0-255 grey levels (OpenCV's `Canny(img, 100, 200)` uses the
same defaults with an L1 magnitude, so its edges are a little sparser); the canny ControlNets were trained on
edge maps like these: one-pixel white lines on black.
"""

from __future__ import annotations

import numpy as np

LOW, HIGH = 100.0, 200.0


def canny(frames: np.ndarray, low: float = LOW, high: float = HIGH, sigma: float = 1.4) -> np.ndarray:
    """Edge maps `(F, H, W, 3)` uint8 (255 on edges, 0 elsewhere) of `frames` `(F, H, W, 3)` uint8."""
    import torch
    import torch.nn.functional as fn

    x = torch.from_numpy(np.ascontiguousarray(frames)).float()
    grey = (x @ torch.tensor([0.299, 0.587, 0.114]))[:, None]  # (F, 1, H, W), 0-255
    k = torch.arange(5, dtype=torch.float32) - 2
    g = torch.exp(-(k**2) / (2 * sigma**2))
    g = g / g.sum()
    grey = fn.conv2d(fn.pad(grey, (2, 2, 2, 2), mode="replicate"), (g[:, None] * g[None, :])[None, None])
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    padded = fn.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx, gy = fn.conv2d(padded, sobel[None, None]), fn.conv2d(padded, sobel.T[None, None])
    magnitude = torch.hypot(gx, gy)
    edges = _thin(magnitude, torch.atan2(gy, gx))
    strong, weak = edges >= high, edges >= low
    for _ in range(max(frames.shape[1:3])):  # hysteresis: weak edges touching strong ones become strong
        grown = weak & (fn.max_pool2d(strong.float(), 3, stride=1, padding=1) > 0)
        if torch.equal(grown, strong):
            break
        strong = grown
    out = strong[:, 0].to(torch.uint8) * 255
    return np.repeat(out.numpy()[..., None], 3, axis=-1)


def _thin(magnitude, angle):
    """Non-maximum suppression: keep a pixel's magnitude `(F, 1, H, W)` only where it is at least both neighbours'
    across the edge (the gradient's direction, rounded to 0, 45, 90 or 135 degrees)."""
    import math

    import torch
    import torch.nn.functional as fn

    padded = fn.pad(magnitude, (1, 1, 1, 1))
    h, w = magnitude.shape[-2:]

    def shifted(dy, dx):
        return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    sector = torch.round(angle / (math.pi / 4)).long() % 4  # 0: horizontal gradient, 1: 45, 2: vertical, 3: 135
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    for s, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        local_max = (magnitude >= shifted(dy, dx)) & (magnitude >= shifted(-dy, -dx))
        keep |= (sector == s) & local_max
    return torch.where(keep, magnitude, torch.zeros_like(magnitude))
