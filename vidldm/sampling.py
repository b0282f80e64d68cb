"""The one denoising loop behind every mode: text-to-video, image animation, video-to-video, extension, long clips.

It acts on latents and a denoiser callable and knows nothing of files, text or VAEs (as in
k-diffusion). The modes are conditionings of this loop, not copies of it:

- *known frames* (an input still, the end of a clip being extended) are frames with their own
  timestep. In `"clean"` mode they enter the model clean with t = 0 (per-frame timesteps; for
  adapters trained with frame conditioning). In `"replace"` mode, training-free, they are put
  back into the noisy state at every step, noised to the current level.
- *video-to-video* starts from noised input latents part-way down the schedule (the caller
  passes the truncated `timesteps`).
- *long clips* run the denoiser on overlapping context windows (FreeNoise-style) and blend the
  predictions with weights that fade in and out across the overlaps, so the UNet never sees
  more than `window` frames and memory depends on the window, not on the clip.

Layouts: latents `(B, C, F, h, w)`; per-frame timesteps `(B, F)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

# denoiser(model_input (B, C, f, h, w), timesteps (B, f), frames: the slice of the clip, step: index into the
# timesteps) -> prediction (B, C, f, h, w)
Denoiser = Callable[[torch.Tensor, torch.Tensor, slice, int], torch.Tensor]
ConditioningMode = Literal["clean", "replace"]


@dataclass
class KnownFrames:
    """Clean latents `(B, C, K, h, w)` that sit at frames `indices` of the clip; `noise` `(B, C, K, h, w)`
    is the fixed noise used to bring them to the current level in `"replace"` mode."""

    latents: torch.Tensor
    indices: Sequence[int]
    mode: ConditioningMode = "clean"
    noise: torch.Tensor | None = None

    def __post_init__(self):
        if self.mode not in ("clean", "replace"):
            raise ValueError(f"conditioning mode must be 'clean' or 'replace', got {self.mode!r}")
        if self.latents.shape[2] != len(self.indices):
            raise ValueError(f"{self.latents.shape[2]} known latents for {len(self.indices)} frame indices")
        if self.mode == "replace" and self.noise is None:
            self.noise = torch.randn_like(self.latents)


def context_windows(num_frames: int, window: int, overlap: int) -> list[slice]:
    """Overlapping windows covering `num_frames`; the last one is aligned to the end of the clip."""
    if num_frames <= window:
        return [slice(0, num_frames)]
    if not 0 <= overlap < window:
        raise ValueError(f"context overlap must be in [0, {window - 1}] for a window of {window}, got {overlap}")
    stride = window - overlap
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return [slice(s, s + window) for s in starts]


def window_weights(length: int, overlap: int, device=None, dtype=None) -> torch.Tensor:
    """`(length,)` blend weights: a flat top with linear ramps `overlap + 1` frames long at both ends,
    so a frame near a window's edge defers to the window that holds it near its centre."""
    pos = torch.arange(length, device=device, dtype=torch.float32)
    ramp = torch.minimum(pos + 1, length - pos) / (overlap + 1)
    return ramp.clamp(max=1.0).to(dtype or torch.float32)


def freenoise_noise(noise: torch.Tensor, window: int, overlap: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """FreeNoise's noise rescheduling: frames past the first window reuse shuffled noise of the first
    window, so every window starts from noise the motion module has seen together. `(B, C, F, h, w)`."""
    f = noise.shape[2]
    if f <= window:
        return noise
    out = noise.clone()
    stride = max(window - overlap, 1)
    for start in range(window, f, stride):
        n = min(stride, f - start)
        perm = torch.randperm(window, generator=generator, device=generator.device if generator else "cpu")[:n]
        out[:, :, start : start + n] = noise[:, :, perm.to(noise.device)]
    return out


def windowed_prediction(denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, window: int | None, overlap: int,
                        step: int) -> torch.Tensor:
    """Run `denoiser` on each context window of `x` `(B, C, F, h, w)` at loop step `step` and blend the predictions."""
    f = x.shape[2]
    if window is None or f <= window:
        return denoiser(x, t, slice(0, f), step)
    total = torch.zeros_like(x, dtype=torch.float32)
    weight_sum = torch.zeros(f, device=x.device)
    weights = window_weights(window, overlap, device=x.device)
    for frames in context_windows(f, window, overlap):
        pred = denoiser(x[:, :, frames], t[:, frames], frames, step)
        total[:, :, frames] += pred.float() * weights[None, None, :, None, None]
        weight_sum[frames] += weights
    return (total / weight_sum[None, None, :, None, None]).to(x.dtype)


@torch.no_grad()
def denoise(
    denoiser: Denoiser,
    scheduler,
    latents: torch.Tensor,
    timesteps: Sequence[torch.Tensor] | torch.Tensor,
    *,
    known: KnownFrames | None = None,
    window: int | None = None,
    overlap: int = 4,
    generator: torch.Generator | list[torch.Generator] | None = None,
    on_step: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
    progress: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Denoise `latents` `(B, C, F, h, w)` along `timesteps` with a diffusers `scheduler`.

    `on_step(i, t, latents)` may return replacement latents (diffusers' callback_on_step_end).
    """
    b, _, f = latents.shape[:3]
    idx = list(known.indices) if known is not None else []
    step_kwargs = {"generator": generator} if "generator" in _step_params(scheduler) else {}
    for i, t in enumerate(timesteps):
        if known is not None and known.mode == "replace":
            latents[:, :, idx] = scheduler.add_noise(known.latents, known.noise, t.reshape(1).expand(b)).to(latents.dtype)
        model_input = scheduler.scale_model_input(latents, t)
        frame_t = t.reshape(1, 1).expand(b, f).clone()
        if known is not None and known.mode == "clean":
            model_input = model_input.clone()
            model_input[:, :, idx] = known.latents.to(model_input.dtype)
            frame_t[:, idx] = 0
        prediction = windowed_prediction(denoiser, model_input, frame_t, window, overlap, i)
        latents = scheduler.step(prediction, t, latents, **step_kwargs, return_dict=False)[0]
        if on_step is not None:
            replaced = on_step(i, t, latents)
            latents = latents if replaced is None else replaced
        if progress is not None:
            progress()
    if known is not None:
        latents[:, :, idx] = known.latents.to(latents.dtype)
    return latents


def _step_params(scheduler) -> set[str]:
    import inspect

    return set(inspect.signature(scheduler.step).parameters)
