"""Reading and writing videos, animated images, frame folders and images.

Layouts
-------
Everything this module returns uses one layout so callers never guess:

* a clip is a numpy array ``(F, H, W, 3) uint8`` in RGB order, F frames;
* an image is a numpy array ``(H, W, 3) uint8`` in RGB order.

:func:`write_video` is more lenient on input (see :func:`to_uint8_frames`):
``(F, H, W, 3)`` uint8 or float in [0, 1] numpy arrays, torch tensors
``(F, 3, H, W)`` or ``(F, H, W, 3)`` (float in [0, 1] or uint8), or a list of
PIL images.

Media kinds
-----------
* Videos (``.mp4``, ``.mov``, ``.mkv``, ...): read with decord when it is
  installed, falling back to PyAV; written with PyAV (libx264, yuv420p).
* Animated ``.gif`` / ``.webp`` (and single images as one-frame clips): Pillow.
* Frame folders: a directory of ``.png`` / ``.jpg`` files, one per frame,
  ordered by name (numbers compared as numbers). Folders carry no timing, so
  their frame rate is :data:`DEFAULT_FOLDER_FPS` unless the caller states it.

Writes are atomic: the output is produced under a temporary name in the
destination folder and renamed into place only once complete, so a crash or
error never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from vidldm import atomic
from vidldm.errors import VidldmError

__all__ = [
    "DEFAULT_FOLDER_FPS",
    "MediaError",
    "probe_video",
    "read_image",
    "read_video",
    "to_uint8_frames",
    "write_grid",
    "write_video",
]

#: Frame rate assumed for a folder of frames when the caller gives none.
DEFAULT_FOLDER_FPS = 8.0

# Extensions Pillow reads as (possibly animated) images rather than videos.
_PILLOW_READ_EXTS = (".gif", ".webp", ".png", ".apng", ".jpg", ".jpeg", ".bmp")
# Files a frame folder may hold.
_FRAME_EXTS = (".png", ".jpg", ".jpeg")
# Container format PyAV should use for each writable video extension.
_PYAV_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
_WRITE_EXTS = (*_PYAV_FORMATS, ".gif", ".webp", ".png")
_SUPPORTED_WRITE = ", ".join(_WRITE_EXTS) + ", or a folder path (ending in '/')"
_FRAME_NAME = "frame_{:05d}.png"
_FRAME_NAME_RE = re.compile(r"frame_\d{5,}\.png")


class MediaError(VidldmError):
    """A user-facing media problem: missing file, undecodable data, bad path.

    A ``ValueError`` (via :class:`~vidldm.errors.VidldmError`, so the CLI
    reports it as one line). The message says what was wrong and what to do.
    """


# ---------------------------------------------------------------------------
# Frame selection (shared by every reader so all backends agree)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sampling:
    """Which frames of a clip to return; see :func:`read_video`."""

    indices: tuple[int, ...] | None = None
    stride: int = 1
    fps: float | None = None
    max_frames: int | None = None
    start: int = 0

    def __post_init__(self) -> None:
        # Wrong argument combinations are programming errors, not media
        # problems, hence plain ValueError.
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start}")
        if self.fps is not None and self.stride != 1:
            raise ValueError("pass either stride or fps, not both")
        if self.indices is not None:
            if self.stride != 1 or self.fps is not None or self.start != 0:
                raise ValueError("pass either indices or start/stride/fps, not both")
            if not self.indices:
                raise ValueError("indices must not be empty")

    def pick(self, num_frames: int, src_fps: float) -> tuple[list[int], float]:
        """Return ``(frame indices, fps of the returned frames)``.

        Raises MediaError when the request does not fit a clip of
        ``num_frames`` frames.
        """
        if self.indices is not None:
            picked, fps = self._pick_explicit(num_frames, src_fps)
        elif self.start >= num_frames:
            raise MediaError(
                f"start frame {self.start} is past the end of the clip "
                f"({num_frames} frames); use a smaller start"
            )
        elif self.fps is not None:
            picked, fps = self._pick_by_time(num_frames, src_fps), float(self.fps)
        else:
            picked = list(range(self.start, num_frames, self.stride))
            fps = src_fps / self.stride
        return picked[: self.max_frames], fps

    def _pick_explicit(self, num_frames: int, src_fps: float) -> tuple[list[int], float]:
        assert self.indices is not None
        bad = [i for i in self.indices if not 0 <= i < num_frames]
        if bad:
            raise MediaError(
                f"frame index {bad[0]} out of range: the clip has {num_frames} "
                f"frames (valid indices 0..{num_frames - 1})"
            )
        picked = list(self.indices)
        steps = np.diff(picked)
        # Increasing indices play back as if sampled with their mean spacing;
        # anything else (one frame, repeats, reversal) keeps the source rate.
        if len(picked) > 1 and (steps > 0).all():
            return picked, src_fps / float(steps.mean())
        return picked, src_fps

    def _pick_by_time(self, num_frames: int, src_fps: float) -> list[int]:
        """Frames nearest to the times ``start/src_fps + k/fps``."""
        assert self.fps is not None
        ratio = src_fps / self.fps  # source frames per output frame
        limit = self.max_frames if self.max_frames is not None else math.inf
        picked: list[int] = []
        while len(picked) < limit:
            # floor(x + 0.5) rounds halves up; round() would round to even.
            index = self.start + math.floor(len(picked) * ratio + 0.5)
            if index >= num_frames:
                break
            picked.append(index)
        return picked


def _as_indices(indices: Sequence[int] | None) -> tuple[int, ...] | None:
    if indices is None:
        return None
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise ValueError(f"indices must be integers, got {i!r}")
        out.append(int(i))
    return tuple(out)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def read_video(
    path: str | os.PathLike[str],
    *,
    indices: Sequence[int] | None = None,
    stride: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    start: int = 0,
) -> tuple[np.ndarray, float]:
    """Read a clip as ``(F, H, W, 3) uint8`` RGB frames plus their frame rate.

    ``path`` may be a video file, an animated ``.gif``/``.webp`` (a still
    image gives a one-frame clip) or a folder of ``.png``/``.jpg`` frames.

    Frame selection, in order of precedence:

    * ``indices``: exactly these frames (each must be in range). The returned
      fps is the source fps divided by their mean spacing when they increase.
    * ``fps``: resample in time, taking the frame nearest to each target
      time from ``start`` on; the returned fps is ``fps``.
    * otherwise every ``stride``-th frame from ``start``; returned fps is
      ``source fps / stride``.

    The result is then truncated to ``max_frames``.

    A frame folder has no timing of its own, so for folders ``fps`` is not a
    resampling target but *declares* the folder's rate (default
    :data:`DEFAULT_FOLDER_FPS`); use ``stride`` to subsample.

    Raises:
        MediaError: missing path, undecodable data, no frames, or a frame
            index / start outside the clip.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise MediaError(f"cannot read video '{path}': file does not exist")
    indices_t = _as_indices(indices)

    if path.is_dir():
        folder_fps = DEFAULT_FOLDER_FPS if fps is None else float(fps)
        sampling = _Sampling(indices_t, stride, None, max_frames, start)
        return _read_folder(path, sampling, folder_fps)

    sampling = _Sampling(indices_t, stride, fps, max_frames, start)
    if path.suffix.lower() in _PILLOW_READ_EXTS:
        return _read_pillow(path, sampling)
    try:
        return _read_decord(path, sampling)
    except MediaError:
        raise  # a bad request (e.g. index out of range) fails the same way in PyAV
    except Exception:
        # decord is optional and fragile with some containers; PyAV is the
        # dependable path, so any decord failure just means "try PyAV".
        return _read_pyav(path, sampling)


