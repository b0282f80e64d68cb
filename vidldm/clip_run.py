"""Making one clip from a mode's settings, and the JSON sidecar beside it: shared by the CLI and the web studio.

`args` is the `argparse.Namespace` the CLI parses (one attribute per `Setting.key` of the mode, plus
`command`, `prompt`, `image`/`video`); the web studio builds the same namespace from its form, so both
check, record and replay a clip the same way. No torch at import: the CLI's start-up stays light.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidldm import __version__, prompt_travel
from vidldm import sampling_settings as settings
from vidldm.builtin_names import default_model, own_keyframe_encoder
from vidldm.errors import VidldmError


def resolve_sampling(pipe, args: argparse.Namespace) -> None:
    """Fill the sampling settings left out with the model's own defaults (saved with it, e.g. the shapes model's),
    else diffusers' (25 steps, guidance 7.5), so the sidecar records what was used."""
    given = {name: getattr(args, settings.BY_NAME[name].key, None) for name in settings.SAMPLING_DEFAULTS}
    own = _own_encoder(args)  # keyframes through the model's own encoder: the settings it was tuned with come next
    tuned = keyframe_encoder_settings(own)[1] if own is not None else {}
    given = {name: tuned.get(name) if value is None else value for name, value in given.items()}
    for name, value in pipe.sampling_defaults(**given).items():
        if args.command in settings.BY_NAME[name].commands:  # restyle takes no FreeInit, even a model's own
            setattr(args, settings.BY_NAME[name].key, value)
    # Whether a temporal decoder decoded the clip: recorded, so a replay decodes the same way on a model that has
    # one (a sidecar without it predates the shapes model's decoder and replays frame by frame: its `legacy`).
    if "temporal_decoder" in vars(args) and args.temporal_decoder is None:
        args.temporal_decoder = pipe.temporal_decoder is not None
    # Whether keyframes were also known frames: recorded, so a replay does the same whatever the encoder's default.
    if "exact_keyframes" in vars(args) and args.exact_keyframes is None:
        args.exact_keyframes = keyframe_encoder_exact(own) if own is not None else False


def check_memory(pipe, args: argparse.Namespace, device: str) -> None:
    """Refuse in one line, before sampling, a clip that needs more memory than is free (vidldm.memory)."""
    from vidldm.io import probe_video
    from vidldm.memory import check_fits

    frames = getattr(args, "frames", None)
    if frames is None and args.command in ("restyle", "interpolate-frames"):
        frames = probe_video(args.video)["frames"]  # restyle keeps the input's length
        frames = frames if args.command == "restyle" else (frames - 1) * args.factor + 1
    frames = frames or pipe.default_num_frames
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    window = min(frames, getattr(args, "context_frames", None) or pipe.default_num_frames)
    # A temporal decoder takes the whole clip at once (VideoVAE.decode), whatever --decode-chunk says.
    whole = pipe.temporal_decoder is not None and getattr(args, "temporal_decoder", None) is not False
    check_fits(pipe, frames, args.height or side, args.width or side, guidance=args.guidance, device=device,
               context_frames=window, decode_chunk=None if whole else getattr(args, "decode_chunk", None) or 8)


def check_prompt(args: argparse.Namespace):
    """The prompt as the pipeline takes it (prompt travel parsed); interpolate-frames may go without one, as its
    known frames say what the clip shows."""
    if args.command == "interpolate-frames" and not args.prompt.strip():
        return ""
    return prompt_travel.parse_prompt(args.prompt, getattr(args, "frames", None))


def image_prompt(args: argparse.Namespace) -> Any:
    """`--ip-image` values as the pipeline's `ip_adapter_image`: None, an image for the clip, or `{(first, last): image}`;
    checked against `--ip-adapter` (each needs the other) before any model loads."""
    specs, adapter = getattr(args, "ip_image", None) or [], getattr(args, "ip_adapter", None)
    if (specs or getattr(args, "image_encoder", None)) and not adapter:
        raise VidldmError(f"{'--ip-image' if specs else '--image-encoder'} needs an IP-Adapter: give --ip-adapter PATH[:SCALE]")
    if adapter and not specs:
        raise VidldmError("--ip-adapter needs an image prompt: give --ip-image IMAGE (or FIRST-LAST:IMAGE per frame range)")
    parsed = [settings.parse_ip_image(spec) for spec in specs]
    whole = [path for frames, path in parsed if frames is None]
    if whole and len(parsed) > 1:
        raise VidldmError("give one --ip-image IMAGE for the whole clip, or FIRST-LAST:IMAGE ranges, not both")
    if whole:
        return whole[0]
    prompt = dict(parsed) or None
    if prompt is not None and len(prompt) < len(parsed):
        raise VidldmError("two --ip-image values name the same frame range; give each range one image")
    return prompt


