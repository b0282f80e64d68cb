"""Procedural "shapes" clips: one coloured object moving on a plain background.

A tiny, fully known world for training and evaluating video models: every clip comes
with a caption that states exactly what happens in it, and the same caption can be
checked against any generated clip (see `vidldm.eval.shapes`).

    a red circle moving right on a black background
    a blue square growing on a white background
    a green triangle standing still on a gray background

Layouts and units
-----------------
* a clip is ``(F, H, W, 3) uint8`` RGB (16 frames of 64x64 px by default, 8 fps);
* coordinates are in pixels with the origin at the top-left corner of the image:
  pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)``, so its centre is at
  ``(j + 0.5, i + 0.5)``; ``y`` grows downward ("moving up" means y decreases);
* an object's ``size`` is its extent (diameter, side, or triangle base width), and its
  position ``(x, y)`` is the centre of its bounding box.

Everything is deterministic given a seed: `random_spec` draws from a numpy Generator
and rendering is pure numpy (4x4 supersampled coverage, so edges are anti-aliased and
sub-pixel motion is visible).
"""

from __future__ import annotations

import csv
import math
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidldm.data.wordings import varied_caption
from vidldm.errors import VidldmError
from vidldm.io import write_video

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "MOTIONS",
    "SHAPES",
    "ClipSpec",
    "evaluation_specs",
    "make_shapes_dataset",
    "parse_caption",
    "random_spec",
    "render_clip",
    "render_frame",
]

SHAPES = ("circle", "square", "triangle")

#: Object colours, name -> RGB. Far apart in RGB so an oracle can name them after
#: lossy video coding or a VAE round trip.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "white": (240, 240, 240),
    "cyan": (40, 210, 220),
}

#: Background colours, name -> RGB. An object never has its background's colour.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "white": (240, 240, 240),
}

MOTIONS = (
    "moving left",
    "moving right",
    "moving up",
    "moving down",
    "growing",
    "shrinking",
    "standing still",
)

#: Unit direction (dx, dy) of each translating motion, in image coordinates.
_DIRECTIONS = {
    "moving left": (-1.0, 0.0),
    "moving right": (1.0, 0.0),
    "moving up": (0.0, -1.0),
    "moving down": (0.0, 1.0),
}

# Ranges at the reference resolution of 64 px; sizes scale with the image.
_REF_SIZE = 64
_SIZE_RANGE = (10.0, 20.0)  # extent of objects that do not change size
_GROW_START = (8.0, 12.0)  # growing objects start small ...
_SHRINK_START = (20.0, 24.0)  # ... shrinking ones start big, so both stay in 6..26 px
_MIN_SIZE = 6.0
_SPEED_RANGE = (1.5, 3.0)  # px per frame
_GROWTH_RANGE = (0.5, 0.8)  # px of extent per frame
_MARGIN = 1.5  # background px kept between the object and the image border
_SUPERSAMPLE = 4  # samples per pixel along each axis (16 per pixel)