def _read_decord(path: Path, sampling: _Sampling) -> tuple[np.ndarray, float]:
    """Decode with decord; raises ImportError when it is not installed."""
    import decord  # optional dependency, imported lazily

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    num_frames = len(reader)
    if num_frames == 0:
        raise MediaError(f"cannot read video '{path}': it contains no frames")
    picked, out_fps = sampling.pick(num_frames, float(reader.get_avg_fps()))
    batch = reader.get_batch(picked)
    # Another library may have switched decord's global bridge to torch.
    frames = batch.asnumpy() if hasattr(batch, "asnumpy") else batch.numpy()
    return np.ascontiguousarray(frames, dtype=np.uint8), out_fps


def _read_pyav(path: Path, sampling: _Sampling) -> tuple[np.ndarray, float]:
    """Decode with PyAV, applying the same frame selection as decord."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"cannot read video '{path}': it has no video stream")
            stream = container.streams.video[0]
            num_frames, src_fps = _pyav_count_and_fps(container, stream)
            if num_frames == 0:
                raise MediaError(f"cannot read video '{path}': it contains no frames")
            picked, out_fps = sampling.pick(num_frames, src_fps)
            decoded = _decode_wanted(container, stream, set(picked))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError(f"cannot read video '{path}': not a decodable video ({_one_line(exc)})") from exc

    # Container headers can overstate the frame count; sampled frames past
    # the real end are dropped, explicitly requested ones are an error.
    missing = [i for i in picked if i not in decoded]
    if missing and sampling.indices is not None:
        raise MediaError(
            f"frame index {missing[0]} out of range: '{path}' has only {len(decoded)} decodable frames"
        )
    picked = [i for i in picked if i in decoded]
    if not picked:
        raise MediaError(f"cannot read video '{path}': it contains no decodable frames")
    return np.stack([decoded[i] for i in picked]), out_fps


def _pyav_count_and_fps(container: Any, stream: Any) -> tuple[int, float]:
    """Frame count and average fps, from headers or by counting packets."""
    num_frames = stream.frames
    if num_frames <= 0:
        # Some containers (mkv, webm) do not store a count; demuxing is cheap
        # compared with decoding, so count packets and rewind.
        num_frames = sum(1 for packet in container.demux(stream) if packet.size)
        container.seek(0, stream=stream)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if rate:
        return num_frames, float(rate)
    duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
    return num_frames, (num_frames / duration if duration > 0 else DEFAULT_FOLDER_FPS)


def _decode_wanted(container: Any, stream: Any, wanted: set[int]) -> dict[int, np.ndarray]:
    """Decode sequentially, keeping only ``wanted`` frames ``{i: (H, W, 3)}``."""
    stream.thread_type = "AUTO"
    last = max(wanted)
    kept: dict[int, np.ndarray] = {}
    for i, frame in enumerate(container.decode(stream)):
        if i in wanted:
            kept[i] = frame.to_ndarray(format="rgb24")
        if i >= last:
            break  # no need to decode the rest of the file
    return kept


def _read_pillow(path: Path, sampling: _Sampling) -> tuple[np.ndarray, float]:
    """Read a (possibly animated) image with Pillow."""
    with _open_image(path, "video") as im:
        slots, src_fps = _animation_timeline(im)
        picked, out_fps = sampling.pick(len(slots), src_fps)
        by_frame = {}
        # GIF frames are deltas, so visit them in order: seeking backwards
        # makes Pillow re-decode from the first frame each time.
        for i in sorted({slots[s] for s in picked}):
            im.seek(i)
            by_frame[i] = _rgb8(im)
    return np.stack([by_frame[slots[s]] for s in picked]), out_fps


def _animation_timeline(im: Image.Image) -> tuple[list[int], float]:
    """Put an animation's variable frame delays on a constant-rate timeline.

    GIF and WebP store a delay per frame, and their encoders merge repeated
    frames into one longer frame. Returns ``(slots, fps)``: ``slots[k]`` is
    the stored frame shown at time ``k / fps``, with fps set by the shortest
    delay. This restores merged repeats, so a clip written at 8 fps reads
    back with its original frame count.
    """
    delays = []
    for frame in ImageSequence.Iterator(im):
        frame.load()  # WebP only reports a frame's delay once it is decoded
        delays.append(frame.info.get("duration") or 0)
    known = [d for d in delays if d > 0]
    if not known:  # still image, or an animation without timing
        return list(range(len(delays))), DEFAULT_FOLDER_FPS
    base = min(known)
    slots = []
    for i, delay in enumerate(delays):
        # A frame without a delay is shown for one slot, as browsers do.
        slots += [i] * max(1, round(delay / base))
    return slots, 1000.0 / base


def _read_folder(path: Path, sampling: _Sampling, fps: float) -> tuple[np.ndarray, float]:
    files = _frame_files(path)
    if not files:
        raise MediaError(f"cannot read video '{path}': folder has no {'/'.join(_FRAME_EXTS)} frames")
    picked, out_fps = sampling.pick(len(files), fps)
    # Decode only the selected files; big folders stay cheap to subsample.
    frames = [read_image(files[i]) for i in picked]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise MediaError(
            f"cannot read video '{path}': frames differ in size {sorted(shapes)}; resize them to one size"
        )
    return np.stack(frames), out_fps


def _frame_files(folder: Path) -> list[Path]:
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in _FRAME_EXTS and not p.name.startswith(".")
    ]
    return sorted(files, key=_natural_key)


def _natural_key(path: Path) -> list[Any]:
    """Sort ``frame_2`` before ``frame_10`` (and beyond 5-digit numbering)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as ``(H, W, 3) uint8`` RGB.

    Grayscale and palette images are expanded to RGB; an alpha channel is
    dropped (not blended), and EXIF rotation is applied so photos come out
    upright.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise MediaError(f"cannot read image '{path}': file does not exist")
    with _open_image(path, "image") as im:
        return _rgb8(ImageOps.exif_transpose(im))


