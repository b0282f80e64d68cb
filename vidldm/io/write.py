"""Writing clips: mp4/mov/mkv (PyAV, H.264 yuv420p), gif and webp (Pillow), PNG frames or a contact sheet.

Every write is atomic (`vidldm.atomic`): the output appears whole under its name or not at all.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from vidldm import atomic
from vidldm.io.media import MediaError, rgb8

# Container format PyAV should use for each writable video extension.
_PYAV_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
#: What `write_clip` writes, besides a folder of PNG frames (a `.png` of several frames is a contact sheet).
OUTPUT_SUFFIXES = (*_PYAV_FORMATS, ".gif", ".webp", ".png")
_SUPPORTED_WRITE = ", ".join(OUTPUT_SUFFIXES) + ", or a folder path (ending in '/')"
_FRAME_NAME = "frame_{:05d}.png"
_FRAME_NAME_RE = re.compile(r"frame_\d{5,}\.png")


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
            frame = rgb8(frame)
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
    check_output_folder(target)
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
    check_output_folder(target)
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


def check_output_folder(target: Path) -> None:
    """The folder to write into exists and is a folder (a file on the way is named)."""
    folder = target.parent
    if folder.is_dir():
        return
    for above in (folder, *folder.parents):
        if above.exists() and not above.is_dir():
            raise MediaError(f"cannot write into '{folder}': '{above}' is a file, not a folder")
    raise MediaError(f"output folder '{folder}' does not exist; create it first")


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


def write_clip(frames: Any, path: str | os.PathLike[str], fps: float = 8) -> Path:
    """`write_video`, except that several frames sent to a `.png` become one contact sheet (`write_grid`)."""
    target = Path(path).expanduser()
    if target.suffix.lower() == ".png" and not _is_folder_target(path) and len(to_uint8_frames(frames)) > 1:
        return write_grid(frames, target)
    return write_video(frames, path, fps=fps)


def _is_special(target: Path) -> bool:
    """A device, a pipe, or a name in /dev, /proc or /sys (`/dev/stdout` may lead to a regular file, and the atomic
    rename would then replace the link itself): never an output."""
    system = ("/dev", "/proc", "/sys")
    named = os.path.abspath(target)
    if any(named == p or named.startswith(p + "/") for p in system):
        return True
    real = os.path.realpath(target)
    if any(real == p or real.startswith(p + "/") for p in system):
        return True
    return target.exists() and not (target.is_file() or target.is_dir())


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Before any work is done: `write_clip` can write `path` (a known suffix or a folder, in a writable folder
    that exists), and `path` is not a device, a pipe or a folder named like a file."""
    target = Path(path).expanduser()
    if _is_special(target):
        raise MediaError(f"cannot write a clip to '{target}': it is a device or a pipe, not a file; give a file name "
                         f"ending in {', '.join(OUTPUT_SUFFIXES)}")
    if target.is_dir() and target.suffix.lower() in OUTPUT_SUFFIXES and not os.fspath(path).endswith(("/", os.sep)):
        raise MediaError(f"cannot write '{target}': it is a folder; give another file name, or '{target}/' for PNG frames")
    if not _is_folder_target(path) and target.suffix.lower() not in OUTPUT_SUFFIXES:
        raise MediaError(f"cannot write '{target.name}': use {_SUPPORTED_WRITE}")
    check_output_folder(target)
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise MediaError(f"cannot write into '{target.parent}': the folder is read-only for this user")
    return target
