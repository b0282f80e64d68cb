"""`vidldm eval keyframes`: does a model with a keyframe encoder go where its keyframes say?

For each held-out clip (`evaluation_specs(n, seed=2029)`: the training set is drawn with seed 0, the shapes eval
with 1234, the interpolation eval with 2027), rendered as `vidldm make-shapes` renders, its frames 0 and F-1 are
the keyframes (SparseCtrl, `controlnet_frame_indices=[0, F-1]`) and its caption the prompt. The oracle of
`vidldm eval shapes` reads the made clip:

- **first/last centroid error**: the object's centroid in the made frame 0 (F-1) against the keyframe's, in px;
  the share of clips with both within `tolerance` (3 px);
- **monotone path**: the object's progress along the line between its first and last place never steps back
  more than 1 px (`monotone`), over the clips whose object moves;
- **smoothness**: the oracle's, against the image model frame by frame (the floor a video model must beat) and
  the real clips (the ceiling).

Rows: the keyframes given; the same prompts and seeds without them (what the text alone does: how much of the
result is the encoder's); the image model frame by frame. An oracle of pixels, not of the model: it knows
nothing of the encoder, so the numbers cannot be tuned to what the model happens to draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from vidldm.data.shapes import evaluation_specs, render_clip
from vidldm.eval.shapes import IMAGE_MODEL_FLOOR, analyse_clip
from vidldm.io import to_uint8_frames

HELD_OUT_SEED = 2029


def monotone(clip: np.ndarray, tolerance: float = 1.0) -> bool:
    """The object's progress along the line from its first to its last place never steps back > `tolerance` px
    (`clip` `(F, H, W, 3)` uint8); a clip where the object is lost in some frame is not monotone."""
    return monotone_read(analyse_clip(clip), tolerance)


def monotone_read(read, tolerance: float = 1.0) -> bool:
    """`monotone` of a clip the oracle has read (`analyse_clip`'s result)."""
    centroids = np.array([f.centroid for f in read.frames], np.float64)
    if np.isnan(centroids).any():
        return False
    direction = centroids[-1] - centroids[0]
    length = np.linalg.norm(direction)
    if length < 1:
        return True  # no travel to be monotone along
    progress = (centroids - centroids[0]) @ (direction / length)
    return bool(np.all(np.diff(progress) >= -tolerance))


def centroid_error(made: np.ndarray, key: np.ndarray) -> float:
    """Distance in px between the object's centroid in frame `made` and in `key` `(H, W, 3)` uint8; inf when the
    oracle finds the object in one and not the other."""
    a, b = (np.array(analyse_clip(f[None]).frames[0].centroid, np.float64) for f in (made, key))
    if np.isnan(a).any() or np.isnan(b).any():
        return 0.0 if np.isnan(a).any() and np.isnan(b).any() else math.inf
    return float(np.linalg.norm(a - b))


def read_rows(made: list[np.ndarray], real: list[np.ndarray], moving: list[bool], tolerance: float) -> dict[str, float]:
    """The measures above for clips `made` against the `real` clips whose keyframes they were given."""
    first = [centroid_error(m[0], r[0]) for m, r in zip(made, real)]
    last = [centroid_error(m[-1], r[-1]) for m, r in zip(made, real)]
    both = [a <= tolerance and b <= tolerance for a, b in zip(first, last)]
    reads = [analyse_clip(m) for m in made]  # once per clip: the path and its smoothness come from one reading
    mono = [monotone_read(r) for r, move in zip(reads, moving) if move]
    smooth = [r.smoothness for r in reads]
    finite = [e for e in first + last if math.isfinite(e)]
    return {"n": len(made), "ends_within": float(np.mean(both)),
            "first_error_px": float(np.median(first)), "last_error_px": float(np.median(last)),
            "mean_error_px": float(np.mean(finite)) if finite else math.inf,
            "lost": float(np.mean([not math.isfinite(e) for e in first + last])),
            "monotone": float(np.mean(mono)) if mono else math.nan, "smoothness": float(np.nanmean(smooth))}


@torch.no_grad()
def evaluate_keyframes(pipe, n: int = 50, steps: int | None = None, guidance: float | None = None,
                       temporal_end: float | None = None, scale: float = 1.0, tolerance: float = 3.0,
                       log: Callable[[str], None] = print, seed: int = HELD_OUT_SEED,
                       baselines: bool = True, free_init: int | None = None,
                       exact: bool = False) -> dict[str, dict[str, float]]:
    """Rows of the keyframe eval for `pipe`, which has a SparseCtrl keyframe encoder set (`set_controlnet`), used at
    `scale`; the other rows run the same prompts, seeds and settings without it (`baselines=False`: the keyframe
    row alone). `seed` draws the clips: another seed than `HELD_OUT_SEED` screens settings on other clips than
    those the report is made on (scripts/screen_keyframes.py). `free_init`: FreeInit runs of the rows but the floor
    (None: the model's). `exact`: the keyframes are also known frames (`image={0: ..., F-1: ...}`), as
    `generate --exact-keyframes` gives them."""
    specs = evaluation_specs(n, seed=seed)
    real = [render_clip(s) for s in specs]
    moving = [s.motion.startswith("moving") for s in specs]
    f, h, w = real[0].shape[:3]
    encoder = pipe.controlnet
    rows: dict[str, dict[str, float]] = {}
    common = dict(num_frames=f, height=h, width=w, num_inference_steps=steps, guidance_scale=guidance, output_type="np")
    video = dict(temporal_end=temporal_end, free_init=free_init)  # the video model's rows

    def run(name: str, keyframes: bool, **call) -> None:
        pipe.set_controlnet(encoder if keyframes else None)
        made = []
        for i, (spec, clip) in enumerate(zip(specs, real)):
            keys = dict(conditioning_frames=[clip[0], clip[-1]], controlnet_frame_indices=[0, f - 1],
                        controlnet_conditioning_scale=scale, **({"image": {0: clip[0], f - 1: clip[-1]}} if exact else {})
                        ) if keyframes else {}
            out = pipe(spec.caption, generator=torch.Generator().manual_seed(i), **common, **keys, **call)
            made.append(to_uint8_frames(out.frames[0]))
        rows[name] = read_rows(made, real, moving, tolerance)
        log(f"{name}: {rows[name]}")

    try:
        run(f"video model, keyframes 0 and last (SparseCtrl{' and known frames' if exact else ''})", True, **video)
        if baselines:
            run("video model, the prompt alone", False, **video)
            run("image model, frame by frame (floor)", False, **IMAGE_MODEL_FLOOR)
    finally:
        pipe.set_controlnet(encoder)
    if baselines:
        rows["real clips (ceiling)"] = read_rows(real, real, moving, tolerance)
    return rows


COLUMNS = (("ends_within", "first and last centroid within {tol:g} px", "{:.0%}"),
           ("first_error_px", "first frame error (median px)", "{:.1f}"),
           ("last_error_px", "last frame error (median px)", "{:.1f}"),
           ("monotone", "monotone path (moving clips)", "{:.0%}"),
           ("smoothness", "smoothness (px/f², ↓)", "{:.2f}"))


def format_rows(rows: dict[str, dict[str, float]], tolerance: float = 3.0) -> str:
    """A markdown table, one row per system."""
    head = "| | " + " | ".join(title.format(tol=tolerance) for _, title, _ in COLUMNS) + " |"
    lines = [head, "|---|" + "---:|" * len(COLUMNS)]
    for name, row in rows.items():
        cells = ["–" if math.isnan(row[key]) else fmt.format(row[key]) for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