def _rgb8(im: Image.Image) -> np.ndarray:
    """Any Pillow image -> ``(H, W, 3) uint8``, scaling deep images instead of clipping them.

    Pillow's own ``convert("RGB")`` clips 16-bit and 32-bit grayscale ("I;16", "I") at 255,
    which turns nearly every pixel of a 16-bit PNG white; those are scaled from 0..65535,
    float images ("F") from 0..1 (or 0..255 when they exceed 1)."""
    if im.mode.startswith("I") or im.mode == "F":
        gray = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            gray = gray * 255.0 if np.nanmax(gray, initial=0.0) <= 1.0 else gray
        else:
            gray = gray / 257.0  # 65535 -> 255
        gray = np.rint(np.nan_to_num(gray).clip(0, 255)).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


@contextlib.contextmanager
def _open_image(path: Path, what: str):
    """``Image.open`` that reports unreadable files as MediaError."""
    if path.is_dir():
        raise MediaError(f"cannot read {what} '{path}': it is a folder, not a file")
    try:
        im = Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaError(f"cannot read {what} '{path}': not a readable image ({_one_line(exc)})") from exc
    with im:
        try:
            yield im
        except (OSError, EOFError) as exc:
            # Pillow decodes lazily, so truncated files only fail here.
            raise MediaError(f"cannot read {what} '{path}': the file is damaged ({_one_line(exc)})") from exc


