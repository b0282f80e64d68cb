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
from vidldm.builtin_names import own_keyframe_encoder
from vidldm.clip_run import keyframe_encoder_settings, make_clip, prompt_text, read_sidecar, sidecar_path
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
        self.server = {"model": None, "motion_adapter": None, "lora": None, "motion_lora": None, "sparsectrl": None,
                       **(server or {})}
        self.device = str(pipe.device)
        # gradio's queue already runs one job at a time; the lock keeps it so where the app is mounted otherwise
        self._lock = threading.Lock()
        self.clips: list[Clip] = self._existing()
        self.keyframe_encoder = self._keyframe_encoder()

    def make(self, mode: str, prompt: str, media, values: list[Any],
             on_step: Callable[[int, int], None] | None = None,
             keyframes: list[tuple[Any, str | None]] | None = None, tuned: bool = True,
             exact_keyframes: bool | None = None) -> Clip:
        """One clip of `mode` from the form's `values` (`form.form_settings(mode)` order) and its uploads `media` (a
        path, or one per `media_kinds(mode)`); `keyframes`: `(frame, image)` pairs for the keyframe encoder (frame
        blank: the clip's last), empty slots skipped; `tuned`: the model's own encoder's settings fill the values
        left at the model's defaults (not on replay: a sidecar holds what was used); `exact_keyframes`: as the CLI's
        flag (None: the encoder's own default; a replay gives the sidecar's). VidldmError on a mistake."""
        if not (prompt or "").strip() and mode != "interpolate-frames":  # its known frames say what it shows
            raise VidldmError("type a prompt first")
        args = to_namespace(mode, prompt or "", values, self.server)
        kinds = media_kinds(mode)
        given = list(media) if isinstance(media, (list, tuple)) else [media] * min(len(kinds), 1)
        for (key, kind), path in zip(kinds, given + [None] * (len(kinds) - len(given)), strict=True):
            setattr(args, key, check_upload(path, kind))
        keys = self._keyframes(args, keyframes or [], tuned)
        if mode == "generate":  # the only mode whose keyframes can also be known frames (vidldm.clip_run.control_inputs)
            args.exact_keyframes = exact_keyframes if keys else None
        args.seed = normalize_seed(args.seed) if args.seed is not None else random.randrange(2**31)
        with self._lock:
            output = self._next_output(args.prompt, args.seed)
            for key, _ in kinds:  # a copy in the output folder: the sidecar's path outlives gradio's upload cache
                setattr(args, key, self._keep_input(getattr(args, key), output, key))
            args.keyframe = [f"{i}:{self._keep_input(path, output, f'keyframe{i}')}" for i, path in keys] or None
            if not args.keyframe:
                args.sparsectrl = None  # the server's SparseCtrl is for keyframed clips: a plain one neither uses nor records it
            # the encoder acts only on clips with keyframes: a ControlNet set on the pipe needs its frames every call
            self.pipe.set_controlnet(self.keyframe_encoder if args.keyframe else None)
            try:
                frames = make_clip(self.pipe, args, output, self.device, on_step)
            finally:
                self.pipe.set_controlnet(None)
            from vidldm.io import write_clip

            write_clip(frames, output.with_suffix(".gif"), args.fps)
            clip = Clip(output, output.with_suffix(".gif"), sidecar_path(output))
            self.clips.append(clip)
        return clip

    def replay(self, clip: Clip, on_step: Callable[[int, int], None] | None = None) -> Clip:
        """The clip again, from its sidecar: same mode, prompt, input, keyframes, settings and seed."""
        saved = clip.settings()
        mode = saved["command"]
        self._check_replayable(saved, clip.sidecar)
        media = [saved.get(key) for key, _ in media_kinds(mode)]
        keyframes = [settings.parse_keyframe(spec) for spec in saved.get("keyframe") or []]
        return self.make(mode, prompt_text(saved["prompt"]), media, from_sidecar(mode, saved), on_step, keyframes,
                         tuned=False, exact_keyframes=saved.get("exact_keyframes", settings.BY_NAME["exact_keyframes"].legacy))

    def _check_replayable(self, saved: dict[str, Any], sidecar: Path) -> None:
        """Refuse in one line a sidecar this server would remake otherwise than it was made (the CLI's, put in the
        output folder): control or image prompts the studio does not take, keyframes outside the generate tab or
        through another encoder than this server's. `vidldm replay` remakes those."""
        remake = f"remake it with `vidldm replay {sidecar}`"
        for s in settings.SETTINGS:
            if s.group in ("image prompt", "control") and s.key not in ("keyframe", "sparsectrl", "exact_keyframes") \
                    and saved.get(s.key) not in (None, [], s.default):
                raise VidldmError(f"this clip was made with {s.flag}, which the studio does not take; {remake}")
        if saved.get("keyframe"):
            if saved["command"] != "generate":
                raise VidldmError(f"this {saved['command']} clip has keyframes, which the studio takes in generate only; {remake}")
            if _encoder_spec(saved.get("sparsectrl")) != _encoder_spec(self.server["sparsectrl"]):
                used, ours = (spec or "the model's own encoder" for spec in (saved.get("sparsectrl"), self.server["sparsectrl"]))
                raise VidldmError(f"this clip's keyframes went through {used}, this server's go through {ours}; {remake}")

    def _keyframe_encoder(self):
        """The SparseCtrl keyframes go through: the server's `--sparsectrl`, else the model's own encoder (the shipped
        shapes model has one), else None (the page then shows no keyframe fields)."""
        given, model = self.server["sparsectrl"], self.server["model"]
        path = settings.parse_lora_spec(given, "--sparsectrl scale")[0] if given else own_keyframe_encoder(model)
        if path is None:
            return None
        from vidldm.control import load_control_model

        try:
            return load_control_model(str(path), "sparsectrl", self.pipe.unet, self.pipe.unet.dtype, self.pipe.unet.device)
        except VidldmError as err:  # named as the CLI names it (loading.apply_controlnets)
            raise VidldmError(f"--sparsectrl '{path}': {err}") from err

    def _keyframes(self, args, slots: list[tuple[Any, str | None]], tuned: bool = True) -> list[tuple[int, str]]:
        """`(frame, image)` slots with an image, checked before any file is kept: frames whole numbers in the clip
        (blank: its last frame), images readable. With the model's own encoder and `tuned`, the settings it was
        tuned with (its sampling.json) replace the form's values that are still the model's defaults, as
        `--keyframe` does in the CLI for flags left out."""
        filled = [(frame, path) for frame, path in slots if path]
        if not filled:
            return []
        if self.keyframe_encoder is None:
            raise VidldmError("this model has no keyframe encoder; serve it with --sparsectrl PATH to use keyframes")
        if args.command != "generate":  # other modes take their length from an input: a blank frame means no one frame
            raise VidldmError("keyframes are for the generate tab; in other modes use vidldm's --keyframe")
        last = (args.frames or self.pipe.default_num_frames) - 1
        keys = []
        for frame, path in filled:
            text = "" if frame is None else str(frame).strip()
            if text and not re.fullmatch(r"\d+(\.0*)?", text):
                raise VidldmError(f"a keyframe's frame must be a whole number from 0 (blank: the last frame), got '{text}'")
            keys.append((int(float(text)) if text else last, check_upload(path, "image")))
        from vidldm.control import check_indices

        check_indices([i for i, _ in keys], last + 1)  # SparseCtrl's own check, here before any file is kept
        own = None if self.server["sparsectrl"] or not tuned else own_keyframe_encoder(self.server["model"])
        if own is not None:
            defaults = self.pipe.sampling_defaults()
            for name, value in keyframe_encoder_settings(own)[1].items():
                key = settings.BY_NAME[name].key
                if getattr(args, key, None) == defaults.get(name):
                    setattr(args, key, value)
        return keys

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


def _encoder_spec(spec: str | None) -> tuple[str, float] | None:
    """A `--sparsectrl PATH[:SCALE]` as (resolved path, scale), so 'enc' and 'enc:1.0' compare equal; None: the
    model's own encoder."""
    if not spec:
        return None
    path, scale = settings.parse_lora_spec(spec, "--sparsectrl scale")
    return str(Path(path).expanduser().resolve()), scale
