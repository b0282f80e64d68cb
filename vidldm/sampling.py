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
from typing import Any, Literal

import torch
from einops import repeat

Frames = slice | list[int]  # the frames of a context window: a slice, or indices where a closed loop wraps around
# denoiser(model_input (B, C, f, h, w), timesteps (B, f), frames: the window's frames of the clip, step: index
# into the timesteps) -> prediction (B, C, f, h, w)
Denoiser = Callable[[torch.Tensor, torch.Tensor, Frames, int], torch.Tensor]
ConditioningMode = Literal["clean", "replace"]


@dataclass
class KnownFrames:
    """Clean latents `(B, C, K, h, w)` that sit at frames `indices` of the clip; `noise` `(B, C, K, h, w)`
    is the fixed noise used to bring them to the current level in `"replace"` mode."""

    latents: torch.Tensor
    indices: Sequence[int]
    mode: ConditioningMode = "clean"
    noise: torch.Tensor | None = None
    pixels: Any = None  # the given frames `(K, H, W, 3)` uint8 where keyframes gave them (`known_pixels`); the loop ignores them

    def __post_init__(self):
        if self.mode not in ("clean", "replace"):
            raise ValueError(f"conditioning mode must be 'clean' or 'replace', got {self.mode!r}")
        if self.latents.shape[2] != len(self.indices):
            raise ValueError(f"{self.latents.shape[2]} known latents for {len(self.indices)} frame indices")
        if self.mode == "replace" and self.noise is None:
            self.noise = torch.randn_like(self.latents)


WEIGHTING_SCHEMES = ("ramp", "flat", "pyramid", "delayed_reverse_sawtooth")
NOISE_TYPES = ("shuffle_context", "repeat_context", "random")


@dataclass(frozen=True)
class ContextWindows:
    """How a long clip is cut for the denoiser: windows of `length` frames whose starts are `stride` apart
    (diffusers' `context_length`, `context_stride`; neighbours share `length - stride` frames). With
    `closed_loop` the windows run past the last frame back to the first, so a looping clip's ends join.
    `weighting`: how overlapping predictions are blended (`window_weights`)."""

    length: int
    stride: int
    closed_loop: bool = False
    weighting: str = "ramp"

    def __post_init__(self):
        if self.length < 1:
            raise ValueError(f"context length must be at least 1, got {self.length}")
        if not 1 <= self.stride <= max(self.length - 1, 1):
            raise ValueError(f"context stride must be between 1 and {max(self.length - 1, 1)} (less than the window "
                             f"of {self.length}, so windows overlap), got {self.stride}")
        if self.weighting not in WEIGHTING_SCHEMES:
            raise ValueError(f"weighting scheme must be one of {', '.join(WEIGHTING_SCHEMES)}, got {self.weighting!r}")

    def windows(self, num_frames: int) -> list[Frames]:
        return context_windows(num_frames, self.length, self.stride, self.closed_loop)

    def weights(self, device=None) -> torch.Tensor:
        return window_weights(self.length, self.length - self.stride, self.weighting, device=device)


def context_windows(num_frames: int, window: int, stride: int, closed_loop: bool = False) -> list[Frames]:
    """Overlapping windows covering `num_frames`, starts `stride` apart. Open: the last one is aligned to the
    end of the clip (as diffusers' FreeNoise blocks do). Closed loop: a window may run past the end and on
    from frame 0, so the last and first frames are neighbours in some window (AnimateDiff-Evolved's
    `closed_loop`); it needs a clip longer than a window, where there is more than one window to wrap."""
    if num_frames <= window:
        return [slice(0, num_frames)]
    if not 1 <= stride < window:
        raise ValueError(f"context stride must be between 1 and {window - 1} for a window of {window}, got {stride}")
    if closed_loop:
        return [[(s + k) % num_frames for k in range(window)] if s + window > num_frames else slice(s, s + window)
                for s in range(0, num_frames, stride)]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return [slice(s, s + window) for s in starts]


