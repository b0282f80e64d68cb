"""Reading clips (videos, animated images, frame folders) and stills as ``(F, H, W, 3) uint8`` RGB."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageOps, ImageSequence

from vidldm.io.media import MediaError, one_line, open_image, rgb8

#: Frame rate assumed for a folder of frames when the caller gives none.
DEFAULT_FOLDER_FPS = 8.0
# Extensions Pillow reads as (possibly animated) images rather than videos.
_PILLOW_READ_EXTS = (".gif", ".webp", ".png", ".apng", ".jpg", ".jpeg", ".bmp")
# Files a frame folder may hold.
FRAME_EXTS = (".png", ".jpg", ".jpeg")


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
        raise MediaError(f"cannot read video '{path}': not a decodable video ({one_line(exc)})") from exc

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
    with open_image(path, "video") as im:
        slots, src_fps = _animation_timeline(im)
        picked, out_fps = sampling.pick(len(slots), src_fps)
        by_frame = {}
        # GIF frames are deltas, so visit them in order: seeking backwards
        # makes Pillow re-decode from the first frame each time.
        for i in sorted({slots[s] for s in picked}):
            im.seek(i)
            by_frame[i] = rgb8(im)
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
        raise MediaError(f"cannot read video '{path}': folder has no {'/'.join(FRAME_EXTS)} frames")
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
        if p.is_file() and p.suffix.lower() in FRAME_EXTS and not p.name.startswith(".")
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
    with open_image(path, "image") as im:
        return rgb8(ImageOps.exif_transpose(im))


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
        with open_image(path, "video") as im:
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
        raise MediaError(f"cannot probe video '{path}': not a decodable video ({one_line(exc)})") from exc
    return {"frames": frames, "fps": fps, "width": width, "height": height}


def _probe_folder(path: Path) -> dict[str, Any]:
    files = _frame_files(path)
    if not files:
        raise MediaError(f"cannot probe video '{path}': folder has no {'/'.join(FRAME_EXTS)} frames")
    with open_image(files[0], "image") as im:
        width, height = im.size
    return {"frames": len(files), "fps": DEFAULT_FOLDER_FPS, "width": width, "height": height}
