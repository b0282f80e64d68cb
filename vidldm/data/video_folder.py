"""Finetuning data from a folder of videos: caption discovery and a clip-sampling `Dataset`.

Folder layouts `find_clips` understands, tried in this order:

1. an explicit captions file (`captions=` argument), `.csv` or `.jsonl` as below;
2. `root/captions.csv` with a `path,caption` header, or `root/captions.jsonl` with one
   `{"path": ..., "caption": ...}` object per line; paths are relative to `root` or absolute::

       root/captions.csv      path,caption
                              clips/a.mp4,"a dog runs, then stops"

3. a WebVid-style CSV anywhere at the top of `root` (any `*.csv` whose header has `videoid`,
   `name` and `page_dir`): the clip is `root/{page_dir}/{videoid}.mp4`, the caption `name`;
4. every video (`.mp4 .mov .mkv .webm .avi .gif`) under `root`, recursively, in sorted order,
   captioned by a sidecar `same_stem.txt` next to it ("" when there is none)::

       root/cats/a.mp4  root/cats/a.txt  root/b.webm  (b has caption "")

`VideoClipDataset` turns each listed video into one training sample per epoch:

    pixel_values (3, F, H, W) float in [-1, 1]   F = num_frames, resized and centre-cropped
    caption      str
    path         str

"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from einops import rearrange
from torch.utils.data import Dataset

from vidldm.errors import VidldmError
from vidldm.frames import frames_to_tensor
from vidldm.io import probe_video, read_video

__all__ = ["VIDEO_EXTS", "ClipInfo", "VideoClipDataset", "find_clips"]

#: File extensions discovered as videos when a folder has no captions file.
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")
_WEBVID_COLUMNS = {"videoid", "name", "page_dir"}

logger = logging.getLogger("vidldm.data")


@dataclass(frozen=True)
class ClipInfo:
    """One video of a dataset and its caption."""

    path: Path
    caption: str


# ---------------------------------------------------------------------------
# Finding clips and captions
# ---------------------------------------------------------------------------


def find_clips(root: str | os.PathLike[str], captions: str | os.PathLike[str] | None = None) -> list[ClipInfo]:
    """List the videos under `root` with their captions (see the module docstring for layouts).

    Files a captions file lists are not checked here: a missing or broken video is skipped
    (and reported) by `VideoClipDataset` when it is first read, so one bad download does not
    stop a long listing.

    Raises:
        VidldmError: `root` is not a folder, the captions file is missing or malformed (the
            message names the line), or no clips were found.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise VidldmError(f"video folder '{root}' {what}; pass the folder that holds your clips")

    if captions is not None:
        clips = _read_captions_file(Path(captions).expanduser(), root)
        source = f"captions file '{captions}'"
    elif (root / "captions.csv").is_file():
        clips, source = _read_captions_file(root / "captions.csv", root), f"'{root / 'captions.csv'}'"
    elif (root / "captions.jsonl").is_file():
        clips, source = _read_captions_file(root / "captions.jsonl", root), f"'{root / 'captions.jsonl'}'"
    elif (webvid := _find_webvid_csv(root)) is not None:
        clips, source = _read_webvid_csv(webvid, root), f"WebVid file '{webvid}'"
    else:
        clips, source = _scan_videos(root), f"'{root}'"

    if not clips:
        raise VidldmError(
            f"no clips found in {source}: add videos ({' '.join(VIDEO_EXTS)}) with optional .txt "
            "captions, or a captions.csv (path,caption) / captions.jsonl"
        )
    return clips


def _read_captions_file(path: Path, root: Path) -> list[ClipInfo]:
    if not path.is_file():
        raise VidldmError(f"captions file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, root)
    if suffix == ".csv":
        return _read_csv(path, root)
    raise VidldmError(f"captions file '{path}' must be a .csv (path,caption) or .jsonl ({{\"path\", \"caption\"}})")


def _resolve(path_text: str, root: Path) -> Path:
    """Captions name clips relative to the dataset root (or absolutely)."""
    path = Path(path_text).expanduser()
    return path if path.is_absolute() else root / path


def _read_csv(path: Path, root: Path) -> list[ClipInfo]:
    # utf-8-sig: spreadsheets often save CSVs with a byte-order mark before the header.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if _WEBVID_COLUMNS <= set(header):
            return _webvid_rows(reader, header, path, root)
        if not {"path", "caption"} <= set(header):
            raise VidldmError(
                f"captions file '{path}' line 1: expected a header with columns path,caption, got {','.join(header)!r}"
            )
        col_path, col_caption = header.index("path"), header.index("caption")
        clips = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) < len(header):
                raise VidldmError(
                    f"captions file '{path}' line {reader.line_num}: expected {len(header)} columns "
                    f"({','.join(header)}), got {len(row)}; quote captions that contain commas"
                )
            if not row[col_path].strip():
                raise VidldmError(f"captions file '{path}' line {reader.line_num}: the path is empty")
            clips.append(ClipInfo(_resolve(row[col_path].strip(), root), row[col_caption].strip()))
    return clips