def window_weights(length: int, overlap: int, scheme: str = "ramp", device=None, dtype=None) -> torch.Tensor:
    """`(length,)` blend weights of one window's frames.

    "ramp" (vidldm's): a flat top with linear ramps `overlap + 1` frames long at both ends, so a frame near a
    window's edge defers to the window that holds it near its centre. "flat", "pyramid" and
    "delayed_reverse_sawtooth" are diffusers' FreeNoise schemes (`FreeNoiseTransformerBlock._get_frame_weights`):
    [1, 1, 1, 1, 1], [1, 2, 3, 2, 1] and [0.01, 0.01, 3, 2, 1]."""
    pos = torch.arange(length, device=device, dtype=torch.float32)
    half = (length + 1) // 2
    if scheme == "ramp":
        weights = (torch.minimum(pos + 1, length - pos) / (overlap + 1)).clamp(max=1.0)
    elif scheme == "flat":
        weights = torch.ones_like(pos)
    elif scheme == "pyramid":
        weights = torch.minimum(pos + 1, length - pos)
    elif scheme == "delayed_reverse_sawtooth":
        # the frames before the peak nearly drop out (diffusers' docstring; its code makes one weight too many
        # for odd lengths, which its blocks cannot use)
        weights = torch.where(pos < half - 1, torch.full_like(pos, 0.01), (length - pos).clamp(max=half))
    else:
        raise ValueError(f"weighting scheme must be one of {', '.join(WEIGHTING_SCHEMES)}, got {scheme!r}")
    return weights.to(dtype or torch.float32)


def freenoise_noise(noise: torch.Tensor, window: int, stride: int, noise_type: str = "shuffle_context",
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """FreeNoise's noise rescheduling (Qiu et al. 2023, eq. 7) of `noise` `(B, C, F, h, w)`, so later windows start
    from noise the motion module has seen together instead of from unrelated noise:

    - "shuffle_context" (diffusers' default and code): each block of `stride` frames past the first window
      is the block `window` frames earlier, shuffled; the permutations are drawn from `generator`;
    - "repeat_context": the first window's noise, repeated;
    - "random": unchanged (every frame its own noise)."""
    f = noise.shape[2]
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"noise type must be one of {', '.join(NOISE_TYPES)}, got {noise_type!r}")
    if f <= window or noise_type == "random":
        return noise
    if noise_type == "repeat_context":
        return repeat(noise[:, :, :window], "b c f h w -> b c (n f) h w", n=-(-f // window))[:, :, :f].clone()
    out = noise.clone()
    for start in range(window, f, stride):
        source = torch.arange(start - window, min(f, start - window + stride))
        shuffled = source[torch.randperm(len(source), generator=generator)][: f - start]
        out[:, :, start : start + len(shuffled)] = out[:, :, shuffled.to(noise.device)]
    return out


def windowed_prediction(denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, context: ContextWindows | None,
                        step: int) -> torch.Tensor:
    """Run `denoiser` on each context window of `x` `(B, C, F, h, w)` at loop step `step` and blend the predictions."""
    f = x.shape[2]
    if context is None or f <= context.length:
        return denoiser(x, t, slice(0, f), step)
    total = torch.zeros_like(x, dtype=torch.float32)
    weight_sum = torch.zeros(f, device=x.device)
    weights = context.weights(device=x.device)
    for frames in context.windows(f):
        pred = denoiser(x[:, :, frames], t[:, frames], frames, step)
        index = torch.arange(f, device=x.device)[frames]
        total.index_add_(2, index, pred.float() * weights[None, None, :, None, None])
        weight_sum.index_add_(0, index, weights)
    return (total / weight_sum[None, None, :, None, None]).to(x.dtype)


@torch.no_grad()
def denoise(
    denoiser: Denoiser,
    scheduler,
    latents: torch.Tensor,
    timesteps: Sequence[torch.Tensor] | torch.Tensor,
    *,
    known: KnownFrames | None = None,
    context: ContextWindows | None = None,
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
        prediction = windowed_prediction(denoiser, model_input, frame_t, context, i)
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