def check_control(args: argparse.Namespace) -> list[tuple[int, str]]:
    """The control flags fit together (before any model loads): one `--control` per `--controlnet`, keyframes with
    `--sparsectrl` and the reverse, the other control settings only with a net. Returns the keyframes, by frame."""
    nets, controls = getattr(args, "controlnet", None) or [], getattr(args, "control", None) or []
    sparse, keys = sparsectrl_spec(args), getattr(args, "keyframe", None) or []
    if controls and not nets:
        raise VidldmError("--control needs a ControlNet: give --controlnet PATH[:SCALE] (one per --control)")
    if len(controls) != len(nets):
        raise VidldmError(f"{len(nets)} --controlnet for {len(controls)} --control; give one --control per --controlnet, in order")
    if keys and not sparse:
        raise VidldmError(f"--keyframe needs a SparseCtrl model: give --sparsectrl PATH[:SCALE] (the model "
                          f"'{getattr(args, 'model', None)}' has no keyframe encoder of its own)")
    if sparse and not keys:
        raise VidldmError("--sparsectrl needs keyframes: give --keyframe FRAME:IMAGE (repeat for several frames)")
    if getattr(args, "exact_keyframes", None) and not keys:
        raise VidldmError("--exact-keyframes makes the keyframes known frames: give --keyframe FRAME:IMAGE")
    settings_given = [s.flag for s in settings.SETTINGS if s.group == "control" and s.key not in
                      ("controlnet", "control", "sparsectrl", "keyframe") and getattr(args, s.key, None) not in (None, False)]
    if settings_given and not nets and not sparse:
        raise VidldmError(f"{settings_given[0]} needs a ControlNet: give --controlnet PATH[:SCALE] with --control, or --sparsectrl")
    if getattr(args, "control_preprocess", None) and not nets:
        raise VidldmError("--control-preprocess makes the frames of --control; give --controlnet and --control")
    parsed = [settings.parse_keyframe(k) for k in keys]
    frames = [i for i, _ in parsed]
    twice = sorted({i for i in frames if frames.count(i) > 1})
    if twice:
        raise VidldmError(f"two --keyframe values on frame {twice[0]}; give each frame one keyframe")
    guidance_windows(args, len(nets) + bool(sparse))
    return parsed


def guidance_windows(args: argparse.Namespace, count: int) -> list[tuple[float, float]]:
    """(start, end) of each of `count` nets from `--control-start` / `--control-end`: each flag given once (for
    every net) or once per net, in the order the nets are given (each --controlnet, then --sparsectrl); (0, 1)
    where a flag is left out."""
    def per_net(flag: str, key: str, default: float) -> list[float]:
        given = getattr(args, key, None)
        given = [] if given is None else given if isinstance(given, list) else [given]  # a scalar: Python callers
        if len(given) not in (0, 1, count):
            raise VidldmError(f"{len(given)} {flag} for {count} nets; give it once for every net, or once per net in "
                              "order (each --controlnet, then --sparsectrl)")
        return [float(v) for v in given] * (count if len(given) == 1 else 1) or [default] * count

    windows = list(zip(per_net("--control-start", "control_start", 0.0), per_net("--control-end", "control_end", 1.0)))
    for i, (start, end) in enumerate(windows):
        if start >= end:
            which = f" of net {i + 1}" if count > 1 else ""
            raise VidldmError(f"--control-start ({start:g}) must be before --control-end ({end:g}){which}")
    return windows


def sparsectrl_spec(args: argparse.Namespace) -> str | None:
    """`--sparsectrl`, or with `--keyframe` alone the model's own keyframe encoder (`sparsectrl/` in its folder; the
    shipped shapes model has one) at the scale it was tuned with, or None. Resolved on every use, never written into
    `args`: a sidecar records what the user gave, and replays on another machine find the model's encoder there."""
    own = _own_encoder(args)
    if own is None:
        return getattr(args, "sparsectrl", None)
    return f"{own}:{keyframe_encoder_settings(own)[0]:g}"


