"""A low-pass over time on the sampled latents, before they are decoded (`temporal_smoothing`).

Sampled latents jitter from frame to frame more than encoded clips do (the shapes model: second differences'
std 0.19 against 0.11), and what is left after the temporal decoder is mostly high-frequency in time: the object
a pixel or two off its path in one frame. Each frame not given by the user becomes `w * previous + (1 - 2w) *
itself + w * next`, with the end frames repeated beyond the clip. The weights sum to 1 and are symmetric, so a
cell that changes at a constant rate passes unchanged; a one-frame jump is spread over three frames. A moving
object's cells are not linear in time (a cell turns from background to object), so a large `w` blends the
object with the background it left: on the shapes model w = 0.25 cost colour, w = 0.15 did not (docs/
shapes-model.md). Off (0) unless a model's `sampling.json` or the call sets it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vidldm.sampling_settings import MAX_TEMPORAL_SMOOTHING


def smooth_over_time(latents: torch.Tensor, weight: float, keep: Sequence[int] = ()) -> torch.Tensor:
    """Latents `(B, C, F, h, w)` -> the same shape, each frame except those in `keep` (frames the user gave:
    keyframes, an animated still, the input frames of `interpolate-frames`) mixed with its neighbours by `weight`
    (0 to 1/3; 0 returns `latents` itself). A kept frame is still the neighbour of the frames next to it."""
    if not 0 <= weight <= MAX_TEMPORAL_SMOOTHING:
        raise ValueError(f"temporal smoothing weight must be from 0 to 1/3, got {weight!r}")
    if weight == 0 or latents.shape[2] < 2:
        return latents
    padded = torch.cat([latents[:, :, :1], latents, latents[:, :, -1:]], dim=2)
    smooth = weight * padded[:, :, :-2] + (1 - 2 * weight) * latents + weight * padded[:, :, 2:]
    if len(keep):
        kept = sorted(set(keep))
        smooth[:, :, kept] = latents[:, :, kept]
    return smooth
