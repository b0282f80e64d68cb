"""An oracle for shapes clips: find the object in each frame and say what the clip shows.

Generated clips are checked against their captions (see `vidldm.data.shapes`) without
any learned model: the world is simple enough to read with a few array operations.

    analyse_frame(frame (H, W, 3) uint8) -> FrameObs   colour, shape, centroid, area of the object
    analyse_clip(frames (F, H, W, 3))    -> ClipObs    majority colour/shape, motion, smoothness
    score(clips, specs)                  -> {"colour_acc", "shape_acc", "motion_acc", ...}
    format_table({"system": scores})     -> markdown table
    first_frame_psnr(frames, image)      -> dB        did image animation keep the image?

How a frame is read
-------------------
1. The background colour is the median of the pixels on the image border (the object
   rarely touches it, and a median ignores it when it does).
2. Pixels whose RGB distance to the background exceeds a threshold form a mask; its
   largest 8-connected blob is the object, so codec/VAE speckles elsewhere are ignored.
3. The object's colour is the median of the blob's most distinct pixels (its core: edge
   pixels are blended with the background). Colour and background get the nearest name.
4. Each pixel near the blob gets a coverage ``alpha`` in [0, 1]: its colour projected on
   the background -> object line. Area and centroid use alpha, so they are sub-pixel
   accurate and smooth under motion, which the motion and smoothness measures need.
5. The shape comes from two measures of alpha's row and column sums (blur along a row
   or column leaves its sum unchanged, so both survive soft edges):
   * vertical skewness of the mass: an upright triangle is bottom-heavy (-0.57), while
     circles and squares are symmetric (0);
   * the fill ratio ``area / (widest row x tallest column)``: a square fills its box
     (1.0), a circle pi/4 (0.785).

Coordinates are pixels from the top-left corner, pixel ``(i, j)`` centred at
``(j + 0.5, i + 0.5)`` as in `vidldm.data.shapes`; y grows downward.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vidldm.data.shapes import BACKGROUNDS, COLOURS, ClipSpec
from vidldm.errors import VidldmError
from vidldm.io import to_uint8_frames

#: Call settings of every eval's floor, the image model frame by frame: no temporal layers at any step, no
#: FreeInit (its 3-D low-pass would tie the frames together even without them) and the image VAE's decoder (a
#: temporal decoder would too, and so would smoothing the latents over time), whatever the model's defaults.
IMAGE_MODEL_FLOOR = {"temporal_end": 0.0, "free_init": 1, "temporal_decoder": False, "temporal_smoothing": 0.0}

__all__ = [
    "ClipObs",
    "FrameObs",
    "analyse_clip",
    "analyse_frame",
    "first_frame_psnr",
    "format_table",
    "score",
]

# Every object colour is >= ~100 RGB units from every background it may be drawn on;
# 45 keeps pixels at least ~half covered while ignoring H.264 / VAE noise.
_MASK_THRESHOLD = 45.0
_MIN_AREA = 12  # pixels in the blob before we call the object present
_BORDER = 2  # width of the border ring that estimates the background
# Upright triangles have vertical skew -0.57 (about -0.35 at worst after H.264), circles and
# squares 0 (within 0.1).
_TRIANGLE_SKEW_BELOW = -0.25
# Fill-ratio boundary between circle (0.785) and square (1.0).
_SQUARE_ABOVE = 0.9
# Motion thresholds: displacement over the clip, as a fraction of the image size
# (6.4 px at 64 px; the slowest shapes clip moves 22 px), and area ratio first->last.
_MOVE_FRACTION = 0.1
_GROW_RATIO = 1.5

_COLOUR_NAMES = tuple(COLOURS)
_COLOUR_RGB = np.array([COLOURS[n] for n in _COLOUR_NAMES], np.float32)
_BACKGROUND_NAMES = tuple(BACKGROUNDS)
_BACKGROUND_RGB = np.array([BACKGROUNDS[n] for n in _BACKGROUND_NAMES], np.float32)


@dataclass(frozen=True)
class FrameObs:
    """What the oracle sees in one frame.

    ``colour`` and ``shape`` are None and ``centroid`` is ``(nan, nan)`` when no object
    is present. ``area`` is in pixels (coverage-weighted, so fractional); ``fill`` is
    the fill ratio the shape was classified from.
    """

    present: bool
    colour: str | None
    background: str
    shape: str | None
    centroid: tuple[float, float]
    area: float
    fill: float = math.nan
    skew: float = math.nan


@dataclass(frozen=True)
class ClipObs:
    """What the oracle sees in a clip.

    Attributes:
        frames: one FrameObs per frame.
        colour, shape: the most common reading over frames with an object (None if none).
        background: the most common background name.
        motion: one of MOTIONS, from the centroid trajectory and the area trend.
        persistent: the object is present in every frame.
        displacement: net ``(dx, dy)`` of the centroid over the clip (least-squares line).
        area_ratio: last / first area on the fitted log-area line (> 1 growing).
        smoothness: mean |second difference| of the centroid in px/frame^2 (lower is
            smoother; NaN with fewer than 3 consecutive present frames).
        size_stability: std / mean of the area when the motion is not growing or
            shrinking (lower is steadier); NaN otherwise.
    """

    frames: tuple[FrameObs, ...]
    colour: str | None
    shape: str | None
    background: str
    motion: str
    persistent: bool
    displacement: tuple[float, float]
    area_ratio: float
    smoothness: float
    size_stability: float


# ---------------------------------------------------------------------------
# One frame
# ---------------------------------------------------------------------------


def analyse_frame(frame: np.ndarray) -> FrameObs:
    """Find the object in an ``(H, W, 3) uint8`` RGB frame (see the module docstring)."""
    frame = _as_frame(frame)
    pixels = frame.astype(np.float32)
    background = _border_median(pixels)
    distance = np.linalg.norm(pixels - background, axis=-1)  # (H, W)
    blob = _largest_component(distance > _MASK_THRESHOLD)
    background_name = _nearest(background, _BACKGROUND_NAMES, _BACKGROUND_RGB)
    if blob.sum() < _MIN_AREA:
        return FrameObs(False, None, background_name, None, (math.nan, math.nan), 0.0)

    colour = _core_colour(pixels, distance, blob)
    alpha = _coverage(pixels, background, colour, _dilate(blob))  # (H, W) in [0, 1]
    area = float(alpha.sum())
    rows, cols = np.indices(alpha.shape)
    centroid = (float((alpha * (cols + 0.5)).sum() / area), float((alpha * (rows + 0.5)).sum() / area))
    fill = area / max(float(alpha.sum(axis=1).max() * alpha.sum(axis=0).max()), 1e-6)
    skew = _vertical_skew(alpha.sum(axis=1))
    return FrameObs(
        present=True,
        colour=_nearest(colour, _COLOUR_NAMES, _COLOUR_RGB),
        background=background_name,
        shape=_classify_shape(fill, skew),
        centroid=centroid,
        area=area,
        fill=fill,
        skew=skew,
    )


def _as_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3 or min(frame.shape[:2]) <= 2 * _BORDER:
        raise VidldmError(f"a frame must have layout (H, W, 3) with H, W > {2 * _BORDER}, got {frame.shape}")
    return to_uint8_frames(frame[None])[0]


def _border_median(pixels: np.ndarray) -> np.ndarray:
    """Median ``(3,)`` colour of the outer ``_BORDER`` pixels of ``(H, W, 3)``."""
    b = _BORDER
    ring = np.concatenate(
        [
            pixels[:b].reshape(-1, 3),
            pixels[-b:].reshape(-1, 3),
            pixels[b:-b, :b].reshape(-1, 3),
            pixels[b:-b, -b:].reshape(-1, 3),
        ]
    )
    return np.median(ring, axis=0)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected blob of a ``(H, W)`` bool mask, as a mask.

    Works on horizontal runs of True pixels (few per row) with a union-find, so it stays
    cheap in Python even for noisy masks.
    """
    padded = np.pad(mask.astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # exclusive; same (row-major) order as starts
    if len(rows) == 0:
        return np.zeros(mask.shape, dtype=bool)

    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Plain lists: bisect on them is much cheaper than numpy calls per run.
    row_first = np.searchsorted(rows, np.arange(mask.shape[0] + 1)).tolist()
    start_list, end_list = starts.tolist(), ends.tolist()
    for row in range(1, mask.shape[0]):
        lo, hi = row_first[row - 1], row_first[row]  # the runs of the row above
        for a in range(hi, row_first[row + 1]):
            # 8-connectivity: run b above touches run a if start_b <= end_a and
            # end_b >= start_a (ends exclusive). Runs in a row are sorted and disjoint,
            # so those b form one contiguous range.
            first = bisect.bisect_left(end_list, start_list[a], lo, hi)
            last = bisect.bisect_right(start_list, end_list[a], lo, hi)
            for b in range(first, last):
                parent[find(a)] = find(b)

    roots = np.array([find(i) for i in range(len(rows))])
    sizes = np.bincount(roots, weights=ends - starts)
    keep = np.flatnonzero(roots == int(np.argmax(sizes)))
    out = np.zeros(mask.shape, dtype=bool)
    for i in keep.tolist():
        out[rows[i], start_list[i] : end_list[i]] = True
    return out


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Grow a ``(H, W)`` mask by one pixel (3x3), to include the object's soft edge."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def _core_colour(pixels: np.ndarray, distance: np.ndarray, blob: np.ndarray) -> np.ndarray:
    """Median ``(3,)`` colour of the blob's core: its pixels farthest from the background."""
    inside = distance[blob]
    core = blob & (distance >= 0.8 * np.percentile(inside, 90))
    return np.median(pixels[core], axis=0)


def _coverage(
    pixels: np.ndarray, background: np.ndarray, colour: np.ndarray, region: np.ndarray
) -> np.ndarray:
    """Per-pixel object coverage ``(H, W)`` in [0, 1], zero outside ``region``.

    A pixel blended as ``background + a * (colour - background)`` gives back ``a`` by
    projecting it onto that line.
    """
    axis = colour - background
    alpha = ((pixels - background) @ axis) / max(float(axis @ axis), 1e-6)
    return np.where(region, np.clip(alpha, 0.0, 1.0), 0.0)


def _nearest(rgb: np.ndarray, names: tuple[str, ...], table: np.ndarray) -> str:
    return names[int(np.argmin(np.linalg.norm(table - rgb, axis=1)))]


def _vertical_skew(row_mass: np.ndarray) -> float:
    """Skewness of the object's mass along y, from its ``(H,)`` row sums.

    Symmetric shapes give 0; an upright triangle, whose rows widen linearly downward,
    gives -0.57 (its mass sits low, with a thin tail up to the apex).
    """
    y = np.arange(len(row_mass)) + 0.5
    weights = row_mass / row_mass.sum()
    mean = (weights * y).sum()
    var = (weights * (y - mean) ** 2).sum()
    return float((weights * (y - mean) ** 3).sum() / max(var, 1e-6) ** 1.5)


def _classify_shape(fill: float, skew: float) -> str:
    if skew < _TRIANGLE_SKEW_BELOW:
        return "triangle"
    if fill > _SQUARE_ABOVE:
        return "square"
    return "circle"


# ---------------------------------------------------------------------------
# A clip
# ---------------------------------------------------------------------------


def analyse_clip(frames) -> ClipObs:
    """Read a clip: ``frames`` is ``(F, H, W, 3)`` uint8 (or anything `vidldm.io.to_uint8_frames` takes)."""
    clip = to_uint8_frames(frames)
    obs = tuple(analyse_frame(frame) for frame in clip)
    present = [o for o in obs if o.present]
    centroids = np.array([o.centroid for o in obs], np.float64)  # (F, 2), NaN when absent
    areas = np.array([o.area if o.present else math.nan for o in obs], np.float64)  # (F,)

    displacement, area_ratio = _trends(centroids, areas)
    motion = _classify_motion(displacement, area_ratio, image_size=max(clip.shape[1:3]))
    return ClipObs(
        frames=obs,
        colour=_majority(o.colour for o in present),
        shape=_majority(o.shape for o in present),
        background=_majority(o.background for o in obs),
        motion=motion,
        persistent=len(present) == len(obs),
        displacement=displacement,
        area_ratio=area_ratio,
        smoothness=_smoothness(centroids),
        size_stability=_size_variation(areas) if motion not in ("growing", "shrinking") else math.nan,
    )


def _majority(values) -> str | None:
    counts = Counter(values)
    return counts.most_common(1)[0][0] if counts else None


def _trends(centroids: np.ndarray, areas: np.ndarray) -> tuple[tuple[float, float], float]:
    """Net centroid displacement ``(dx, dy)`` and area ratio over the clip.

    Both come from least-squares lines through the frames with an object (log area for
    the ratio), so one bad frame cannot fake or hide a motion.
    """
    t = np.flatnonzero(~np.isnan(areas))
    if len(t) < 2:
        return (0.0, 0.0), 1.0
    span = len(areas) - 1
    dx = np.polyfit(t, centroids[t, 0], 1)[0] * span
    dy = np.polyfit(t, centroids[t, 1], 1)[0] * span
    log_ratio = np.polyfit(t, np.log(np.maximum(areas[t], 1e-3)), 1)[0] * span
    return (float(dx), float(dy)), float(np.exp(log_ratio))


def _classify_motion(displacement: tuple[float, float], area_ratio: float, image_size: int) -> str:
    dx, dy = displacement
    moved = math.hypot(dx, dy) >= _MOVE_FRACTION * image_size
    if not moved and area_ratio >= _GROW_RATIO:
        return "growing"
    if not moved and area_ratio <= 1 / _GROW_RATIO:
        return "shrinking"
    if not moved:
        return "standing still"
    if abs(dx) >= abs(dy):
        return "moving right" if dx > 0 else "moving left"
    return "moving down" if dy > 0 else "moving up"  # image y grows downward


def _smoothness(centroids: np.ndarray) -> float:
    """Mean |c[t+1] - 2 c[t] + c[t-1]| over ``(F, 2)`` centroids; triples with a gap drop out."""
    if len(centroids) < 3:
        return math.nan
    second = np.linalg.norm(centroids[2:] - 2 * centroids[1:-1] + centroids[:-2], axis=1)
    second = second[~np.isnan(second)]
    return float(second.mean()) if len(second) else math.nan


def _size_variation(areas: np.ndarray) -> float:
    """std / mean of the ``(F,)`` areas of the frames with an object (NaN marks absence)."""
    areas = areas[~np.isnan(areas)]
    if len(areas) < 2 or areas.mean() <= 0:
        return math.nan
    return float(areas.std() / areas.mean())


# ---------------------------------------------------------------------------
# Scores and tables
# ---------------------------------------------------------------------------


def score(clips: Sequence, specs: Sequence[ClipSpec]) -> dict[str, float]:
    """Compare the oracle's reading of each clip with the spec it was made from.

    ``clips[i]`` is ``(F, H, W, 3)`` uint8 (or anything `vidldm.io.to_uint8_frames`
    takes) meant to show ``specs[i]``. Returns:

    * ``colour_acc``, ``shape_acc``, ``motion_acc``: fraction of clips read correctly;
    * ``persistence``: fraction of clips whose object is present in every frame;
    * ``smoothness``: mean over clips of the centroid's mean |second difference|
      (px/frame^2, lower is smoother);
    * ``size_stability``: mean std/mean of the area over clips whose *spec* keeps the
      size (not growing/shrinking); lower is steadier;
    * ``n``: the number of clips.

    Means skip clips where a measure is undefined (NaN when it is undefined for all).
    """
    if len(clips) != len(specs):
        raise VidldmError(f"got {len(clips)} clips for {len(specs)} specs; pass one clip per spec")
    if not clips:
        raise VidldmError("no clips to score")
    readings = [analyse_clip(clip) for clip in clips]
    stabilities = [
        _size_variation(np.array([o.area if o.present else math.nan for o in r.frames]))
        for r, s in zip(readings, specs)
        if s.motion not in ("growing", "shrinking")
    ]
    return {
        "colour_acc": _mean([r.colour == s.colour for r, s in zip(readings, specs)]),
        "shape_acc": _mean([r.shape == s.shape for r, s in zip(readings, specs)]),
        "motion_acc": _mean([r.motion == s.motion for r, s in zip(readings, specs)]),
        "persistence": _mean([r.persistent for r in readings]),
        "smoothness": _nanmean([r.smoothness for r in readings]),
        "size_stability": _nanmean(stabilities),
        "n": len(readings),
    }


def _mean(flags: list[bool]) -> float:
    return float(np.mean(flags))


def _nanmean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


_COLUMNS = (  # (score key, header, format)
    ("n", "n", "{:d}"),
    ("colour_acc", "colour", "{:.1%}"),
    ("shape_acc", "shape", "{:.1%}"),
    ("motion_acc", "motion", "{:.1%}"),
    ("persistence", "persistence", "{:.1%}"),
    ("smoothness", "smoothness (px/f², ↓)", "{:.2f}"),
    ("size_stability", "size stability (↓)", "{:.2f}"),
)


def format_table(rows: dict[str, dict]) -> str:
    """A markdown table: one row per system (``{"video model": score(...), ...}``).

    Accuracies print as percentages, smoothness and size stability with 2 decimals;
    missing or NaN values print as "n/a".
    """
    header = "| system | " + " | ".join(title for _, title, _ in _COLUMNS) + " |"
    rule = "|---|" + "|".join("---:" for _ in _COLUMNS) + "|"
    lines = [header, rule]
    for name, scores in rows.items():
        cells = [_cell(scores.get(key), fmt) for key, _, fmt in _COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return fmt.format(int(value) if fmt == "{:d}" else float(value))


# ---------------------------------------------------------------------------
# Image animation
# ---------------------------------------------------------------------------


def first_frame_psnr(frames, image: np.ndarray) -> float:
    """PSNR in dB between a clip's first frame and the image it animates (inf if equal).

    ``frames`` is ``(F, H, W, 3)`` (anything `vidldm.io.to_uint8_frames` takes) and
    ``image`` is ``(H, W, 3)`` uint8 of the same size.
    """
    first = to_uint8_frames(frames)[0].astype(np.float64)
    image = np.asarray(image)
    if image.shape != first.shape:
        raise VidldmError(
            f"the image has shape {image.shape} but the clip's frames are {first.shape}; "
            "resize the image to the clip's size first"
        )
    mse = float(np.mean((first - to_uint8_frames(image[None])[0].astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