def _own_encoder(args: argparse.Namespace) -> Path | None:
    """The model's own keyframe encoder when `--keyframe` comes without `--sparsectrl`, else None."""
    if getattr(args, "sparsectrl", None) or not getattr(args, "keyframe", None):
        return None
    return own_keyframe_encoder(str(getattr(args, "model", None) or default_model()))


ENCODER_SAMPLING = "sampling.json"  # beside a keyframe encoder's weights: the settings it was tuned with
ENCODER_EXTRA = ("scale", "exact_keyframes")  # its keys that are not sampling settings


def keyframe_encoder_settings(folder: Path) -> tuple[float, dict[str, Any]]:
    """(scale, sampling defaults) a keyframe encoder was tuned with, from its folder's sampling.json, e.g.
    `{"scale": 1.5, "temporal_end": 0.85}`; (1.0, {}) without one. Used when `--keyframe` takes the model's own
    encoder; the user's flags still win. Why it is not the model's sampling.json: plain prompts keep theirs."""
    path = Path(folder) / ENCODER_SAMPLING
    tuned, own = settings.read_sampling_file(path, extra=ENCODER_EXTRA)
    scale = own.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale < float("inf"):
        raise VidldmError(f"'{path}': scale must be a number >= 0, got {scale!r}")
    return float(scale), tuned


def keyframe_encoder_exact(folder: Path) -> bool:
    """Whether a keyframe encoder's keyframes are by default also known frames (`--exact-keyframes`): its
    sampling.json's `exact_keyframes`, False without one (diffusers' SparseCtrl: keyframes steer, nothing more)."""
    path = Path(folder) / ENCODER_SAMPLING
    exact = settings.read_sampling_file(path, extra=ENCODER_EXTRA)[1].get("exact_keyframes", False)
    if not isinstance(exact, bool):
        raise VidldmError(f"'{path}': exact_keyframes must be true or false, got {exact!r}")
    return exact


def control_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The control flags as the pipeline's ControlNet arguments (nets in the order `--controlnet`..., `--sparsectrl`,
    as `loading.apply_controlnets` loads them); {} without control. Canny edges are made here when asked."""
    keyframes = check_control(args)
    sparse = sparsectrl_spec(args)
    nets = [*(getattr(args, "controlnet", None) or []), *([sparse] if sparse else [])]
    if not nets:
        return {}
    frames: list[Any] = list(getattr(args, "control", None) or [])
    if getattr(args, "control_preprocess", None) == "canny":
        from vidldm.canny import canny
        from vidldm.io import read_video

        frames = [canny(read_video(path)[0]) for path in frames]
    if keyframes:
        frames.append([path for _, path in keyframes])
    scales = [settings.parse_lora_spec(spec, "scale")[1] for spec in nets]
    starts, ends = (list(v) for v in zip(*guidance_windows(args, len(nets))))
    one = len(nets) == 1  # one net: plain values, as diffusers' single-ControlNet pipelines take them
    return {"conditioning_frames": frames[0] if one else frames,
            "controlnet_conditioning_scale": scales[0] if one else scales,
            "control_guidance_start": starts[0] if one else starts, "control_guidance_end": ends[0] if one else ends,
            "guess_mode": bool(getattr(args, "guess_mode", False)),
            "controlnet_frame_indices": [i for i, _ in keyframes] or None,
            # exact: the clip passes through the keyframes (known frames, vidldm's in-betweening) as well as being
            # steered toward them; the frames there are then the keyframes as the VAE draws them
            **({"image": dict(keyframes)} if keyframes and getattr(args, "exact_keyframes", None) else {})}


def make_clip(pipe, args: argparse.Namespace, output: Path, device: str,
              on_step: Callable[[int, int], None] | None = None):
    """Sample the clip `args` asks for with `pipe`, write it to `output` and its sidecar beside it (both atomic);
    returns the frames `(F, H, W, 3)` float in [0, 1]. `on_step(done, total)` follows the sampling loop."""
    import torch

    from vidldm.io import write_clip

    prompt = check_prompt(args)
    resolve_sampling(pipe, args)
    check_memory(pipe, args, device)
    inputs = mode_inputs(pipe, args)
    if getattr(args, "ip_adapter", None):
        inputs["ip_adapter_image"] = image_prompt(args)
    inputs.update(control_inputs(args))
    frames = pipe(prompt, **settings.pipeline_kwargs(args), **inputs, output_type="np",
                  generator=torch.Generator(device="cpu").manual_seed(args.seed),
                  callback_on_step_end=_step_callback(on_step)).frames[0]
    write_clip(frames, output, args.fps)
    write_sidecar(output, {"command": args.command, "prompt": args.prompt, **inputs_recorded(args), **settings.recorded(args)})
    return frames


def _step_callback(on_step: Callable[[int, int], None] | None):
    """diffusers' `callback_on_step_end` reporting (steps done, steps in all) to `on_step`."""
    if on_step is None:
        return None

    def callback(pipe, i, t, tensors):
        on_step(i + 1, pipe.num_timesteps)
        return {}  # nothing replaced

    return callback