def probe_video(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe a clip without decoding it.

    Returns ``{"frames": int, "fps": float, "width": int, "height": int}``.
    Videos are probed with PyAV; animated images and frame folders with
    Pillow (folders report :data:`DEFAULT_FOLDER_FPS`).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise MediaError(f"cannot probe video '{path}': file does not exist")
    if path.is_dir():
        return _probe_folder(path)
    if path.suffix.lower() in _PILLOW_READ_EXTS:
        with _open_image(path, "video") as im:
            slots, fps = _animation_timeline(im)
            width, height = im.size
        return {"frames": len(slots), "fps": fps, "width": width, "height": height}
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"cannot probe video '{path}': it has no video stream")
            stream = container.streams.video[0]
            frames, fps = _pyav_count_and_fps(container, stream)
            width, height = stream.codec_context.width, stream.codec_context.height
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError(f"cannot probe video '{path}': not a decodable video ({_one_line(exc)})") from exc
    return {"frames": frames, "fps": fps, "width": width, "height": height}


def _probe_folder(path: Path) -> dict[str, Any]:
    files = _frame_files(path)
    if not files:
        raise MediaError(f"cannot probe video '{path}': folder has no {'/'.join(_FRAME_EXTS)} frames")
    with _open_image(files[0], "image") as im:
        width, height = im.size
    return {"frames": len(files), "fps": DEFAULT_FOLDER_FPS, "width": width, "height": height}