def _read_jsonl(path: Path, root: Path) -> list[ClipInfo]:
    clips = []
    with open(path, encoding="utf-8-sig") as f:
        for line_num, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise VidldmError(f"captions file '{path}' line {line_num}: not valid JSON ({exc.msg})") from exc
            ok = (
                isinstance(record, dict)
                and isinstance(record.get("path"), str)
                and record["path"].strip()
                and isinstance(record.get("caption"), str)
            )
            if not ok:
                raise VidldmError(
                    f"captions file '{path}' line {line_num}: expected an object like "
                    '{"path": "clip.mp4", "caption": "..."} with string values'
                )
            clips.append(ClipInfo(_resolve(record["path"].strip(), root), record["caption"].strip()))
    return clips


def _find_webvid_csv(root: Path) -> Path | None:
    for path in sorted(root.glob("*.csv")):
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = {h.strip() for h in next(csv.reader(f), [])}
        if _WEBVID_COLUMNS <= header:
            return path
    return None


def _read_webvid_csv(path: Path, root: Path) -> list[ClipInfo]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        return _webvid_rows(reader, header, path, root)


def _webvid_rows(reader, header: list[str], path: Path, root: Path) -> list[ClipInfo]:
    """WebVid's results CSVs: the clip is `{page_dir}/{videoid}.mp4`, its caption `name`."""
    col = {name: header.index(name) for name in _WEBVID_COLUMNS}
    clips = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise VidldmError(
                f"WebVid file '{path}' line {reader.line_num}: expected {len(header)} columns, got {len(row)}"
            )
        video = root / row[col["page_dir"]].strip() / f"{row[col['videoid']].strip()}.mp4"
        clips.append(ClipInfo(video, row[col["name"]].strip()))
    return clips


def _scan_videos(root: Path) -> list[ClipInfo]:
    videos = sorted(
        p for p in root.rglob("*")
        # Hidden names include io.write_video's in-progress temp files (".x.mp4.tmp-1234.mp4").
        if p.suffix.lower() in VIDEO_EXTS and not p.name.startswith(".") and p.is_file()
    )
    return [ClipInfo(p, _sidecar_caption(p)) for p in videos]


def _sidecar_caption(video: Path) -> str:
    sidecar = video.with_suffix(".txt")
    return sidecar.read_text(encoding="utf-8-sig").strip() if sidecar.is_file() else ""


# ---------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------


