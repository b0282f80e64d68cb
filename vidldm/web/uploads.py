"""Checks on what a visitor uploads (a still to animate, a clip to restyle or extend) before the model sees it:
size, type and frames, each refused in one line the page shows (a `VidldmError`), never a traceback."""

from __future__ import annotations

from pathlib import Path

from vidldm.errors import VidldmError

IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_TYPES = (".mp4", ".mov", ".mkv", ".webm", ".gif", ".webp")
MAX_UPLOAD_MB = 64  # also gradio's `max_file_size`, so a larger upload is cut off before it is stored
MAX_SIDE = 4096  # pixels: a still or a clip larger than this is refused before it is decoded
MAX_VIDEO_FRAMES = 512


def check_upload(path: str | None, kind: str) -> str:
    """`path` if it is a readable `kind` ('image' or 'video') within the limits; a one-line VidldmError if not."""
    if not path:
        raise VidldmError(f"upload a {'still image' if kind == 'image' else 'video'} first")
    p = Path(path)
    types = IMAGE_TYPES if kind == "image" else VIDEO_TYPES
    if p.suffix.lower() not in types:
        raise VidldmError(f"'{p.name}' is not a supported {kind} type; upload one of {', '.join(types)}")
    size_mb = p.stat().st_size / 2**20
    if size_mb > MAX_UPLOAD_MB:
        raise VidldmError(f"'{p.name}' is {size_mb:.0f} MB; uploads are limited to {MAX_UPLOAD_MB} MB")
    _check_image(p) if kind == "image" else _check_video(p)
    return str(p)


def _check_image(p: Path) -> None:
    from vidldm.io import read_image

    try:
        height, width = read_image(p).shape[:2]
    except VidldmError as err:
        raise VidldmError(f"'{p.name}' could not be read as an image; upload a {', '.join(IMAGE_TYPES)} file") from err
    _check_side(p, width, height)


def _check_video(p: Path) -> None:
    from vidldm.io import probe_video

    try:
        info = probe_video(p)
    except VidldmError as err:
        raise VidldmError(f"'{p.name}' could not be read as a video; upload a {', '.join(VIDEO_TYPES)} file") from err
    _check_side(p, info["width"], info["height"])
    if not 1 <= info["frames"] <= MAX_VIDEO_FRAMES:
        raise VidldmError(f"'{p.name}' has {info['frames']} frames; upload a clip of 1 to {MAX_VIDEO_FRAMES} frames")


def _check_side(p: Path, width: int, height: int) -> None:
    if max(width, height) > MAX_SIDE:
        raise VidldmError(f"'{p.name}' is {width}x{height}; upload at most {MAX_SIDE} pixels a side")