def _one_line(exc: BaseException) -> str:
    # FFmpeg errors repeat errno and path in str(); strerror is the useful part.
    text = getattr(exc, "strerror", None) or str(exc)
    text = " ".join(str(text).split())
    return text or type(exc).__name__


# ---------------------------------------------------------------------------
# Normalising frames
# ---------------------------------------------------------------------------


def to_uint8_frames(frames: Any) -> np.ndarray:
    """Convert any supported clip to ``(F, H, W, 3) uint8`` RGB.

    Accepted inputs:

    * numpy ``(F, H, W, 3)`` uint8, or float in [0, 1];
    * torch tensor ``(F, 3, H, W)`` or ``(F, H, W, 3)``, float in [0, 1] or
      uint8 (when both dims 1 and 3 equal 3, channels-first is assumed, as is
      torch's convention);
    * a list of PIL images, or of ``(H, W, 3)`` arrays, all the same size.

    Float values outside [0, 1] are clipped (NaN becomes 0): map model
    outputs in [-1, 1] with ``(x + 1) / 2`` first. Integer input must already
    be in 0..255.
    """
    if isinstance(frames, (list, tuple)):
        frames = _stack_frame_list(frames)
    if hasattr(frames, "detach"):  # torch tensor; avoid importing torch otherwise
        frames = _tensor_to_numpy_fhwc(frames)
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise MediaError(f"frames must have layout (F, H, W, 3), got shape {tuple(array.shape)}")
    if array.shape[0] == 0 or array.size == 0:
        raise MediaError("no frames to write: the clip is empty")
    return np.ascontiguousarray(_to_uint8(array))


def _stack_frame_list(frames: Sequence[Any]) -> np.ndarray:
    if len(frames) == 0:
        raise MediaError("no frames to write: the clip is empty")
    arrays = []
    for frame in frames:
        if isinstance(frame, Image.Image):
            frame = _rgb8(frame)
        elif hasattr(frame, "detach"):
            frame = _tensor_to_numpy_fhwc(frame[None])[0]
        arrays.append(np.asarray(frame))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise MediaError(f"all frames must have the same size, got shapes {sorted(shapes)}")
    return np.stack(arrays)