class VideoClipDataset(Dataset):
    """One random `num_frames` window per video per epoch, as `pixel_values (3, F, H, W)` in [-1, 1].

    Frames are taken every `stride` source frames, or at `fps` frames per second (nearest
    source frame to each target time; the source rate comes from `probe_video`). Only the
    chosen frames are decoded. Frames are resized to cover `height x width` and centre-cropped;
    `flip=True` mirrors a sample horizontally with probability 0.5.

    Randomness (window start, flip) comes from `numpy.random.default_rng((seed, epoch, index))`,
    so a sample depends only on those three numbers: resuming at an epoch and index replays
    exactly, whatever the worker count. Call `set_epoch` once per epoch.

    Videos that cannot be read, or are too short for the window, are skipped: `dataset[i]`
    then returns the next good clip (wrapping around). Each bad file is recorded once in
    `skipped` (`{path: reason}`), warned about once on the `vidldm.data` logger, and never
    read again; `report()` summarises. With DataLoader workers each worker keeps its own record.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        num_frames: int,
        height: int,
        width: int,
        stride: int = 1,
        fps: float | None = None,
        flip: bool = False,
        captions: str | os.PathLike[str] | None = None,
        seed: int = 0,
    ):
        _check_positive_int("num_frames", num_frames)
        _check_positive_int("height", height)
        _check_positive_int("width", width)
        _check_positive_int("stride", stride)
        if fps is not None and not fps > 0:
            raise VidldmError(f"fps must be > 0, got {fps}")
        if fps is not None and stride != 1:
            raise VidldmError("pass either stride or fps, not both")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise VidldmError(f"seed must be an integer >= 0, got {seed!r}")
        self.root = Path(root).expanduser()
        self.clips = find_clips(self.root, captions)
        self.num_frames, self.height, self.width = num_frames, height, width
        self.stride, self.fps, self.flip, self.seed = stride, fps, flip, int(seed)
        self.epoch = 0
        self.skipped: dict[str, str] = {}
        self._probes: dict[str, dict] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose windows and flips `__getitem__` draws."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise VidldmError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        n = len(self.clips)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} clips")
        index %= n
        for offset in range(n):
            clip = self.clips[(index + offset) % n]
            if str(clip.path) in self.skipped:
                continue  # known bad: do not decode it again
            # Keyed by the requested index, so a substitute clip still gets its own window.
            rng = np.random.default_rng((self.seed, self.epoch, index))
            sample = self._load(clip, rng)
            if sample is not None:
                return sample
        raise VidldmError(
            f"no readable clip with at least {self.num_frames} frames ({self._sampling_text()}) "
            f"in '{self.root}': {self.report(max_listed=5)}"
        )

    def frame_indices(self, num_source_frames: int, source_fps: float, rng: np.random.Generator) -> np.ndarray | None:
        """Source frame indices `(num_frames,)` for one sample, or None when the clip is too short."""
        offsets = self._offsets(source_fps)
        need = int(offsets[-1]) + 1
        if num_source_frames < need:
            return None
        start = int(rng.integers(0, num_source_frames - need + 1))
        return start + offsets

    def report(self, max_listed: int | None = None) -> str:
        """One line: how many videos were skipped and why, e.g. `skipped 1 of 10 videos: a.mp4 (unreadable)`."""
        text = f"skipped {len(self.skipped)} of {len(self.clips)} videos"
        items = [f"{self._short_name(path)} ({reason})" for path, reason in self.skipped.items()]
        if max_listed is not None and len(items) > max_listed:
            items = [*items[:max_listed], f"and {len(items) - max_listed} more"]
        return f"{text}: {', '.join(items)}" if items else text

    # --- internals ---------------------------------------------------------

    def _offsets(self, source_fps: float) -> np.ndarray:
        """Frame offsets from the window start, `(num_frames,)` int."""
        k = np.arange(self.num_frames)
        if self.fps is None:
            return k * self.stride
        # Nearest source frame to each target time, rounding halves up like io.read_video(fps=...).
        ratio = source_fps / self.fps
        return np.array([math.floor(i * ratio + 0.5) for i in k], dtype=np.int64)

    def _sampling_text(self) -> str:
        return f"at {self.fps:g} fps" if self.fps is not None else f"stride {self.stride}"

    def _load(self, clip: ClipInfo, rng: np.random.Generator) -> dict | None:
        """The sample for `clip`, or None (after recording why) when the clip is unusable."""
        key = str(clip.path)
        info = self._probe(clip.path)
        if info is None:
            return None
        indices = self.frame_indices(info["frames"], info["fps"], rng)
        if indices is None:
            need = int(self._offsets(info["fps"])[-1]) + 1
            self._skip(key, f"too short ({info['frames']} frames, need {need})")
            return None
        flip = self.flip and rng.random() < 0.5
        try:
            frames, _ = read_video(clip.path, indices=indices.tolist())
        except Exception as exc:  # noqa: BLE001 - decoders raise many types on damaged data
            self._skip(key, "unreadable", detail=str(exc))
            return None
        if len(frames) != len(indices):
            self._skip(key, "unreadable", detail=f"decoded {len(frames)} of {len(indices)} frames")
            return None
        video = rearrange(frames_to_tensor(frames, self.height, self.width), "f c h w -> c f h w")
        if flip:
            video = video.flip(-1)
        return {"pixel_values": video.contiguous(), "caption": clip.caption, "path": key}

    def _probe(self, path: Path) -> dict | None:
        key = str(path)
        if key not in self._probes:
            if not path.exists():
                self._skip(key, "missing file")
                return None
            try:
                self._probes[key] = probe_video(path)
            except Exception as exc:  # noqa: BLE001 - same reason as in _load
                self._skip(key, "unreadable", detail=str(exc))
                return None
        return self._probes[key]

    def _skip(self, key: str, reason: str, detail: str | None = None) -> None:
        if key in self.skipped:
            return
        self.skipped[key] = reason
        self._probes.pop(key, None)
        logger.warning("skipping video %s: %s%s", key, reason, f" ({detail})" if detail else "")

    def _short_name(self, path: str) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return path


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise VidldmError(f"{name} must be an integer >= 1, got {value!r}")