def mode_inputs(pipe, args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline's inputs for the command: a still, keyframes, a clip to restyle or extend. Sets the frame count
    and rate a mode decides (inbetween's last keyframe sits on the last frame; interpolation's rate rises)."""
    if args.command != "interpolate-frames":
        args.fps = args.fps or 8.0
    if args.command == "inbetween":
        args.frames = args.frames or pipe.default_num_frames
        if args.frames < 3:
            raise VidldmError(f"--frames must be at least 3 for inbetween (two keyframes and a frame between), got {args.frames}")
        return {"image": {0: args.start, args.frames - 1: args.end}}
    if args.command == "interpolate-frames":
        clip, fps = interpolation_input(args.video)
        args.fps = args.fps or fps * args.factor
        settings.BY_NAME["fps"].check(args.fps, "--fps (the input's rate times --factor)")
        args.frames = (len(clip) - 1) * args.factor + 1  # recorded; replay derives it again from the input
        return {"image": {i * args.factor: frame for i, frame in enumerate(clip)}}
    return {"image": getattr(args, "image", None), "video": getattr(args, "video", None), "extend": args.command == "extend"}


def interpolation_input(path: str) -> tuple[Any, float]:
    """The clip to upsample `(F, H, W, 3)` uint8 and its rate; two frames at least."""
    from vidldm.io import read_video

    clip, fps = read_video(path)
    if len(clip) < 2:
        raise VidldmError(f"'{path}' has {len(clip)} frame; interpolate-frames needs at least 2 frames to put frames between")
    return clip, fps


def inputs_recorded(args: argparse.Namespace) -> dict[str, str]:
    """The input files, resolved: a replay from another folder finds them."""
    return {k: str(Path(getattr(args, k)).resolve()) for k in input_keys(args)}


def input_keys(args: argparse.Namespace) -> tuple[str, ...]:
    """The input files of the command `args` holds (`start`, `end` for inbetween, ...)."""
    return tuple(k for k in settings.MODE_INPUTS.get(args.command, ()) if getattr(args, k, None) is not None)


def sidecar_path(output: Path) -> Path:
    return output.with_suffix(".json") if output.suffix else output.parent / f"{output.name}.json"


def write_sidecar(output: Path, recorded: dict[str, Any]) -> None:
    from vidldm import atomic

    # allow_nan=False: a sidecar is JSON other tools read, and NaN/Infinity are not JSON
    text = json.dumps({"vidldm": __version__, **recorded, "output": str(output)}, indent=2, allow_nan=False)
    atomic.write_text(sidecar_path(output), text + "\n")


def read_sidecar(path: Path) -> dict[str, Any]:
    """A sidecar's settings, checked: JSON with a known 'command' and a 'prompt'; a one-line VidldmError otherwise."""
    if not path.exists():
        raise VidldmError(f"sidecar '{path}' does not exist")
    try:
        saved = json.loads(path.read_text())
        command, _ = saved["command"], saved["prompt"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise VidldmError(f"'{path}' is not a vidldm sidecar (JSON with a 'command')") from err
    if command not in settings.SAMPLED:
        raise VidldmError(f"'{path}' records an unknown command '{command}'")
    return saved


def prompt_text(prompt: Any) -> str:
    """A recorded prompt as the text a user types (animatediff-cli's {frame: prompt} becomes prompt travel)."""
    if isinstance(prompt, dict):
        return " | ".join(f"{k}:{v}" for k, v in prompt.items())
    return str(prompt)