def _tensor_to_numpy_fhwc(tensor: Any) -> np.ndarray:
    import torch  # only needed when the caller already uses torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16 or tensor.dtype == torch.float16:
        tensor = tensor.float()  # numpy has no bfloat16
    if tensor.ndim == 4 and tensor.shape[1] == 3:
        tensor = tensor.permute(0, 2, 3, 1)
    return tensor.numpy()


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        scaled = np.nan_to_num(array.astype(np.float32), nan=0.0).clip(0.0, 1.0) * 255.0
        return np.rint(scaled).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        if array.min() < 0 or array.max() > 255:
            raise MediaError(
                f"integer frames must be in 0..255, got {array.min()}..{array.max()}; "
                "pass uint8 or float in [0, 1]"
            )
        return array.astype(np.uint8)
    raise MediaError(f"unsupported frame dtype {array.dtype}; pass uint8 or float in [0, 1]")


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def write_video(
    frames: Any,
    path: str | os.PathLike[str],
    fps: float = 8,
    *,
    crf: int = 18,
    quality: int = 90,
    lossless: bool = False,
) -> Path:
    """Write a clip and return the path written.

    ``frames`` is anything :func:`to_uint8_frames` accepts. The format follows
    the extension of ``path`` (case-insensitive):

    * ``.mp4`` / ``.mov`` / ``.mkv``: H.264 (libx264, yuv420p) at quality
      ``crf`` (0 = lossless .. 51 = worst). yuv420p needs even sizes, so odd
      widths/heights are padded by one pixel replicating the edge: padding
      keeps every pixel the caller made, where cropping would lose a row or
      column. A 65x47 clip is stored as 66x48.
    * ``.gif``: looping GIF, each frame quantised to its own 256-colour
      palette. GIF stores delays in 1/100 s, so e.g. 8 fps (125 ms) plays at
      ~8.3 fps.
    * ``.webp``: looping animated WebP at ``quality`` (0-100) or ``lossless``.

      Both GIF and WebP encoders merge consecutive identical frames into one
      longer frame; timing is unchanged and :func:`read_video` expands them
      again.
    * ``.png``: a single image; only valid for one-frame clips.
    * a folder (path ending in ``/``, an existing directory, or no suffix):
      one ``frame_00000.png`` per frame. Writing into an existing folder
      replaces its ``frame_NNNNN.png`` files (stale ones from a longer clip
      are removed) and leaves other files alone.

    The destination folder must exist. Output appears atomically: it is
    written under a temporary name next to ``path`` and renamed at the end.

    Raises:
        MediaError: empty/invalid frames, unknown extension, missing output
            folder, or several frames sent to a ``.png``.
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    as_folder = _is_folder_target(path)
    target = Path(path).expanduser()
    clip = to_uint8_frames(frames)
    _check_parent(target)
    if as_folder:
        return _write_frame_folder(clip, target)

    write = _file_writer(clip, target, fps, crf=crf, quality=quality, lossless=lossless)
    return atomic.write_file(target, write)


def _file_writer(
    clip: np.ndarray, target: Path, fps: float, *, crf: int, quality: int, lossless: bool
) -> Callable[[Path], None]:
    """Pick the encoder for ``target``'s extension; it writes to a given path."""
    suffix = target.suffix.lower()
    if suffix in _PYAV_FORMATS:
        return partial(_write_pyav, clip, fps=fps, crf=crf, container_format=_PYAV_FORMATS[suffix])
    if suffix == ".gif":
        return partial(_write_gif, clip, fps=fps)
    if suffix == ".webp":
        return partial(_write_webp, clip, fps=fps, quality=quality, lossless=lossless)
    if suffix == ".png":
        if len(clip) != 1:
            raise MediaError(
                f"cannot write {len(clip)} frames to the single image '{target}'; "
                f"use a folder path like '{target.with_suffix('')}/' or .mp4/.gif/.webp"
            )
        return partial(_save_png, clip[0])
    raise MediaError(
        f"cannot write video '{target}': unknown extension '{target.suffix}'; supported: {_SUPPORTED_WRITE}"
    )


def write_grid(
    frames: Any,
    path: str | os.PathLike[str],
    cols: int | None = None,
    *,
    gap: int = 2,
) -> Path:
    """Write all frames as one contact-sheet PNG and return its path.

    Frames are laid out row-major in ``cols`` columns (default
    ``ceil(sqrt(F))``), separated by ``gap`` black pixels.
    """
    clip = to_uint8_frames(frames)
    target = Path(path).expanduser()
    if target.suffix.lower() != ".png":
        raise MediaError(f"cannot write grid '{target}': use a .png file name")
    if cols is not None and cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    _check_parent(target)
    sheet = _tile(clip, cols or math.ceil(math.sqrt(len(clip))), gap)
    return atomic.write_file(target, lambda tmp: _save_png(sheet, tmp))


