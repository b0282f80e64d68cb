"""Samples to batches, for every dataset the trainer reads (video folders and latent caches alike)."""

from __future__ import annotations

from typing import Any

import torch


def collate(items: list[dict]) -> dict[str, Any]:
    """Stack tensors (`pixel_values` `(B, 3, F, H, W)`, `latents` `(B, C, F, h, w)`, ...), keep everything else
    (captions, paths) as lists."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
