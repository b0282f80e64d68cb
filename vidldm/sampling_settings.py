"""The one table of settings a clip is made with: name, CLI flag, type, range, default.

Everything else is derived from `SETTINGS`, so a new setting is one entry here:
- the pipeline's fallbacks (`SAMPLING_DEFAULTS`) and the checks of a model's own defaults
  (`check_generation_defaults`; a small model tuned for 20 steps should not get diffusers' 25
  because a flag was left out, so pipelines save the settings their weights were tuned for);
- the CLI's flags (`add_flags`), the checks before any model loads (`check_args`), what a sidecar
  records (`recorded`) and how `replay` turns a sidecar back into flags (`replay_argv`);
- the range checks of `VideoPipeline.__call__` (`Setting.check`, with the Python name in messages).
No torch here: training recipes check their `sampling:` keys before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidldm.errors import VidldmError

MODES = ("generate", "animate", "restyle", "extend", "inbetween", "interpolate-frames")
# The files each mode reads (its positional arguments before the prompt, and its sidecar's keys).
MODE_INPUTS = {"generate": (), "animate": ("image",), "restyle": ("video",), "extend": ("video",),
               "inbetween": ("start", "end"), "interpolate-frames": ("video",)}
IMAGE_INPUTS = ("image", "start", "end")  # the others are videos
SAMPLED = (*MODES, "walk")  # every command that samples clips (a walk samples many, see vidldm.walk)
_UNSET: Any = object()


@dataclass(frozen=True)
class Setting:
    """One setting. `name` is the keyword of `VideoPipeline.__call__` (diffusers' name) where it has one;
    `key` (the flag's name with underscores) is the argparse dest and the sidecar's key.

    `fallback`: diffusers' value, used when neither the call nor the model sets it (only for settings a
    model may carry as its own default). `legacy`: what a sidecar without this key implies: it was written
    before the setting existed, when vidldm behaved as this value does."""

    name: str
    flag: str
    type: type
    help: str
    default: Any = None
    low: float | None = None
    high: float | None = None
    above: float | None = None  # exclusive lower bound (fps > 0)
    choices: tuple[str, ...] | None = None
    validate: Callable[[Any], None] | None = None  # extra check (e.g. scheduler names), raises VidldmError
    fallback: Any = _UNSET
    legacy: Any = _UNSET
    commands: tuple[str, ...] = SAMPLED
    group: str = "sampling"
    is_path: bool = False  # recorded resolved, so a replay from another folder finds the file
    recorded: bool = True
    to_pipeline: bool = True  # a keyword of VideoPipeline.__call__ (the model's and output's settings are not)
    flag_only: bool = False  # a switch (`--overwrite`), no value
    negatable: bool = False  # a yes/no switch with a `--no-` form (`--free-noise/--no-free-noise`); None: the default
    metavar: str | None = None
    repeatable: bool = False  # the flag may be given many times (`--lora A --lora B`): a list, recorded as one
    record: Callable[[Any], Any] | None = None  # how one value is written in a sidecar (default: as given, paths resolved)

    @property
    def key(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def check(self, value: Any, label: str | None = None) -> Any:
        """`value` if it is in range (each value of a repeatable setting); else a one-line VidldmError naming
        `label` (the flag or the Python name)."""
        label = label or self.name
        if self.repeatable and value is not None:
            if not isinstance(value, (list, tuple)):
                raise VidldmError(f"{label} takes a list, got {value!r}")
            for item in value:
                self._check_one(item, label)
            return value
        return self._check_one(value, label)

    def _check_one(self, value: Any, label: str) -> Any:
        if value is None:
            return value
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise VidldmError(f"{label} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise VidldmError(f"{label} must be a finite number, got {value}")
            if self.type is int and value != int(value):
                raise VidldmError(f"{label} must be a whole number, got {value}")
            self._check_range(value, label)
        if self.choices is not None and value not in self.choices:
            raise VidldmError(f"{label} must be one of {', '.join(self.choices)}, got {value!r}")
        if self.validate is not None:
            self.validate(value)
        return value

    def record_value(self, value: Any) -> Any:
        """`value` as a sidecar records it: paths resolved, so a replay from another folder finds the file."""
        if self.repeatable:
            return [self._record_one(v) for v in value]
        return self._record_one(value)

    def _record_one(self, value: Any) -> Any:
        if self.record is not None:
            return self.record(value)
        if self.is_path and Path(value).exists():
            return str(Path(value).resolve())
        return value

    def _check_range(self, value: float, label: str) -> None:
        if self.low is not None and self.high is not None and not self.low <= value <= self.high:
            raise VidldmError(f"{label} must be between {self.low:g} and {self.high:g}, got {value}")
        if self.low is not None and value < self.low:
            raise VidldmError(f"{label} must be at least {self.low:g}, got {value}")
        if self.high is not None and value > self.high:
            raise VidldmError(f"{label} must be at most {self.high:g}, got {value}")
        if self.above is not None and value <= self.above:
            raise VidldmError(f"{label} must be greater than {self.above:g}, got {value}")


def _check_scheduler(name: str) -> None:
    from vidldm.schedulers import check_scheduler_name  # diffusers is imported only when a name is checked

    check_scheduler_name(name)


def parse_lora_spec(spec: str, what: str = "LoRA weight") -> tuple[str, float]:
    """`PATH[:WEIGHT]` -> (PATH, WEIGHT), weight 1 when left out. Paths may hold colons, so the text is split
    on the last colon only when what follows parses as a number (`a:b.safetensors:0.8` -> `a:b.safetensors`, 0.8)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            return spec, 1.0
        if not math.isfinite(weight):
            raise VidldmError(f"{what} must be a finite number, got '{tail}' in '{spec}'")
        return head, weight
    return spec, 1.0


def _check_lora_spec(flag: str) -> Callable[[str], None]:
    def check(spec: str) -> None:
        path, _ = parse_lora_spec(spec)
        if Path(path).is_file():
            return
        head, sep, tail = spec.rpartition(":")
        if sep and Path(head).is_file():
            raise VidldmError(f"{flag} '{spec}': the weight '{tail}' after the last ':' is not a number")
        raise VidldmError(f"{flag} '{path}' does not exist or is not a file; check the path")
    return check


def _record_lora(spec: str) -> str:
    """`PATH[:WEIGHT]` with the path resolved and the weight written out: `/abs/zoom.ckpt:0.8`."""
    path, weight = parse_lora_spec(spec)
    return f"{Path(path).resolve()}:{weight!r}"


def parse_ip_image(spec: str) -> tuple[tuple[int, int] | None, str]:
    """`--ip-image` values: `IMAGE` (the whole clip, range None) or `FIRST-LAST:IMAGE` (those frames, both included).
    A file whose name looks like a range is the file."""
    match = re.fullmatch(r"(\d+)-(\d+):(.+)", spec)
    if match is None or Path(spec).is_file():
        return None, spec
    return (int(match[1]), int(match[2])), match[3]


def _check_ip_image(spec: str) -> None:
    frames, path = parse_ip_image(spec)
    if frames is not None and frames[0] > frames[1]:
        raise VidldmError(f"--ip-image '{spec}': the range {frames[0]}-{frames[1]} ends before it starts; give FIRST-LAST:IMAGE")
    if not Path(path).is_file():
        raise VidldmError(f"--ip-image '{path}' does not exist or is not a file; check the path")


def _record_ip_image(spec: str) -> str:
    frames, path = parse_ip_image(spec)
    return (f"{frames[0]}-{frames[1]}:" if frames else "") + str(Path(path).resolve())


def _check_ip_adapter(spec: str) -> None:
    path, _ = parse_lora_spec(spec, "--ip-adapter scale")
    if not Path(path).is_file():
        raise VidldmError(f"--ip-adapter '{path}' does not exist or is not a file (ip-adapter_sd15.safetensors, .bin); "
                          "check the path")


def _record_path_and_scale(spec: str) -> str:
    """`PATH[:SCALE]` (an IP-Adapter, ControlNet or SparseCtrl; checked before) as a sidecar records it."""
    path, scale = parse_lora_spec(spec, "scale")
    return f"{Path(path).resolve()}:{scale!r}"


def _check_control_model(flag: str) -> Callable[[str], None]:
    def check(spec: str) -> None:
        path, _ = parse_lora_spec(spec, f"{flag} scale")
        if not Path(path).is_file() and not (Path(path) / "config.json").is_file():
            raise VidldmError(f"{flag} '{path}' is neither a file nor a diffusers folder (config.json + weights); check the path")
    return check


def _check_control(path: str) -> None:
    if not Path(path).exists():
        raise VidldmError(f"--control '{path}' does not exist; give a video, a folder of frames or an image")


def parse_keyframe(spec: str) -> tuple[int, str]:
    """`--keyframe INDEX:IMAGE` -> (INDEX, IMAGE); a one-line error when it is not that."""
    match = re.fullmatch(r"(\d+):(.+)", str(spec))
    if match is None:
        raise VidldmError(f"--keyframe takes FRAME:IMAGE with a frame index from 0, e.g. 0:first.png; got {spec!r}")
    return int(match[1]), match[2]


def _check_keyframe(spec: str) -> None:
    _, path = parse_keyframe(spec)
    if not Path(path).is_file():
        raise VidldmError(f"--keyframe image '{path}' does not exist or is not a file; check the path")


def _record_keyframe(spec: str) -> str:
    index, path = parse_keyframe(spec)
    return f"{index}:{Path(path).resolve()}"


# Kept here rather than imported: no torch in this module (sampling.py and free_init.py check they agree).
WEIGHTING_SCHEMES = ("ramp", "flat", "pyramid", "delayed_reverse_sawtooth")
NOISE_TYPES = ("shuffle_context", "repeat_context", "random")
NOISE_PRIORS = ("independent", "mixed", "progressive")  # vidldm.noise_prior (checks that they agree)
FREE_INIT_METHODS = ("butterworth", "ideal", "gaussian")
MAX_FREE_INIT = 10
MAX_TEMPORAL_SMOOTHING = 1 / 3  # beyond it a frame counts for less than each neighbour (vidldm.temporal_smoothing)
# FreeInit restarts from noise; restyle starts from the input video
FROM_NOISE = ("generate", "animate", "extend", "inbetween", "interpolate-frames", "walk")


def _check_switch(name: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not isinstance(value, bool):  # "false" in a JSON file is a string that bool() would call true
            raise VidldmError(f"{name} must be true or false, got {value!r}")
    return check


def parse_seeds(text: str) -> list[int]:
    """`"1,2,3"` -> seeds as torch uses them (`vidldm.seeds`); a `VidldmError` naming the bad one."""
    from vidldm.seeds import normalize_seed

    out = []
    for part in str(text).split(","):
        try:
            out.append(normalize_seed(int(part.strip())))
        except ValueError:
            raise VidldmError(f"--seeds takes whole numbers separated by commas, e.g. 1,2,3; got {part.strip()!r}") from None
    return out


def _check_seeds(text: str) -> None:
    parse_seeds(text)


WITH_KNOWN_FRAMES = ("animate", "extend", "inbetween", "interpolate-frames")
MADE_LENGTH = tuple(m for m in SAMPLED if m != "interpolate-frames")  # its length follows from the input and --factor
SETTINGS: list[Setting] = [
    # the model
    Setting("model", "--model", str, "built-in name, pipeline/SD folder, single file or hub id", group="model",
            is_path=True, metavar="MODEL", to_pipeline=False),
    Setting("motion_adapter", "--motion-adapter", str, "AnimateDiff .ckpt/.safetensors, an adapter folder or a hub id "
            "(owner/name, diffusers MotionAdapter; fetched only when named)",
            group="model", is_path=True, to_pipeline=False),
    Setting("config", "--config", str, "local diffusers SD folder giving configs for a single-file --model",
            group="model", is_path=True, to_pipeline=False),
    Setting("variant", "--variant", str, "weights variant of diffusers folders, e.g. fp16 (default: plain, or the only "
            "one there)", group="model", to_pipeline=False),
    Setting("device", "--device", str, "cpu, cuda, cuda:1, mps (default: cuda if available)", group="model", recorded=False,
            to_pipeline=False),
    Setting("dtype", "--dtype", str, "weights dtype (default: fp16 on GPU, fp32 on CPU)", group="model",
            choices=("fp32", "fp16", "bf16"), to_pipeline=False),
    Setting("lora", "--lora", str, "image LoRA (UNet/text encoder; diffusers, peft or kohya/A1111 .safetensors, or a "
            "pickle) with an optional weight, PATH[:WEIGHT]; repeat the flag for several", group="model", to_pipeline=False,
            repeatable=True, metavar="PATH[:WEIGHT]", validate=_check_lora_spec("--lora"), record=_record_lora),
    Setting("motion_lora", "--motion-lora", str, "AnimateDiff motion LoRA (original or diffusers layout), PATH[:WEIGHT]; "
            "repeatable", group="model", to_pipeline=False, repeatable=True, metavar="PATH[:WEIGHT]",
            validate=_check_lora_spec("--motion-lora"), record=_record_lora),
    # image prompts (IP-Adapter): the adapter and its encoder are loaded with the model; the images are the clip's
    Setting("ip_adapter", "--ip-adapter", str, "IP-Adapter file (ip-adapter_sd15.safetensors or .bin, plus variants) "
            "with an optional scale, PATH[:SCALE]; its image encoder is --image-encoder or the image_encoder/ folder "
            "beside it", group="image prompt", commands=MODES, to_pipeline=False, metavar="PATH[:SCALE]",
            validate=_check_ip_adapter, record=_record_path_and_scale),
    Setting("image_encoder", "--image-encoder", str, "the IP-Adapter's CLIP image encoder folder (default: "
            "image_encoder/ beside the adapter file)", group="image prompt", commands=MODES, to_pipeline=False,
            is_path=True, metavar="FOLDER"),
    Setting("ip_image", "--ip-image", str, "image prompt for the IP-Adapter: IMAGE for the whole clip, or "
            "FIRST-LAST:IMAGE for those frames (repeat the flag; frames outside every range get no image prompt)",
            group="image prompt", commands=MODES, to_pipeline=False, repeatable=True, metavar="[FIRST-LAST:]IMAGE",
            validate=_check_ip_image, record=_record_ip_image),
    # control (ControlNet, SparseCtrl): the nets are loaded with the model; the control frames are the clip's
    Setting("controlnet", "--controlnet", str, "SD ControlNet (diffusers folder or single .safetensors/.pth file) with "
            "an optional scale, PATH[:SCALE]; repeat for several, each with its own --control, in order", group="control",
            commands=MODES, to_pipeline=False, repeatable=True, metavar="PATH[:SCALE]",
            validate=_check_control_model("--controlnet"), record=_record_path_and_scale),
    Setting("control", "--control", str, "the ControlNet's control frames: a video, a folder of frames or an image (for "
            "every frame); as many frames as the clip, resized to it; one per --controlnet", group="control",
            commands=MODES, to_pipeline=False, repeatable=True, metavar="VIDEO|FOLDER|IMAGE", validate=_check_control,
            record=lambda path: str(Path(path).resolve())),
    Setting("control_preprocess", "--control-preprocess", str, "make the control frames from a plain video: canny "
            "(edges, for canny ControlNets; default: the frames are used as given)", group="control",
            commands=MODES, to_pipeline=False, choices=("canny",)),
    Setting("control_guidance_start", "--control-start", float, "0-1: fraction of the steps before the control "
            "starts (default: 0); once for every net, or once per net in order (each --controlnet, then --sparsectrl)",
            low=0.0, high=1.0, group="control", commands=MODES, to_pipeline=False, repeatable=True, metavar="FRACTION"),
    Setting("control_guidance_end", "--control-end", float, "0-1: fraction of the steps after which the control "
            "stops (default: 1); once for every net, or once per net in order", low=0.0, high=1.0, group="control",
            commands=MODES, to_pipeline=False, repeatable=True, metavar="FRACTION"),
    Setting("guess_mode", "--guess-mode", bool, "the control acts on the conditional half of guidance only (the "
            "ControlNet reads the content from its frames; try --guidance 3-5)", default=False, flag_only=True,
            group="control", commands=MODES, to_pipeline=False),
    Setting("sparsectrl", "--sparsectrl", str, "AnimateDiff SparseCtrl (v3 RGB or scribble .ckpt/.safetensors, or a "
            "diffusers folder) with an optional scale, PATH[:SCALE]; give its keyframes with --keyframe",
            group="control", commands=MODES, to_pipeline=False, metavar="PATH[:SCALE]",
            validate=_check_control_model("--sparsectrl"), record=_record_path_and_scale),
    Setting("keyframe", "--keyframe", str, "a SparseCtrl keyframe: FRAME:IMAGE (an RGB still, or a scribble for the "
            "scribble model); repeat for several frames", group="control", commands=MODES, to_pipeline=False,
            repeatable=True, metavar="FRAME:IMAGE", validate=_check_keyframe, record=_record_keyframe),
    Setting("exact_keyframes", "--exact-keyframes", bool, "the clip passes through its --keyframe images (also "
            "given as known frames, as inbetween gives them) rather than only being steered toward them (default: "
            "the keyframe encoder's own, on for the shapes model's; off for a --sparsectrl file: diffusers' SparseCtrl)",
            negatable=True, legacy=False, group="control", commands=("generate",), to_pipeline=False),
    # what each mode takes
    Setting("image_conditioning", "--image-conditioning", str,
            "clean: known frames enter as clean frames at t=0 (adapters trained with frame conditioning); "
            "replace: training-free, re-noised each step; auto picks by the adapter",
            default="auto", choices=("auto", "clean", "replace"), commands=WITH_KNOWN_FRAMES, group="mode"),
    Setting("strength", "--strength", float, "0 keeps the input, 1 ignores it (default: 0.6)", default=0.6,
            low=0.0, high=1.0, commands=("restyle",), group="mode"),
    Setting("num_known_frames", "--known-frames", int,
            "how many of the input's last frames to continue from (default: a quarter of --frames)",
            low=1, commands=("extend",), group="mode"),
    Setting("factor", "--factor", int, "frames out per frame in: the model makes factor - 1 frames between every two "
            "input frames, and the frame rate rises by the factor (default: 2)", default=2, low=2, high=8,
            commands=("interpolate-frames",), group="mode", to_pipeline=False),
    # sampling
    Setting("negative_prompt", "--negative-prompt", str, "what to steer away from"),
    Setting("num_frames", "--frames", int, "number of frames (default: the adapter's length, 16 at most; "
            "beyond it context windows are used)", low=1, commands=MADE_LENGTH),
    Setting("height", "--height", int, "pixels, a multiple of the VAE factor", low=1),
    Setting("width", "--width", int, "pixels, a multiple of the VAE factor", low=1),
    Setting("num_inference_steps", "--steps", int, "denoising steps (default: the model's, 25 for SD)", low=1,
            fallback=25, commands=(*SAMPLED, "eval")),
    Setting("guidance_scale", "--guidance", float, "classifier-free guidance scale (default: the model's, 7.5 for SD)",
            low=0.0, fallback=7.5, commands=(*SAMPLED, "eval")),
    Setting("guidance_rescale", "--guidance-rescale", float, "0-1: pull strong guidance back to the conditional "
            "spread, for zero-terminal-SNR models (default: the model's, 0)", low=0.0, high=1.0, fallback=0.0, legacy=0.0),
    Setting("temporal_end", "--temporal-end", float, "0-1: fraction of the steps that run the temporal layers; the "
            "last steps refine each frame with the image model alone (default: the model's, 1)", low=0.0, high=1.0,
            fallback=1.0, legacy=1.0, commands=(*SAMPLED, "eval")),
    Setting("temporal_smoothing", "--temporal-smoothing", float, "0-1/3: mix each made frame's latents with its "
            "neighbours' by this weight before decoding, against frame-to-frame jitter (frames you gave are kept) "
            "(default: the model's, 0)", low=0.0, high=MAX_TEMPORAL_SMOOTHING, fallback=0.0, legacy=0.0,
            commands=(*SAMPLED, "eval")),
    Setting("known_pixels", "--known-pixels", bool, "keyframes (and interpolate-frames' input frames) come out as "
            "given, and the frames between two of them are redrawn from their pixels where those agree with what the "
            "model drew, by optical flow (OpenCV) (default: the model's, on)", negatable=True, fallback=True, legacy=False,
            validate=_check_switch("known_pixels"), commands=("inbetween", "interpolate-frames")),
    Setting("noise_prior", "--noise-prior", str, "how the frames' starting noise is correlated: independent, mixed "
            "(a share common to all frames) or progressive (each frame partly its predecessor's), PYoCo's priors; only "
            "for a model trained with one, train.noise_prior (default: the model's, independent)", choices=NOISE_PRIORS,
            fallback="independent", legacy="independent"),
    Setting("noise_prior_strength", "--noise-prior-strength", float, "the prior's alpha: mixed frames share "
            "alpha^2/(1+alpha^2) of their noise; progressive neighbours correlate alpha/sqrt(1+alpha^2) (default: the "
            "model's, 1)", low=0.0, fallback=1.0, legacy=1.0),
    Setting("scheduler", "--scheduler", str, "ddim, euler, euler_a, dpm++, unipc, lcm, A1111/ComfyUI names (dpmpp_2m_karras, "
            "euler_karras, dpmpp_sde, ...) or a diffusers class name; all: vidldm info --schedulers (default: ddim)", default="ddim",
            validate=_check_scheduler),
    Setting("seed", "--seed", int, "random seed (printed when not given)", to_pipeline=False, commands=MODES),
    Setting("walk_seeds", "--seeds", str, "the walk's seeds, comma-separated: one per prompt, or several for one prompt "
            "(default: one random seed)", commands=("walk",), group="mode", to_pipeline=False, validate=_check_seeds,
            metavar="SEED,SEED,..."),
    Setting("between", "--between", int, "clips made between every two stops of the walk (default: 4)", default=4,
            low=0, high=64, commands=("walk",), group="mode", to_pipeline=False),
    Setting("layout", "--layout", str, "sequence: the clips one after another; grid: side by side, playing at once",
            default="sequence", choices=("sequence", "grid"), commands=("walk",), group="mode", to_pipeline=False),
    # long clips (README "Long clips"): context windows, FreeNoise, FreeInit
    Setting("context_frames", "--context-frames", int, "frames the UNet sees at once in longer clips (default: 16, or "
            "the adapter's length if smaller)", low=1, group="long clips"),
    Setting("context_stride", "--context-stride", int, "frames between the starts of neighbouring context windows "
            "(default: three quarters of a window; or give --context-overlap)", low=1, group="long clips"),
    Setting("context_overlap", "--context-overlap", int, "frames shared by neighbouring context windows in long clips "
            "(default: a quarter of a window)", low=1, group="long clips"),
    Setting("closed_loop", "--closed-loop", bool, "windows wrap around the clip's end, so its last frame leads into "
            "its first (looping clips; needs more frames than --context-frames)", default=False, flag_only=True,
            group="long clips"),
    Setting("weighting_scheme", "--context-weighting", str, "how overlapping windows are blended: ramp (default), or "
            "diffusers' flat, pyramid, delayed_reverse_sawtooth", choices=WEIGHTING_SCHEMES, group="long clips"),
    Setting("free_noise", "--free-noise", bool, "FreeNoise: later windows start from reshuffled noise of the first "
            "(default: on)", negatable=True, group="long clips"),
    Setting("noise_type", "--noise-type", str, "FreeNoise's noise: shuffle_context (default), repeat_context, random",
            choices=NOISE_TYPES, group="long clips"),
    Setting("free_init", "--free-init", int, f"FreeInit: sample N times, each restarting from the last result's low "
            f"frequencies (1-{MAX_FREE_INIT}, N times the time; 1: off) (default: the model's, else off)", low=1,
            high=MAX_FREE_INIT, fallback=1, legacy=1, group="long clips", commands=FROM_NOISE),
    Setting("free_init_method", "--free-init-method", str, "FreeInit's low-pass filter (default: butterworth)",
            choices=FREE_INIT_METHODS, group="long clips", commands=FROM_NOISE),
    Setting("free_init_order", "--free-init-order", int, "the Butterworth filter's order (default: 4)", low=1,
            group="long clips", commands=FROM_NOISE),
    Setting("free_init_spatial_stop_frequency", "--free-init-spatial-stop", float, "FreeInit's spatial stop "
            "frequency, 0-1 (default: 0.25)", low=0.0, high=1.0, group="long clips",
            commands=FROM_NOISE),
    Setting("free_init_temporal_stop_frequency", "--free-init-temporal-stop", float, "FreeInit's temporal stop "
            "frequency, 0-1 (default: 0.25)", low=0.0, high=1.0, group="long clips",
            commands=FROM_NOISE),
    Setting("free_init_fast_sampling", "--free-init-fast", bool, "FreeInit coarse-to-fine: iteration i of N runs "
            "i/N of the steps", default=False, flag_only=True, group="long clips",
            commands=FROM_NOISE),
    # memory
    Setting("offload", "--offload", str, "keep weights in CPU memory and move each model to the GPU when it runs: "
            "model (whole models) or sequential (layer by layer: least memory, slowest); no effect on a CPU "
            "(default: none)", default="none", choices=("none", "model", "sequential"), group="memory", recorded=False,
            to_pipeline=False),
    Setting("vae_tiling", "--vae-tiling", bool, "decode each frame in overlapping tiles (large frames in little "
            "memory)", default=False, flag_only=True, group="memory", to_pipeline=False),
    Setting("decode_chunk_size", "--decode-chunk", int, "frames the VAE decodes at once (default: 8; a temporal "
            "decoder takes the whole clip)", low=1, group="memory"),
    Setting("temporal_decoder", "--temporal-decoder", bool, "decode with the model's temporal decoder layers, the "
            "whole clip at once (default: on where the model has them; off: its image VAE frame by frame, in "
            "chunks, as the image model decodes)", negatable=True, group="memory", legacy=False),
    # output
    # Rates are stored as fractions with denominators up to 1000 (io.write), and players drop frames past 240
    Setting("fps", "--fps", float, "frames per second of the output, 0.001 to 240 (default: 8; interpolate-frames: "
            "the input's times --factor)", low=0.001, high=240.0, group="output", to_pipeline=False),
    Setting("overwrite", "--overwrite", bool, "replace an existing output and its sidecar (never an input)",
            default=False, group="output", to_pipeline=False, recorded=False, flag_only=True),
]
BY_NAME = {s.name: s for s in SETTINGS}
BY_KEY = {s.key: s for s in SETTINGS}

# What a call uses for a setting left out when the model has no default of its own (diffusers' values).
SAMPLING_DEFAULTS = {s.name: s.fallback for s in SETTINGS if s.fallback is not _UNSET}


def check_generation_defaults(settings: dict) -> dict[str, float]:
    """A model's own sampling defaults, checked: known keys of `SAMPLING_DEFAULTS`, each in its range."""
    if not isinstance(settings, dict):
        raise VidldmError(f"generation defaults must be a mapping of {', '.join(SAMPLING_DEFAULTS)}, got {settings!r}")
    unknown = sorted(set(settings) - set(SAMPLING_DEFAULTS))
    if unknown:
        raise VidldmError(f"unknown sampling setting {', '.join(repr(k) for k in unknown)}; choose from {', '.join(SAMPLING_DEFAULTS)}")
    out = {}
    for key, value in settings.items():
        if value is not None:
            setting = BY_NAME[key]
            setting.check(value, key)
            out[key] = setting.type(value)
    return out


def read_sampling_file(path: Path, extra: tuple[str, ...] = ()) -> tuple[dict[str, float], dict[str, Any]]:
    """A weights folder's sampling.json: (its checked sampling defaults, its `extra` keys as written, e.g. a keyframe
    encoder's `scale`); ({}, {}) where there is none. A bad file is one line naming it."""
    path = Path(path)
    if not path.is_file():
        return {}, {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise VidldmError(f"'{path}' is not valid JSON ({err}); re-export the model") from err
    if not isinstance(data, dict):
        raise VidldmError(f"'{path}' must hold a JSON object of settings, e.g. {{\"num_inference_steps\": 20}}")
    own = {key: data.pop(key) for key in extra if key in data}
    try:
        return check_generation_defaults(data), own
    except VidldmError as err:
        raise VidldmError(f"'{path}': {err}") from err


# ----------------------------------------------------------------------------- the CLI's side

def add_flags(parser: argparse.ArgumentParser, command: str, *, model_default: str) -> dict[str, Any]:
    """Add the flags of `command`, grouped as in `--help` (mode flags first, as they belong to the command);
    returns the groups, so the caller can add flags that are not settings (`-o`) beside them."""
    groups: dict[str, Any] = {}
    for s in SETTINGS:
        if command not in s.commands:
            continue
        if s.group not in groups:
            groups[s.group] = parser if s.group == "mode" else parser.add_argument_group(s.group)
        default = model_default if s.name == "model" else s.default
        help_text = f"{s.help} (default: {model_default})" if s.name == "model" else s.help
        kwargs = dict(type=s.type, default=default, help=help_text, dest=s.key)
        if s.repeatable:
            kwargs["action"] = "append"
        if s.flag_only:
            kwargs = dict(action="store_true", help=help_text, dest=s.key)
        elif s.negatable:
            kwargs = dict(action=argparse.BooleanOptionalAction, default=None, help=help_text, dest=s.key)
        elif s.choices is not None:
            kwargs["choices"] = s.choices
        if s.metavar and not s.flag_only:
            kwargs["metavar"] = s.metavar
        groups[s.group].add_argument(s.flag, **kwargs)
    return groups


def check_args(args: argparse.Namespace) -> None:
    """Every setting the command has, in range, before any model loads (the CLI's messages name the flag)."""
    for s in SETTINGS:
        if hasattr(args, s.key):
            s.check(getattr(args, s.key), s.flag)


def recorded(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a sidecar records: those given or defaulted, paths resolved."""
    out = {}
    for s in SETTINGS:
        value = getattr(args, s.key, None)
        if value is None or not s.recorded:
            continue
        out[s.key] = s.record_value(value)
    return out


def replay_argv(saved: dict[str, Any], command: str) -> list[str]:
    """A sidecar's settings as flags of `command`; keys a sidecar lacks take their `legacy` value."""
    argv: list[str] = []
    for s in SETTINGS:
        if command not in s.commands:
            continue
        value = saved.get(s.key, None if s.legacy is _UNSET else s.legacy)
        if value is None or not s.recorded:
            continue
        if isinstance(value, bool):  # switches take no value: `--closed-loop`, `--no-free-noise`
            argv += [s.flag] if value else ([f"--no-{s.flag[2:]}"] if s.negatable else [])
            continue
        # a repeatable setting is recorded as a list; one a sidecar recorded before it became repeatable, as a value
        for item in value if s.repeatable and isinstance(value, list) else [value]:
            argv.append(f"{s.flag}={item}")  # '=': a value that starts with '-' is not read as a flag
    return argv


def pipeline_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The command's settings as `VideoPipeline.__call__` keywords (`--steps` -> `num_inference_steps`)."""
    return {s.name: getattr(args, s.key) for s in SETTINGS if s.to_pipeline and hasattr(args, s.key)}
