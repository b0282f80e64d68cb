"""The studio's work, without the page: one loaded pipeline, an output folder, and the clips made so far.

A job is the CLI's: the form becomes the CLI's namespace (`form.to_namespace`), uploads are checked and
copied into the output folder (a sidecar must name a file that stays), and `clip_run.make_clip` samples,
writes the mp4 and its sidecar atomically; a gif is written beside them for the gallery and downloads.
"""

from __future__ import annotations

import random
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidldm import sampling_settings as settings
from vidldm.clip_run import make_clip, prompt_text, read_sidecar, sidecar_path
from vidldm.errors import VidldmError
from vidldm.seeds import normalize_seed
from vidldm.web.form import from_sidecar, to_namespace
from vidldm.web.uploads import check_upload


def media_kinds(mode: str) -> list[tuple[str, str]]:
    """`(key, kind)` of each upload a mode takes, in order: animate's still, inbetween's start and end, a clip..."""
    return [(key, "image" if key in settings.IMAGE_INPUTS else "video") for key in settings.MODE_INPUTS.get(mode, ())]


@dataclass(frozen=True)
class Clip:
    """A clip this server made: `mp4` (the clip), `gif` (preview and download) and its JSON `sidecar`."""

    mp4: Path
    gif: Path
    sidecar: Path

    def settings(self) -> dict[str, Any]:
        return read_sidecar(self.sidecar)


class Studio:
    def __init__(self, pipe, output_dir: str | Path, server: dict[str, Any] | None = None):
        self.pipe = pipe
        self.output_dir = Path(output_dir).expanduser().resolve()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.server = {"model": None, "motion_adapter": None, "lora": None, "motion_lora": None, **(server or {})}
        self.device = str(pipe.device)
        # gradio's queue already runs one job at a time; the lock keeps it so where the app is mounted otherwise
        self._lock = threading.Lock()
        self.clips: list[Clip] = self._existing()

    def make(self, mode: str, prompt: str, media, values: list[Any],
             on_step: Callable[[int, int], None] | None = None) -> Clip:
        """One clip of `mode` from the form's `values` (`form.form_settings(mode)` order) and its uploads `media` (a
        path, or one per `media_kinds(mode)`); VidldmError on a mistake."""
        if not (prompt or "").strip() and mode != "interpolate-frames":  # its known frames say what it shows
            raise VidldmError("type a prompt first")
        args = to_namespace(mode, prompt or "", values, self.server)
        kinds = media_kinds(mode)
        given = list(media) if isinstance(media, (list, tuple)) else [media] * min(len(kinds), 1)
        for (key, kind), path in zip(kinds, given + [None] * (len(kinds) - len(given)), strict=True):
            setattr(args, key, check_upload(path, kind))
        args.seed = normalize_seed(args.seed) if args.seed is not None else random.randrange(2**31)
        with self._lock:
            output = self._next_output(args.prompt, args.seed)
            for key, _ in kinds:  # a copy in the output folder: the sidecar's path outlives gradio's upload cache
                setattr(args, key, self._keep_input(getattr(args, key), output, key))
            frames = make_clip(self.pipe, args, output, self.device, on_step)
            from vidldm.io import write_clip

            write_clip(frames, output.with_suffix(".gif"), args.fps)
            clip = Clip(output, output.with_suffix(".gif"), sidecar_path(output))
            self.clips.append(clip)
        return clip

    def replay(self, clip: Clip, on_step: Callable[[int, int], None] | None = None) -> Clip:
        """The clip again, from its sidecar: same mode, prompt, input, settings and seed."""
        saved = clip.settings()
        mode = saved["command"]
        media = [saved.get(key) for key, _ in media_kinds(mode)]
        return self.make(mode, prompt_text(saved["prompt"]), media, from_sidecar(mode, saved), on_step)

    def _next_output(self, prompt: str, seed: int) -> Path:
        """`NNNN-<prompt>-<seed>.mp4`, numbered after the folder's clips, so the folder lists them in order."""
        numbers = [int(m.group(1)) for p in self.output_dir.iterdir() if (m := re.match(r"(\d{4,})-", p.name))]
        slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:48] or "clip"
        return self.output_dir / f"{max(numbers, default=0) + 1:04d}-{slug}-{seed}.mp4"

    def _keep_input(self, upload: str, output: Path, key: str) -> str:
        folder = self.output_dir / "inputs"
        folder.mkdir(exist_ok=True)
        name = "input" if key in ("image", "video") else key  # inbetween keeps a start and an end
        kept = folder / f"{output.stem}-{name}{Path(upload).suffix.lower()}"
        shutil.copyfile(upload, kept)
        return str(kept)

    def _existing(self) -> list[Clip]:
        """The clips already in the output folder (an earlier run of the server), oldest first."""
        clips = []
        for mp4 in sorted(self.output_dir.glob("*.mp4")):
            clip = Clip(mp4, mp4.with_suffix(".gif"), sidecar_path(mp4))
            if clip.gif.exists() and clip.sidecar.exists():
                try:
                    clip.settings()
                except VidldmError:
                    continue  # not one of ours
                clips.append(clip)
        return clips
