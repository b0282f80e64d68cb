"""The long-clip settings of one call, resolved and checked: context windows, FreeNoise, FreeInit.

Each value comes from the call, else from what `enable_free_noise` / `enable_free_init` set on the pipeline
(diffusers' switches), else from vidldm's defaults: windows of 16 frames (or the adapter's length if
smaller) overlapping by a quarter, vidldm's ramp blend, FreeNoise's shuffled noise on, FreeInit off.
Every mistake is one `VidldmError` naming the Python argument.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from vidldm.errors import VidldmError
from vidldm.free_init import FreeInit
from vidldm.sampling import NOISE_TYPES, ContextWindows

DEFAULT_CONTEXT = 16  # what AnimateDiff's modules were trained on (v2/v3 modules hold 32 positions but saw 16)
FREE_INIT_OPTIONS = {"free_init_method": "method", "free_init_order": "order",
                     "free_init_spatial_stop_frequency": "spatial_stop_frequency",
                     "free_init_temporal_stop_frequency": "temporal_stop_frequency",
                     "free_init_fast_sampling": "use_fast_sampling"}


@dataclass(frozen=True)
class LongClip:
    """`windows`: how the denoiser sees the clip; `noise_type`: FreeNoise's ("random" when it is off);
    `free_init`: None when off."""

    windows: ContextWindows
    noise_type: str
    free_init: FreeInit | None


def long_clip_options(num_frames: int, max_seq_length: int, given: dict[str, Any], free_noise: dict[str, Any] | None,
                      free_init: FreeInit | None) -> LongClip:
    """`given`: the call's long-clip arguments (None: not given); `free_noise`: `enable_free_noise`'s settings;
    `free_init`: `enable_free_init`'s."""
    enabled = free_noise or {}
    return LongClip(_windows(num_frames, max_seq_length, given, enabled), _noise_type(given, enabled),
                    _free_init(given, free_init))


def _windows(num_frames: int, max_seq_length: int, given: dict, enabled: dict) -> ContextWindows:
    length = given.get("context_frames")
    if length is not None and length > num_frames:
        raise VidldmError(f"context_frames ({length}) is longer than the clip ({num_frames} frames); the whole clip "
                          "fits in one window: leave context_frames out")
    length = length or enabled.get("context_length") or min(DEFAULT_CONTEXT, max_seq_length)
    if not isinstance(length, int) or not 1 <= length <= max_seq_length:
        raise VidldmError(f"context_frames must be between 1 and {max_seq_length} (the motion adapter's length), got {length}")
    if num_frames > length < 2:
        raise VidldmError(f"context_frames must be at least 2 for a clip of {num_frames} frames (windows must overlap)")
    stride = _stride(length, given, enabled)
    closed_loop = bool(given.get("closed_loop"))
    if closed_loop and num_frames <= length:
        raise VidldmError(f"closed_loop needs a clip longer than one context window ({length} frames) so that windows "
                          f"can wrap around its end; give more frames or a smaller context_frames")
    weighting = given.get("weighting_scheme") or enabled.get("weighting_scheme") or "ramp"
    try:
        return ContextWindows(length, stride, closed_loop, weighting)
    except ValueError as e:
        raise VidldmError(str(e)) from None


def _stride(length: int, given: dict, enabled: dict) -> int:
    """Frames between window starts: `context_stride`, or the window less `context_overlap`; else a quarter overlap."""
    stride, overlap = given.get("context_stride"), given.get("context_overlap")
    if stride is not None and overlap is not None and stride != length - overlap:
        raise VidldmError(f"context_stride {stride} and context_overlap {overlap} disagree for windows of {length} "
                          f"(stride = window - overlap); give one of them")
    if overlap is not None:
        if not 0 < overlap < length:
            raise VidldmError(f"context_overlap must be between 1 and {length - 1} (windows of {length} must "
                              f"overlap to blend), got {overlap}")
        stride = length - overlap
    if stride is None:
        stride = enabled.get("context_stride") or max(1, length - max(1, length // 4))
    if length > 1 and not 1 <= stride < length:
        raise VidldmError(f"context_stride must be between 1 and {length - 1} (less than the window of {length}, "
                          f"so windows overlap), got {stride}")
    return min(stride, max(length - 1, 1))


def _noise_type(given: dict, enabled: dict) -> str:
    free_noise, noise_type = given.get("free_noise"), given.get("noise_type")
    if free_noise is False:
        if noise_type not in (None, "random"):
            raise VidldmError(f"noise_type {noise_type!r} is FreeNoise's, which free_noise=False turns off; give one")
        return "random"
    fallback = enabled.get("noise_type")
    if free_noise and fallback == "random":  # free_noise=True after disable_free_noise(): FreeNoise's default
        fallback = None
    noise_type = noise_type or fallback or "shuffle_context"
    if free_noise and noise_type == "random":
        raise VidldmError("noise_type 'random' is no FreeNoise noise, and free_noise=True asks for it; give one")
    if noise_type not in NOISE_TYPES:
        raise VidldmError(f"noise_type must be one of {', '.join(NOISE_TYPES)}, got {noise_type!r}")
    return noise_type


def _free_init(given: dict, enabled: FreeInit | None) -> FreeInit | None:
    options = {FREE_INIT_OPTIONS[k]: v for k, v in given.items() if k in FREE_INIT_OPTIONS and v not in (None, False)}
    iters = given.get("free_init")
    if (iters is None or iters == 1) and enabled is None:  # one run is plain sampling
        if options:
            raise VidldmError(f"{', '.join(k for k in FREE_INIT_OPTIONS if given.get(k) not in (None, False))} "
                              "set FreeInit up, but it is off: give free_init (iterations) 2 or more too")
        return None
    base = {f.name: getattr(enabled, f.name) for f in fields(FreeInit)} if enabled is not None else {}
    try:
        return FreeInit(**{**base, **options, **({"num_iters": iters} if iters is not None else {})})
    except ValueError as e:
        raise VidldmError(str(e)) from None