DEFAULT_NUM_FRAMES = 16
DEFAULT_IMAGE_SIZE = 64
DEFAULT_FPS = 8


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip.

    Attributes:
        shape, colour, background, motion: names from SHAPES, COLOURS, BACKGROUNDS, MOTIONS.
        x, y: centre of the object's bounding box at frame 0, in pixels.
        size: the object's extent at frame 0 in pixels (diameter, side, triangle base).
        speed: distance travelled per frame in pixels (0 unless the motion is "moving ...").
        growth: change of extent per frame in pixels (> 0 growing, < 0 shrinking, else 0).
    """

    shape: str
    colour: str
    background: str
    motion: str
    x: float
    y: float
    size: float
    speed: float
    growth: float

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} {self.motion} on a {self.background} background"

    def at(self, t: float) -> tuple[float, float, float]:
        """Object ``(x, y, size)`` at frame ``t``."""
        dx, dy = _DIRECTIONS.get(self.motion, (0.0, 0.0))
        return self.x + dx * self.speed * t, self.y + dy * self.speed * t, self.size + self.growth * t


# ---------------------------------------------------------------------------
# Drawing specs
# ---------------------------------------------------------------------------


def random_spec(
    rng: np.random.Generator,
    *,
    shape: str | None = None,
    colour: str | None = None,
    background: str | None = None,
    motion: str | None = None,
    num_frames: int = DEFAULT_NUM_FRAMES,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> ClipSpec:
    """Draw a clip whose object stays fully inside the frame for ``num_frames`` frames.

    Names left as None are drawn uniformly; the background is drawn among those that
    differ from the object's colour. Size, speed and growth follow the module's ranges
    (scaled by ``image_size / 64``), clipped so that the whole trajectory fits.

    Raises:
        VidldmError: an unknown name, a white object on a white background, or a
            ``num_frames`` / ``image_size`` too small for a visible clip.
    """
    _check_clip_size(num_frames, image_size)
    shape = _pick(rng, "shape", shape, SHAPES)
    colour = _pick(rng, "colour", colour, tuple(COLOURS))
    motion = _pick(rng, "motion", motion, MOTIONS)
    # Only backgrounds that differ from the object's colour, or the object is invisible.
    allowed = tuple(name for name in BACKGROUNDS if BACKGROUNDS[name] != COLOURS[colour])
    if background is not None and background in BACKGROUNDS and background not in allowed:
        raise VidldmError(
            f"a {colour} object is invisible on a {background} background; pick another background"
        )
    background = _pick(rng, "background", background, allowed if background is None else tuple(BACKGROUNDS))

    scale = image_size / _REF_SIZE
    size, speed, growth = _draw_dynamics(rng, motion, num_frames, image_size, scale)
    x, y = _draw_start(rng, motion, size, speed, growth, num_frames, image_size, scale)
    return ClipSpec(shape, colour, background, motion, x, y, size, speed, growth)


def _check_clip_size(num_frames: int, image_size: int) -> None:
    if num_frames < 1:
        raise VidldmError(f"num_frames must be >= 1, got {num_frames}")
    if image_size < 32:
        raise VidldmError(f"image_size must be >= 32 px so the objects fit, got {image_size}")


def _pick(rng: np.random.Generator, what: str, value: str | None, choices: tuple[str, ...]) -> str:
    """Validate a requested name, or draw one uniformly from ``choices``."""
    if value is None:
        return str(rng.choice(choices))
    if value not in choices:
        raise VidldmError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")
    return value


def _draw_dynamics(
    rng: np.random.Generator, motion: str, num_frames: int, image_size: int, scale: float
) -> tuple[float, float, float]:
    """``(size, speed, growth)`` for a motion, clipped to what fits in the frame."""
    steps = max(num_frames - 1, 1)
    room = image_size - 2 * _MARGIN * scale  # extent + travel must fit in this
    if motion == "growing":
        size = rng.uniform(*_GROW_START) * scale
        growth = _uniform_upto(rng, _GROWTH_RANGE, scale, (room - size) / steps)
        return size, 0.0, growth
    if motion == "shrinking":
        size = rng.uniform(*_SHRINK_START) * scale
        growth = _uniform_upto(rng, _GROWTH_RANGE, scale, (size - _MIN_SIZE * scale) / steps)
        return size, 0.0, -growth
    size = rng.uniform(*_SIZE_RANGE) * scale
    if motion in _DIRECTIONS:
        return size, _uniform_upto(rng, _SPEED_RANGE, scale, (room - size) / steps), 0.0
    return size, 0.0, 0.0


def _uniform_upto(rng: np.random.Generator, bounds: tuple[float, float], scale: float, limit: float) -> float:
    """Uniform in ``bounds * scale``, with both ends capped at ``limit`` so the clip fits."""
    low, high = bounds[0] * scale, bounds[1] * scale
    high = min(high, limit)
    low = min(low, high)
    return float(rng.uniform(low, high))


def _draw_start(
    rng: np.random.Generator,
    motion: str,
    size: float,
    speed: float,
    growth: float,
    num_frames: int,
    image_size: int,
    scale: float,
) -> tuple[float, float]:
    """A start centre such that the object's box stays inside the margins in every frame."""
    steps = max(num_frames - 1, 1)
    largest = max(size, size + growth * steps)
    dx, dy = _DIRECTIONS.get(motion, (0.0, 0.0))
    low = _MARGIN * scale + largest / 2
    high = image_size - low
    x = _start_coordinate(rng, low, high, dx * speed * steps)
    y = _start_coordinate(rng, low, high, dy * speed * steps)
    return x, y


