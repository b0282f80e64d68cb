"""Latent walks: clips made along a path between seeds and prompts, to see the latent space change smoothly.

A walk has stops, each a (prompt, seed). Between two neighbouring stops it makes `between` more clips at
t = 1/(between + 1), 2/(between + 1), ...: the starting noise is the slerp of the two stops' noise (so every
clip starts from noise of a real draw's norm, `vidldm.latents`), and the text embeddings are interpolated
between the two prompts' (lerp, as prompt travel does within a clip). The clips are then laid out one after
another (one long clip) or side by side (a grid, each cell a clip, all playing at once).

Layouts: noise `(1, C, F, h, w)`; embeddings `(1, L, D)`; clips `(N, F, H, W, 3)` float in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from einops import rearrange

from vidldm.errors import VidldmError
from vidldm.latents import interpolate_embeddings, slerp
from vidldm.pipeline import VideoPipeline

LAYOUTS = ("sequence", "grid")


def walk_stops(prompts: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """Pair prompts with seeds: one of either is held for every stop of the other, else one each."""
    if not prompts or not seeds:
        raise VidldmError("a walk needs at least one prompt and one seed")
    n = max(len(prompts), len(seeds))
    if n < 2:
        raise VidldmError("a walk needs two stops at least: give two prompts or two seeds (or both)")
    if len(prompts) not in (1, n) or len(seeds) not in (1, n):
        raise VidldmError(f"{len(prompts)} prompts and {len(seeds)} seeds: give one of either, or as many of both")
    return list(zip(prompts * (n // len(prompts)), seeds * (n // len(seeds))))


def walk_points(n_stops: int, between: int) -> list[tuple[int, float]]:
    """`(segment, t)` of every clip: each stop (t = 0 of its segment, the last stop t = 1 of the last) and
    `between` evenly spaced points inside every segment."""
    points = [(s, k / (between + 1)) for s in range(n_stops - 1) for k in range(between + 1)]
    return points + [(n_stops - 2, 1.0)]


@torch.no_grad()
def latent_walk(pipe: VideoPipeline, prompts: list[str], seeds: list[int], between: int, num_frames: int,
                height: int, width: int, negative_prompt: str | None = None, on_clip=None, **call) -> np.ndarray:
    """The clips of a walk `(N, F, H, W, 3)` in [0, 1]; `call` are `VideoPipeline.__call__` settings.
    `on_clip(i, n)` is told before each clip (progress)."""
    stops = walk_stops(prompts, seeds)
    s = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, num_frames, height // s, width // s)
    noise = [randn_tensor(shape, generator=torch.Generator().manual_seed(seed), dtype=pipe.unet.dtype) for _, seed in stops]
    embeds = [pipe.encode_text([prompt]) for prompt, _ in stops]
    negative = pipe.encode_text([negative_prompt or ""])
    points = walk_points(len(stops), between)
    clips = []
    for i, (segment, t) in enumerate(points):
        if on_clip is not None:
            on_clip(i, len(points))
        start = slerp(noise[segment], noise[segment + 1], t)
        text = interpolate_embeddings(embeds[segment], embeds[segment + 1], t, "lerp")
        generator = torch.Generator().manual_seed(stops[segment][1])  # for schedulers that add noise as they go
        out = pipe(prompt_embeds=text, negative_prompt_embeds=negative, latents=start, num_frames=num_frames,
                   height=height, width=width, output_type="np", generator=generator, **call)
        clips.append(out.frames[0])
    return np.stack(clips)


def lay_out(clips: np.ndarray, layout: str) -> np.ndarray:
    """`(N, F, H, W, 3)` -> one clip: `sequence` `(N * F, H, W, 3)`, or `grid` `(F, rows * H, cols * W, 3)` with
    ceil(sqrt(N)) columns (empty cells black)."""
    if layout == "sequence":
        return rearrange(clips, "n f h w c -> (n f) h w c")
    if layout != "grid":
        raise VidldmError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    n = clips.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    padded = np.concatenate([clips, np.zeros((rows * cols - n, *clips.shape[1:]), clips.dtype)])
    return rearrange(padded, "(r k) f h w c -> f (r h) (k w) c", r=rows, k=cols)
