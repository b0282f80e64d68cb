"""What reading and writing share: the error type and Pillow images to RGB arrays."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vidldm.errors import VidldmError


class MediaError(VidldmError):
    """A user-facing media problem: missing file, undecodable data, bad path.

    A ``ValueError`` (via :class:`~vidldm.errors.VidldmError`, so the CLI
    reports it as one line). The message says what was wrong and what to do.
    """


def rgb8(im: Image.Image) -> np.ndarray:
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
def open_image(path: Path, what: str):
    """``Image.open`` that reports unreadable files as MediaError."""
    if path.is_dir():
        raise MediaError(f"cannot read {what} '{path}': it is a folder, not a file")
    try:
        im = Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaError(f"cannot read {what} '{path}': not a readable image ({one_line(exc)})") from exc
    with im:
        try:
            yield im
        except (OSError, EOFError) as exc:
            # Pillow decodes lazily, so truncated files only fail here.
            raise MediaError(f"cannot read {what} '{path}': the file is damaged ({one_line(exc)})") from exc


def one_line(exc: BaseException) -> str:
    # FFmpeg errors repeat errno and path in str(); strerror is the useful part.
    text = getattr(exc, "strerror", None) or str(exc)
    text = " ".join(str(text).split())
    return text or type(exc).__name__
