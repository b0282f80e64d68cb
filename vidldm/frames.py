"""Turning user images and clips into model tensors and back.

User side: frames `(F, H, W, 3)` uint8 (or anything `vidldm.io.to_uint8_frames` accepts).
Model side: video `(F, 3, H, W)` float in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from vidldm.io import read_image, read_video, to_uint8_frames


def resize_center_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale `(H, W, 3)` uint8 to cover `height x width`, then crop the centre (keeps the aspect ratio)."""
    h, w = frame.shape[:2]
    if (h, w) == (height, width):
        return frame
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    img = Image.fromarray(frame).resize((nw, nh), Image.Resampling.LANCZOS)
    top, left = (nh - height) // 2, (nw - width) // 2
    return np.asarray(img.crop((left, top, left + width, top + height)))


def load_frames(source, *, image: bool = False) -> np.ndarray:
    """A path, PIL image(s), array or tensor -> `(F, H, W, 3)` uint8; `image=True` reads one still."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        return read_image(source)[None] if image else read_video(source)[0]
    if isinstance(source, Image.Image):
        return to_uint8_frames([source])
    if image and getattr(source, "ndim", 0) == 3:  # one still (H, W, 3) or (3, H, W)
        return to_uint8_frames(source[None])
    return to_uint8_frames(source)


def frames_to_tensor(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """`(F, H, W, 3)` uint8 -> `(F, 3, height, width)` float in [-1, 1], resized and centre-cropped."""
    resized = np.stack([resize_center_crop(f, height, width) for f in frames])
    return rearrange(torch.from_numpy(resized).float() / 127.5 - 1.0, "f h w c -> f c h w")


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """`(B, 3, F, H, W)` in [-1, 1] -> `(B, F, H, W, 3)` float in [0, 1] (numpy)."""
    video = (video.float() / 2 + 0.5).clamp(0, 1)
    return rearrange(video, "b c f h w -> b f h w c").cpu().numpy()