def _start_coordinate(rng: np.random.Generator, low: float, high: float, travel: float) -> float:
    """Uniform start in ``[low, high]`` such that ``start + travel`` is also inside."""
    low, high = max(low, low - travel), min(high, high - travel)
    return float(rng.uniform(low, max(low, high)))


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def render_clip(
    spec: ClipSpec, num_frames: int = DEFAULT_NUM_FRAMES, image_size: int = DEFAULT_IMAGE_SIZE
) -> np.ndarray:
    """Render ``spec`` as an ``(F, H, W, 3) uint8`` clip, F = num_frames, H = W = image_size."""
    _check_clip_size(num_frames, image_size)
    return np.stack([render_frame(spec, t, image_size) for t in range(num_frames)])


def render_frame(spec: ClipSpec, t: float, image_size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """Render frame ``t`` of ``spec`` as an ``(H, W, 3) uint8`` image.

    The object is blended over the background by its coverage of each pixel, measured
    on a 4x4 grid of samples per pixel (anti-aliased edges, sub-pixel positions).
    """
    for name, known in (
        ("shape", SHAPES),
        ("colour", COLOURS),
        ("background", BACKGROUNDS),
        ("motion", MOTIONS),
    ):
        if getattr(spec, name) not in known:
            raise VidldmError(f"unknown {name} {getattr(spec, name)!r}; choose one of: {', '.join(known)}")
    background = np.asarray(BACKGROUNDS[spec.background], np.float32)
    colour = np.asarray(COLOURS[spec.colour], np.float32)
    coverage = _coverage(spec.shape, *spec.at(t), image_size)  # (H, W) in [0, 1]
    image = background + coverage[..., None] * (colour - background)
    return np.rint(image).astype(np.uint8)


def _coverage(shape: str, cx: float, cy: float, size: float, image_size: int) -> np.ndarray:
    """``(H, W)`` float32: fraction of each pixel covered by the object."""
    coverage = np.zeros((image_size, image_size), np.float32)
    if size <= 0:
        return coverage
    # Only sample the pixels around the object: it is small and the image is not.
    half = size / 2 + 1
    x0, x1 = max(0, math.floor(cx - half)), min(image_size, math.ceil(cx + half))
    y0, y1 = max(0, math.floor(cy - half)), min(image_size, math.ceil(cy + half))
    if x0 >= x1 or y0 >= y1:
        return coverage
    n = _SUPERSAMPLE
    # Sample positions relative to the centre: (rows, 1) and (1, cols) for broadcasting.
    ys = (np.arange(y0 * n, y1 * n, dtype=np.float32) + 0.5) / n - cy
    xs = (np.arange(x0 * n, x1 * n, dtype=np.float32) + 0.5) / n - cx
    inside = _INSIDE[shape](xs[None, :], ys[:, None], size)
    # (rows*n, cols*n) -> (rows, n, cols, n) -> mean over each pixel's samples.
    block = inside.reshape(y1 - y0, n, x1 - x0, n).mean(axis=(1, 3))
    coverage[y0:y1, x0:x1] = block
    return coverage


def _inside_circle(dx: np.ndarray, dy: np.ndarray, size: float) -> np.ndarray:
    return dx * dx + dy * dy <= (size / 2) ** 2


def _inside_square(dx: np.ndarray, dy: np.ndarray, size: float) -> np.ndarray:
    return (np.abs(dx) <= size / 2) & (np.abs(dy) <= size / 2)


def _inside_triangle(dx: np.ndarray, dy: np.ndarray, size: float) -> np.ndarray:
    """Upright equilateral triangle, base ``size`` wide, its bounding box centred at 0."""
    height = size * math.sqrt(3) / 2
    depth = (dy + height / 2) / height  # 0 at the apex, 1 at the base
    return (depth >= 0) & (depth <= 1) & (np.abs(dx) <= depth * size / 2)


_INSIDE = {"circle": _inside_circle, "square": _inside_square, "triangle": _inside_triangle}


# ---------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------


def _alternatives(names) -> str:
    # Longest first so that no name matches as the prefix of another.
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


_CAPTION_RE = re.compile(
    rf"a (?P<colour>{_alternatives(COLOURS)}) (?P<shape>{_alternatives(SHAPES)}) "
    rf"(?P<motion>{_alternatives(MOTIONS)}) on a (?P<background>{_alternatives(BACKGROUNDS)}) background"
)


def parse_caption(text: str) -> dict[str, str] | None:
    """``{"shape", "colour", "background", "motion"}`` read from a shapes caption.

    Case and runs of whitespace are ignored, as is a final full stop; any other text
    returns None.
    """
    normal = " ".join(str(text).lower().split()).removesuffix(".")
    match = _CAPTION_RE.fullmatch(normal)
    if match is None:
        return None
    return {key: match[key] for key in ("shape", "colour", "background", "motion")}


# ---------------------------------------------------------------------------
# Datasets and the evaluation set
# ---------------------------------------------------------------------------


def make_shapes_dataset(
    out_dir: str | os.PathLike[str],
    n: int,
    *,
    seed: int = 0,
    fps: float = DEFAULT_FPS,
    num_frames: int = DEFAULT_NUM_FRAMES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    wordings: str = "fixed",
) -> Path:
    """Write ``n`` random clips and their captions to ``out_dir``; return ``out_dir``.

    ``wordings``: "fixed" (every caption ``ClipSpec.caption``), "varied" or "rich" (each in a training wording of
    that set of `vidldm.data.wordings`, drawn from its own generator, so the clips are those of "fixed" with the
    same seed; "rich" has three times the wordings and 7 sentence frames to 4).

    Layout (what `vidldm.data.find_clips` reads)::

        out_dir/clip_00000.mp4 ... clip_{n-1:05d}.mp4
        out_dir/captions.csv        path,caption   (paths relative to out_dir)

    The folder is built under a temporary name next to ``out_dir`` and renamed into
    place at the end, so an interrupted run leaves no half-made dataset.

    Raises:
        VidldmError: ``n < 1``, an unknown ``wordings``, or ``out_dir`` exists and is not an empty folder.
    """
    if wordings not in WORDINGS:
        raise VidldmError(f"wordings must be one of {', '.join(WORDINGS)}, got {wordings!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise VidldmError(f"the number of clips must be an integer >= 1, got {n!r}")
    _check_clip_size(num_frames, image_size)
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        raise VidldmError(
            f"'{out_dir}' already exists and is not an empty folder; choose a new output folder"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    words_rng = np.random.default_rng([seed, 1])  # apart from the clips' draws: same seed, same clips
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        rows = []
        for i in range(int(n)):
            spec = random_spec(rng, num_frames=num_frames, image_size=image_size)
            name = f"clip_{i:05d}.mp4"
            write_video(render_clip(spec, num_frames, image_size), tmp / name, fps)
            rows.append((name, spec.caption if wordings == "fixed" else varied_caption(spec, words_rng, wordings)))
        _write_captions(tmp / "captions.csv", rows)
        os.replace(tmp, out_dir)  # also replaces an existing empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


WORDINGS = ("fixed", "varied", "rich")


def _write_captions(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("path", "caption"))
        writer.writerows(rows)


def evaluation_specs(n: int = 210, seed: int = 1234) -> list[ClipSpec]:
    """A fixed, balanced set of ``n`` specs for comparing models (16 frames, 64 px).

    Names cycle rather than being drawn, so every value appears about equally often:
    shape, motion and colour advance by one each clip (3, 7 and 8 are coprime, so the
    first 168 clips hold every shape x motion x colour once) and the background changes
    every third clip, so it meets every shape. A white object that would land on white
    takes the next background. Positions and sizes come from ``seed``, so the set is
    the same on every machine.
    """
    if n < 1:
        raise VidldmError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    colours, backgrounds = tuple(COLOURS), tuple(BACKGROUNDS)
    specs = []
    for i in range(n):
        colour = colours[i % len(colours)]
        b = (i // len(SHAPES)) % len(backgrounds)
        if BACKGROUNDS[backgrounds[b]] == COLOURS[colour]:
            b = (b + 1) % len(backgrounds)
        specs.append(
            random_spec(
                rng,
                shape=SHAPES[i % len(SHAPES)],
                colour=colour,
                background=backgrounds[b],
                motion=MOTIONS[i % len(MOTIONS)],
            )
        )
    return specs
