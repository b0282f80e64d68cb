"""The `vidldm` command: generate, animate, restyle, extend, replay, info.

Every user mistake ends in one line on stderr and exit status 2, before any model is loaded
where possible, and never leaves a half-written file: videos and sidecars are written to a
temporary name and renamed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from vidldm import __version__, prompt_travel
from vidldm.errors import VidldmError


def _default_model() -> str:
    """The shipped shapes model when its weights are installed, else the tiny random demo model."""
    weights = Path(__file__).resolve().parent / "weights" / "shapes" / "unet" / "config.json"
    return "shapes" if weights.exists() else "tiny"


DEFAULT_MODEL = _default_model()
OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv", ".gif", ".webp", ".png")
MODES = ("generate", "animate", "restyle", "extend")


# ----------------------------------------------------------------------------- arguments

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidldm",
        description="Video latent diffusion: make clips from prompts, animate stills, restyle and extend videos.",
        epilog="Examples:\n"
        '  vidldm generate "a red circle moving right on a black background" -o clip.mp4\n'
        '  vidldm animate still.png "the circle moves up" -o anim.gif\n'
        '  vidldm generate "0:a red circle | 12:a blue circle" --frames 24   (prompt travel)\n'
        "  vidldm generate PROMPT --model ./sd15 --motion-adapter mm_sd_v15_v2.ckpt\n"
        "  vidldm replay clip.json -o again.mp4\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vidldm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        m = p.add_argument_group("model")
        m.add_argument("--model", default=DEFAULT_MODEL, help=f"built-in name, pipeline/SD folder, single file or hub id (default: {DEFAULT_MODEL})")
        m.add_argument("--motion-adapter", help="AnimateDiff .ckpt/.safetensors or an adapter folder (for SD models)")
        m.add_argument("--config", help="local diffusers SD folder giving configs for a single-file --model")
        m.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda if available)")
        m.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="weights dtype (default: fp16 on GPU, fp32 on CPU)")
        s = p.add_argument_group("sampling")
        s.add_argument("--negative-prompt", default=None, help="what to steer away from")
        s.add_argument("--frames", type=int, default=None, help="number of frames (default: the adapter's length, 16 at most; beyond it context windows are used)")
        s.add_argument("--height", type=int, default=None, help="pixels, a multiple of the VAE factor")
        s.add_argument("--width", type=int, default=None, help="pixels, a multiple of the VAE factor")
        s.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 25 for SD)")
        s.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's, 7.5 for SD)")
        s.add_argument("--guidance-rescale", type=float, default=None,
                       help="0-1: pull strong guidance back to the conditional spread, for zero-terminal-SNR models (default: the model's, 0)")
        s.add_argument("--temporal-end", type=float, default=None,
                       help="0-1: fraction of the steps that run the temporal layers; the last steps refine each frame "
                       "with the image model alone (default: the model's, 1)")
        s.add_argument("--scheduler", default="ddim", help="ddim, euler, euler_a, dpm++, unipc, lcm (default: ddim)")
        s.add_argument("--seed", type=int, default=None, help="random seed (printed when not given)")
        s.add_argument("--context-overlap", type=int, default=None, help="frames shared by neighbouring context windows in long clips")
        o = p.add_argument_group("output")
        o.add_argument("-o", "--output", default=None, help="output file: .mp4 .gif .webp, .png (contact sheet) or a folder/ of PNGs (default: outputs/<prompt>-<seed>.mp4)")
        o.add_argument("--fps", type=float, default=8.0, help="frames per second of the output (default: 8)")
        o.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("generate", help="make a clip from a prompt", description="Make a clip from a prompt. "
                       "A prompt like '0:a red circle | 12:a blue circle' travels between prompts at those frames.")
    p.add_argument("prompt")
    common(p)
    p = sub.add_parser("animate", help="animate a still image (it becomes frame 0)", description="Animate a still: the image is frame 0, the prompt says what happens next.")
    p.add_argument("image", help="the still image (png, jpg, ...)")
    p.add_argument("prompt")
    p.add_argument("--image-conditioning", choices=("auto", "clean", "replace"), default="auto",
                   help="clean: the image enters as a clean frame at t=0 (adapters trained with frame conditioning); "
                   "replace: training-free, re-noised into frame 0 each step; auto picks by the adapter")
    common(p)
    p = sub.add_parser("restyle", help="video-to-video: repaint a clip following a prompt", description="Video-to-video (SDEdit): noise the clip part-way and denoise it towards the prompt.")
    p.add_argument("video")
    p.add_argument("prompt")
    p.add_argument("--strength", type=float, default=0.6, help="0 keeps the input, 1 ignores it (default: 0.6)")
    common(p)
    p = sub.add_parser("extend", help="continue a clip: its last frames are known, new frames follow", description="Continue a clip: its last frames are kept as known frames and new frames follow them. The output holds the input followed by the new frames.")
    p.add_argument("video")
    p.add_argument("prompt")
    p.add_argument("--known-frames", type=int, default=None, help="how many of the input's last frames to continue from (default: a quarter of --frames)")
    p.add_argument("--image-conditioning", choices=("auto", "clean", "replace"), default="auto", help="how the known frames enter the loop (see animate)")
    common(p)
    p = sub.add_parser("replay", help="make a clip again from its JSON sidecar", description="Make a clip again from the JSON sidecar written next to it.")
    p.add_argument("sidecar")
    p.add_argument("-o", "--output", default=None, help="where to write (default: the sidecar's output with '-replay')")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--device", help="override the device")
    p = sub.add_parser("train", help="finetune temporal layers (or another stage) from a YAML recipe",
                       description="Train from a YAML recipe (see configs/). Many GPUs: accelerate launch -m vidldm train CONFIG.yaml")
    p.add_argument("config", help="YAML recipe")
    p.add_argument("--resume", help="'latest' or a checkpoint folder: continue a stopped run exactly where it stopped")
    p.add_argument("--stop-after", type=int, help="stop this run after N more steps (resume later with --resume latest)")
    p.add_argument("--export", action="store_true",
                   help="with --resume: save that checkpoint's model (EMA weights) as the run's output, without training")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key, e.g. train.max_steps=100")
    p = sub.add_parser("cache", help="encode a recipe's clips and captions once into a latent cache",
                       description="Encode the recipe's videos (VAE) and captions (text encoder) once into safetensors shards; "
                       "point data.latent_cache at the folder to train without decoding videos.")
    p.add_argument("config", help="YAML recipe (its model and data sections are used)")
    p.add_argument("output", help="folder to create")
    p.add_argument("--device", help="cpu, cuda, ...")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    p = sub.add_parser("make-shapes", help="write a procedural shapes dataset (videos + captions.csv)",
                       description="Write N procedural clips (16 frames, 64x64, 8 fps: one coloured shape moving on a plain "
                       "background) with captions, in the folder format `vidldm train` reads.")
    p.add_argument("output", help="folder to create")
    p.add_argument("--n", type=int, default=1000, help="number of clips (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    p = sub.add_parser("eval", help="evaluate a model on the shapes benchmark (oracle-read accuracy)",
                       description="Generate clips for a fixed set of shapes prompts and read them back with an oracle: "
                       "colour/shape/motion accuracy, persistence, smoothness, size stability; also the real clips "
                       "(ceiling), the image model frame by frame (floor) and image animation.")
    p.add_argument("benchmark", choices=("shapes",))
    p.add_argument("--model", default="shapes", help="model to evaluate (default: shapes)")
    p.add_argument("--n", type=int, default=210, help="number of prompts (default: 210)")
    p.add_argument("--animate", type=int, default=50, help="number of stills to animate (default: 50)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--temporal-end", type=float, default=None, help="fraction of the steps with temporal layers (default: the model's)")
    p.add_argument("--device", help="cpu, cuda, ...")
    p.add_argument("-o", "--output", default="docs/evaluation.md", help="markdown report (default: docs/evaluation.md)")
    p = sub.add_parser("info", help="describe a model or a motion adapter", description="Describe a model (pipeline folder, built-in name) or a motion-adapter file/folder.")
    p.add_argument("model")
    p.add_argument("--motion-adapter", help="describe the model with this adapter")
    return parser


# ----------------------------------------------------------------------------- checks before loading

def parse_prompt(text: str, num_frames: int | None = None) -> str | dict[int, str]:
    """A plain prompt, or prompt travel '0:a red circle | 12:a blue circle' -> {0: ..., 12: ...} (see vidldm.prompt_travel)."""
    return prompt_travel.parse_prompt(text, num_frames)


def check_media(path: str, kind: str) -> None:
    p = Path(path)
    if not p.exists():
        raise VidldmError(f"{kind} '{path}' does not exist; check the path")
    if p.is_dir() and kind == "image":
        raise VidldmError(f"{kind} '{path}' is a folder; give an image file")


def resolve_output(args: argparse.Namespace, seed: int) -> Path:
    if args.output is None:
        slug = re.sub(r"[^a-z0-9]+", "-", str(args.prompt).lower()).strip("-")[:48] or "clip"
        folder = Path("outputs")
        folder.mkdir(exist_ok=True)  # our own default folder; a user-given one must exist
        return folder / f"{slug}-{seed}.mp4"
    out = Path(args.output)
    is_folder = args.output.endswith(("/", os.sep)) or out.is_dir() or not out.suffix
    if not is_folder and out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise VidldmError(f"cannot write '{out.name}': use one of {', '.join(OUTPUT_SUFFIXES)} or a folder/")
    check_output_folder(out.parent)
    return out


def check_output_folder(folder: Path) -> None:
    """Before any work: the folder to write into exists and is a folder (a file on the way says so)."""
    if folder.is_dir():
        return
    for above in (folder, *folder.parents):
        if above.exists() and not above.is_dir():
            raise VidldmError(f"cannot write into '{folder}': '{above}' is a file, not a folder")
    raise VidldmError(f"output folder '{folder}' does not exist; create it first")


def check_unit_interval(args: argparse.Namespace, flag: str) -> None:
    """A fraction flag (given or not, present on this command or not) must lie in [0, 1]."""
    value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    if value is not None and not 0 <= value <= 1:
        raise VidldmError(f"{flag} must be between 0 and 1, got {value}")


def check_count(args: argparse.Namespace, flag: str) -> None:
    """A count flag (given or not) must be at least 1."""
    value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    if value is not None and value < 1:
        raise VidldmError(f"{flag} must be at least 1, got {value}")


def check_finite(args: argparse.Namespace) -> None:
    """nan and inf parse as floats; no setting means anything with them (inf guidance made black clips)."""
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise VidldmError(f"--{name.replace('_', '-')} must be a finite number, got {value}")


def check_numbers(args: argparse.Namespace) -> None:
    check_finite(args)
    for flag in ("--frames", "--steps"):
        check_count(args, flag)
    if args.fps <= 0:
        raise VidldmError(f"--fps must be positive, got {args.fps}")
    if args.guidance is not None and args.guidance < 0:
        raise VidldmError(f"--guidance must be at least 0, got {args.guidance}")
    for name in ("height", "width"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise VidldmError(f"--{name} must be positive, got {v}")
    for flag in ("--guidance-rescale", "--temporal-end", "--strength"):
        check_unit_interval(args, flag)
    from vidldm.schedulers import check_scheduler_name

    check_scheduler_name(args.scheduler)


# ----------------------------------------------------------------------------- running

def sampling_settings(pipe, args: argparse.Namespace) -> tuple[int, float, float, float]:
    """`(steps, guidance, guidance_rescale, temporal_end)`: the flags given, else the model's own sampling
    defaults (saved with it, e.g. the shapes model's), else diffusers' (25 steps, guidance 7.5)."""
    return tuple(pipe.sampling_defaults(
        num_inference_steps=getattr(args, "steps", None), guidance_scale=getattr(args, "guidance", None),
        guidance_rescale=getattr(args, "guidance_rescale", None), temporal_end=getattr(args, "temporal_end", None)).values())


def settings_of(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Everything needed to make the clip again (written to the sidecar)."""
    keys = ("command", "prompt", "negative_prompt", "image", "video", "strength", "known_frames", "image_conditioning",
            "model", "motion_adapter", "config", "dtype", "frames", "height", "width", "steps", "guidance",
            "guidance_rescale", "temporal_end", "scheduler", "context_overlap", "fps")
    s = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    s["seed"] = seed
    for k in ("image", "video", "motion_adapter", "config"):
        if k in s:
            s[k] = str(Path(s[k]).resolve())
    if "model" in s and Path(s["model"]).exists():
        s["model"] = str(Path(s["model"]).resolve())
    return s


def run_mode(args: argparse.Namespace) -> Path:
    import torch

    check_numbers(args)  # first: the prompt's frames are checked against a valid --frames
    prompt = parse_prompt(args.prompt, args.frames)
    for kind in ("image", "video"):
        if getattr(args, kind, None) is not None:
            check_media(getattr(args, kind), kind)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    output = resolve_output(args, seed)

    from vidldm.loading import load_pipeline

    start = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("fp16" if str(device).startswith("cuda") else "fp32")
    pipe = load_pipeline(args.model, args.motion_adapter, config=args.config, device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=args.quiet)
    args.steps, args.guidance, args.guidance_rescale, args.temporal_end = sampling_settings(pipe, args)
    kwargs: dict[str, Any] = dict(
        negative_prompt=args.negative_prompt, num_frames=args.frames, height=args.height, width=args.width,
        num_inference_steps=args.steps, guidance_scale=args.guidance, guidance_rescale=args.guidance_rescale,
        temporal_end=args.temporal_end, scheduler=args.scheduler,
        context_overlap=args.context_overlap, generator=torch.Generator(device="cpu").manual_seed(seed), output_type="np",
    )
    if args.command == "animate":
        kwargs.update(image=args.image, image_conditioning=args.image_conditioning)
    elif args.command == "restyle":
        kwargs.update(video=args.video, strength=args.strength)
    elif args.command == "extend":
        from vidldm.io import read_video

        kwargs.update(video=read_video(args.video)[0], extend=True, num_known_frames=args.known_frames, image_conditioning=args.image_conditioning)
    frames = pipe(prompt, **kwargs).frames[0]  # extend: the input followed by the new frames
    write_clip(frames, output, args.fps)
    write_sidecar(output, settings_of(args, seed))
    print(f"wrote {output} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}, seed {seed}) "
          f"in {time.perf_counter() - start:.1f}s")
    return output


def write_clip(frames, output: Path, fps: float) -> None:
    from vidldm.io import write_grid, write_video

    if output.suffix.lower() == ".png" and len(frames) > 1:
        write_grid(frames, output)
    else:
        write_video(frames, output, fps=fps)


def sidecar_path(output: Path) -> Path:
    return output.with_suffix(".json") if output.suffix else output.parent / f"{output.name}.json"


def write_sidecar(output: Path, settings: dict[str, Any]) -> None:
    from vidldm import atomic

    # allow_nan=False: a sidecar is JSON other tools read, and NaN/Infinity are not JSON
    text = json.dumps({"vidldm": __version__, **settings, "output": str(output)}, indent=2, allow_nan=False)
    atomic.write_text(sidecar_path(output), text + "\n")


def replay(args: argparse.Namespace) -> Path:
    path = Path(args.sidecar)
    if not path.exists():
        raise VidldmError(f"sidecar '{path}' does not exist")
    try:
        saved = json.loads(path.read_text())
        command = saved["command"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise VidldmError(f"'{path}' is not a vidldm sidecar (JSON with a 'command')") from err
    if command not in MODES:
        raise VidldmError(f"'{path}' records an unknown command '{command}'")
    out = args.output or str(Path(saved["output"]).with_stem(Path(saved["output"]).stem + "-replay"))
    argv = [command]
    argv += [saved[k] for k in ("image", "video") if k in saved] + [_prompt_text(saved["prompt"])]
    flags = {"negative_prompt": "--negative-prompt", "strength": "--strength", "known_frames": "--known-frames",
             "image_conditioning": "--image-conditioning", "model": "--model", "motion_adapter": "--motion-adapter",
             "config": "--config", "dtype": "--dtype", "frames": "--frames", "height": "--height", "width": "--width",
             "steps": "--steps", "guidance": "--guidance", "guidance_rescale": "--guidance-rescale",
             "temporal_end": "--temporal-end", "scheduler": "--scheduler", "seed": "--seed",
             "context_overlap": "--context-overlap", "fps": "--fps"}
    # Sidecars record every sampling setting; one that lacks a setting predates it, when vidldm behaved as this
    # value does (the model's default today, e.g. the shapes model's temporal_end 0.7, would make another clip).
    saved = {"guidance_rescale": 0.0, "temporal_end": 1.0, **saved}
    for key, flag in flags.items():
        if key in saved:
            argv += [flag, str(saved[key])]
    argv += ["-o", out] + (["-q"] if args.quiet else []) + (["--device", args.device] if args.device else [])
    return run_mode(build_parser().parse_args(argv))


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, dict):
        return " | ".join(f"{k}:{v}" for k, v in prompt.items())
    return str(prompt)


def info(args: argparse.Namespace) -> None:
    from vidldm.models.motion_formats import load_motion_adapter

    target = Path(args.model)
    if target.is_file() or (target.is_dir() and (target / "config.json").exists() and not (target / "model_index.json").exists()):
        adapter = load_motion_adapter(target)
        print(f"motion adapter: {target}")
        _print_adapter(adapter)
        return
    from vidldm.loading import load_pipeline

    pipe = load_pipeline(args.model, args.motion_adapter, device="cpu")
    u = pipe.unet.config
    print(f"model: {args.model}")
    print(f"  unet: {sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.1f}M params, blocks {list(u.block_out_channels)}, "
          f"cross-attention dim {u.cross_attention_dim}, prediction {pipe.scheduler.config.prediction_type}")
    print(f"  vae: {sum(p.numel() for p in pipe.vae.parameters()) / 1e6:.1f}M params, {pipe.vae_scale_factor}x downsampling, "
          f"{pipe.vae.config.latent_channels} latent channels")
    print(f"  text encoder: {type(pipe.text_encoder).__name__}, {sum(p.numel() for p in pipe.text_encoder.parameters()) / 1e6:.1f}M params")
    print(f"  default size: {u.sample_size * pipe.vae_scale_factor}x{u.sample_size * pipe.vae_scale_factor}, scheduler {type(pipe.scheduler).__name__}")
    own = "the model's own" if pipe.generation_defaults else "diffusers', the model sets none"
    print(f"  sampling defaults ({own}): " + ", ".join(f"{k} {v}" for k, v in pipe.sampling_defaults().items()))
    _print_adapter(pipe.motion_adapter)


def cache(args: argparse.Namespace) -> None:
    import torch

    from vidldm.data import build_latent_cache
    from vidldm.train.config import load_config, position_encoding_length
    from vidldm.train.trainer import build_dataset

    config = load_config(args.config, args.set)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from vidldm.loading import load_pipeline

    pipe = load_pipeline(config.model.pretrained, config.model.motion_adapter, device=device,
                         fresh_adapter_frames=position_encoding_length(config.model))
    start = time.perf_counter()
    out = build_latent_cache(build_dataset(config), pipe.vae, pipe.encode_text, args.output, device=device,
                             overwrite=args.overwrite)
    print(f"wrote latent cache {out} in {time.perf_counter() - start:.1f}s")


def evaluate(args: argparse.Namespace) -> None:
    import torch

    from vidldm.eval.report import evaluate as run_eval
    from vidldm.eval.report import write_report
    from vidldm.loading import load_pipeline

    if args.n < 1 or args.animate < 0:
        raise VidldmError("--n must be at least 1 and --animate at least 0")
    check_count(args, "--steps")
    check_unit_interval(args, "--temporal-end")
    out = Path(args.output)
    check_output_folder(out.parent)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(args.model, device=device)
    pipe.set_progress_bar_config(disable=True)
    steps, guidance, _, temporal_end = sampling_settings(pipe, args)
    rows, animation = run_eval(pipe, n=args.n, steps=steps, guidance=guidance, animate=args.animate,
                               temporal_end=temporal_end, log=lambda m: print(m, file=sys.stderr))
    command = f"vidldm eval shapes --model {args.model} --n {args.n} --animate {args.animate}"
    for flag, value in (("--steps", args.steps), ("--guidance", args.guidance), ("--temporal-end", args.temporal_end)):
        command += f" {flag} {value:g}" if value is not None else ""  # the report's command must remake it
    settings = f"{steps} steps, guidance {guidance}, temporal layers for {temporal_end:g} of the steps, device {device}"
    print(write_report(rows, animation, out, command, settings, model=args.model))
    print(f"animation: first-frame PSNR {animation['first_frame_psnr_db']:.1f} dB, motion {100 * animation['motion_acc']:.1f}%")
    print(f"wrote {out}")


def _print_adapter(adapter) -> None:
    c = adapter.config
    print(f"  motion adapter: {sum(p.numel() for p in adapter.parameters()) / 1e6:.1f}M params, channels {list(c.block_out_channels)}, "
          f"{c.layers_per_block} per block, mid block {'yes' if c.use_mid_block else 'no'}, up to {c.max_seq_length} frames, "
          f"norm {c.norm_mode}, frame conditioning {'yes' if c.get('frame_conditioning') else 'no'}")


def _quiet_libraries() -> None:
    """diffusers/transformers log warnings meant for library authors; a CLI user wants only our lines."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


class Terminated(BaseException):
    """SIGTERM as an exception, so the cleanups that run on Ctrl-C (temporary files removed) run for it too.
    A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if _in_main_thread() else None
    try:
        return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _run(args: argparse.Namespace) -> int:
    _quiet_libraries()
    import torch

    # Subnormal floats cost ~100x on x86 CPUs and sharp attention makes them (see flush_denormals in
    # vidldm.train.trainer). Per thread and inherited: set before torch starts its worker threads.
    torch.set_flush_denormal(True)
    try:
        if args.command in MODES:
            run_mode(args)
        elif args.command == "replay":
            replay(args)
        elif args.command == "info":
            info(args)
        elif args.command == "train":
            from vidldm.train import run_training

            if args.stop_after is not None and args.stop_after < 1:
                raise VidldmError(f"--stop-after must be at least 1, got {args.stop_after}")
            if args.export and not args.resume:
                raise VidldmError("--export saves a checkpoint's model: name it with --resume (a folder or 'latest')")
            run_training(args.config, resume=args.resume, stop_after=args.stop_after, overrides=args.set, export=args.export)
        elif args.command == "cache":
            cache(args)
        elif args.command == "eval":
            evaluate(args)
        elif args.command == "make-shapes":
            from vidldm.data.shapes import make_shapes_dataset

            start = time.perf_counter()
            out = make_shapes_dataset(args.output, args.n, seed=args.seed)
            print(f"wrote {args.n} clips and captions.csv to {out} in {time.perf_counter() - start:.1f}s")
        return 0
    except VidldmError as err:
        print(f"vidldm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidldm: interrupted (Ctrl-C); nothing half-written was left", file=sys.stderr)
        return 130
    except Terminated:
        print("vidldm: stopped by SIGTERM; nothing half-written was left", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