def _tile(clip: np.ndarray, cols: int, gap: int) -> np.ndarray:
    """``(F, H, W, 3)`` -> ``(rows*H + gaps, cols*W + gaps, 3)`` grid image."""
    count, height, width, _ = clip.shape
    cols = min(cols, count)
    rows = math.ceil(count / cols)
    sheet = np.zeros((rows * height + (rows - 1) * gap, cols * width + (cols - 1) * gap, 3), np.uint8)
    for i, frame in enumerate(clip):
        y, x = (i // cols) * (height + gap), (i % cols) * (width + gap)
        sheet[y : y + height, x : x + width] = frame
    return sheet


def _is_folder_target(path: str | os.PathLike[str]) -> bool:
    text = os.fspath(path)
    # Path() drops a trailing slash, so look at the raw string first.
    if text.endswith(("/", os.sep)):
        return True
    target = Path(text).expanduser()
    return target.is_dir() or target.suffix == ""


def _check_parent(target: Path) -> None:
    parent = target.parent
    if not parent.is_dir():
        raise MediaError(f"output folder '{parent}' does not exist; create it first")


def _write_pyav(clip: np.ndarray, path: Path, fps: float, *, crf: int, container_format: str) -> None:
    """Encode ``(F, H, W, 3) uint8`` as H.264/yuv420p into ``path``."""
    clip = _pad_to_even(clip)
    # Containers store rates as fractions; limit_denominator turns 7.5 into
    # 15/2 and 29.97 into 2997/100 instead of a huge binary fraction.
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = clip.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / rate
        stream.options = {"crf": str(crf)}
        for i, frame in enumerate(clip):
            container.mux(stream.encode(_to_av_frame(frame, i)))
        container.mux(stream.encode())  # flush frames the encoder buffered


def _to_av_frame(frame: np.ndarray, index: int) -> av.VideoFrame:
    av_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
    av_frame.pts = index  # in units of 1/fps, see codec time_base
    return av_frame


def _pad_to_even(clip: np.ndarray) -> np.ndarray:
    """Pad ``(F, H, W, 3)`` at the bottom/right to even H and W (edge replicate)."""
    pad_h, pad_w = clip.shape[1] % 2, clip.shape[2] % 2
    if not pad_h and not pad_w:
        return clip
    return np.pad(clip, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _frame_ms(fps: float) -> int:
    return max(1, round(1000.0 / fps))


def _write_gif(clip: np.ndarray, path: Path, fps: float) -> None:
    # Per-frame adaptive palettes (median cut, no dithering) keep colours
    # faithful and avoid dither noise that flickers between frames.
    images = [Image.fromarray(frame).quantize(colors=256) for frame in clip]
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=_frame_ms(fps),
        loop=0,
        disposal=2,  # each frame fully replaces the previous one
    )


def _write_webp(clip: np.ndarray, path: Path, fps: float, *, quality: int, lossless: bool) -> None:
    images = [Image.fromarray(frame) for frame in clip]
    images[0].save(
        path,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=_frame_ms(fps),
        loop=0,
        quality=quality,
        lossless=lossless,
    )


def _save_png(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path, format="PNG")


def _write_frame_folder(clip: np.ndarray, target: Path) -> Path:
    """Write ``frame_00000.png``... into a temp folder, then move it in place."""
    tmp_dir = atomic.make_temp_dir(target)
    try:
        for i, frame in enumerate(clip):
            _save_png(frame, tmp_dir / _FRAME_NAME.format(i))
        if target.is_dir():
            _merge_frames_into(tmp_dir, target, len(clip))
            tmp_dir.rmdir()
        else:
            os.replace(tmp_dir, target)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return target


def _merge_frames_into(tmp_dir: Path, target: Path, count: int) -> None:
    # Renaming a folder onto a non-empty one is impossible, and replacing the
    # whole folder could delete the user's other files; so move frames one
    # by one (each move is atomic) and drop stale frames of a longer clip.
    for i in range(count):
        name = _FRAME_NAME.format(i)
        os.replace(tmp_dir / name, target / name)
    keep = {_FRAME_NAME.format(i) for i in range(count)}
    for stale in target.iterdir():
        if _FRAME_NAME_RE.fullmatch(stale.name) and stale.name not in keep:
            stale.unlink()
