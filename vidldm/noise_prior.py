"""Noise priors across frames (PYoCo, Ge et al. 2023, section 3.2): frames that start from correlated noise.

    independent noise z (B, C, F, h, w), i.i.d. N(0, 1) --correlate--> noise of the same shape and per-frame
    distribution N(0, 1), with frames correlated:
    - mixed:       corr(f, g) = a^2 / (1 + a^2) for every pair (a share common to all frames), a = strength
    - progressive: corr(f, f + k) = (a / sqrt(1 + a^2))^k (each frame its predecessor's, plus its own)

Why: with independent noise each frame's layout is settled on its own and the temporal layers must pull them
together; a video model trained on correlated noise starts from frames that already agree (PYoCo). A model
sampled with a prior must have been trained with it (`train.noise_prior`): an adapter trained on independent
noise reads the shared part as a clip that stands still (docs/shapes-model.md, "Smoothness").

The prior is a fixed linear map of the independent draw, not a second draw: a seed gives the same clip with and
without the generator being asked for more numbers, and `independent` returns `z` itself (bitwise).
Mixed: z_f = (z_f - m) + m with m the frame mean, independent of the residuals; scaling the residuals by
sqrt(1 - rho) and the mean by sqrt(rho + (1 - rho) / F) * sqrt(F) gives exactly variance 1 and covariance rho.
"""

from __future__ import annotations

import math

import torch

NOISE_PRIORS = ("independent", "mixed", "progressive")  # also in sampling_settings.py, which imports no torch


def correlate(noise: torch.Tensor, prior: str = "independent", strength: float = 1.0) -> torch.Tensor:
    """`noise` `(B, C, F, h, w)`, i.i.d. N(0, 1) -> the same shape with `prior`'s correlation across frames (dim 2)."""
    if prior not in NOISE_PRIORS:
        raise ValueError(f"noise prior must be one of {', '.join(NOISE_PRIORS)}, got {prior!r}")
    if prior == "independent" or strength == 0 or noise.shape[2] == 1:
        return noise
    a2 = strength * strength
    if prior == "mixed":
        rho, frames = a2 / (1 + a2), noise.shape[2]
        mean = noise.mean(dim=2, keepdim=True)
        return math.sqrt(1 - rho) * (noise - mean) + math.sqrt(rho * frames + (1 - rho)) * mean
    # progressive: an AR(1) chain along the frames, stationary at variance 1
    keep, fresh = strength / math.sqrt(1 + a2), 1 / math.sqrt(1 + a2)
    frames = [noise[:, :, 0]]
    for f in range(1, noise.shape[2]):
        frames.append(keep * frames[-1] + fresh * noise[:, :, f])
    return torch.stack(frames, dim=2)
