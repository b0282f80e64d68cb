"""The `vidldm` command: generate, animate, restyle, extend, run, replay, info, export.

Every user mistake ends in one line on stderr and exit status 2, before any model is loaded
where possible, and never leaves a half-written file: videos and sidecars are written to a
temporary name and renamed.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shlex
import signal
import sys
import time
from pathlib import Path

from vidldm import __version__, prompt_travel
from vidldm import sampling_settings as settings
from vidldm.builtin_names import default_model
from vidldm.clip_run import (  # noqa: F401 (sidecar_path, write_sidecar: the CLI's names since before)
    check_control,
    check_memory,
    check_prompt,
    image_prompt,
    input_keys,
    make_clip,
    prompt_text,
    read_sidecar,
    resolve_sampling,
    sidecar_path,
    sparsectrl_spec,
    write_sidecar,
)
from vidldm.errors import VidldmError
from vidldm.seeds import normalize_seed

DEFAULT_MODEL = default_model()
MODES = settings.MODES


# ----------------------------------------------------------------------------- arguments

class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (argparse prints the usage block first), exit status 2."""

    def error(self, message: str):
        where = self.prog.removeprefix("vidldm").strip()
        self.exit(2, f"vidldm: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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

    def mode(name: str, inputs: tuple[tuple[str, str], ...], help_text: str, description: str) -> None:
        p = sub.add_parser(name, help=help_text, description=description)
        for arg, arg_help in inputs:
            optional = arg == "prompt" and name == "interpolate-frames"  # the clip says what it shows
            several = arg == "prompt" and name == "walk"
            p.add_argument(arg, help=arg_help, **({"nargs": "?", "default": ""} if optional else {}),
                           **({"nargs": "+"} if several else {}))
        groups = settings.add_flags(p, name, model_default=DEFAULT_MODEL)
        groups["output"].add_argument("-o", "--output", default=None, help="output file: .mp4 .gif .webp, .png (contact "
                                      "sheet) or a folder/ of PNGs (default: outputs/<prompt>-<seed>.mp4)")
        groups["output"].add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    mode("generate", (("prompt", "what the clip shows"),), "make a clip from a prompt", "Make a clip from a prompt. "
         "A prompt like '0:a red circle | 12:a blue circle' travels between prompts at those frames.")
    mode("animate", (("image", "the still image (png, jpg, ...)"), ("prompt", "what happens next")),
         "animate a still image (it becomes frame 0)", "Animate a still: the image is frame 0, the prompt says what happens next.")
    mode("restyle", (("video", "the clip to repaint"), ("prompt", "what it should look like")),
         "video-to-video: repaint a clip following a prompt",
         "Video-to-video (SDEdit): noise the clip part-way and denoise it towards the prompt.")
    mode("extend", (("video", "the clip to continue"), ("prompt", "what happens next")),
         "continue a clip: its last frames are known, new frames follow",
         "Continue a clip: its last frames are kept as known frames and new frames follow them. "
         "The output holds the input followed by the new frames.")
    mode("inbetween", (("start", "the first frame (an image)"), ("end", "the last frame (an image of the same size)"),
                       ("prompt", "what happens between")),
         "make the frames between two keyframes", "In-betweening: the first and last frames are given (clean, t = 0) "
         "and the model makes the motion between them. From Python, any number of keyframes at any frames: "
         "pipe(prompt, image={0: a, 8: b, 15: c}).")
    mode("interpolate-frames", (("video", "the clip to make smoother"), ("prompt", "what it shows (optional)")),
         "raise a clip's frame rate with frames the model makes",
         "Frame-rate upsampling: every input frame is a known frame, the model makes --factor - 1 frames between "
         "each two (window by window for long clips); the output's frame rate is the input's times the factor.")
    mode("walk", (("prompt", "the walk's stops: one prompt, or one per stop"),),
         "clips along a path between seeds and prompts (latent walk)",
         "A latent walk: clips made at evenly spaced points between stops (prompt, seed), the starting noise "
         "slerped and the prompts' embeddings interpolated, laid out one after another or side by side. "
         "Two prompts and --seeds 1 walk from one to the other; one prompt and --seeds 1,2,3 walk through seeds.")
    p = sub.add_parser("run", help="make every clip a run file (YAML/JSON) lists",
                       description="Make every clip a run file lists: prompts (with head/tail prompts and prompt maps), "
                       "seeds, repeats, LoRAs and any setting of generate/animate/restyle/extend, one clip and one sidecar "
                       "per clip, a summary at the end. The whole file is checked before the first clip; an entry that "
                       "fails is reported and the others still run (exit 1 if any failed). Format: vidldm/run_file.py.")
    p.add_argument("run_file", help="YAML or JSON run file")
    p.add_argument("-o", "--output", default=None, help="folder for the clips (default: outputs/<run file name>/)")
    p.add_argument("--dry-run", action="store_true", help="print the command of every clip, make none")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--device", help="cpu, cuda, ... (overrides the run file)")
    p.add_argument("--overwrite", action="store_true", help="replace clips of the same name (default: the next free name)")
    p = sub.add_parser("serve", help="the web studio: every mode in the browser (needs: pip install 'vidldm[web]')",
                       description="Serve the web studio (gradio) for one model: generate, animate, restyle and extend "
                       "in the browser, with a queue (one clip at a time) and a gallery of this server's clips. "
                       "Binds to 127.0.0.1 (this machine only); --host 0.0.0.0 serves your network, with no login.")
    for s in settings.SETTINGS:
        if s.group == "model":
            default = DEFAULT_MODEL if s.name == "model" else None
            p.add_argument(s.flag, dest=s.key, default=default, choices=s.choices, metavar=s.metavar,
                           help=f"{s.help} (default: {DEFAULT_MODEL})" if s.name == "model" else s.help,
                           **({"action": "append"} if s.repeatable else {}))  # --lora A --lora B
    sparse = settings.BY_KEY["sparsectrl"]
    p.add_argument(sparse.flag, dest=sparse.key, metavar=sparse.metavar, help="SparseCtrl for the generate tab's "
                   "keyframes, PATH[:SCALE] (default: the model's own keyframe encoder, if it has one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--output-dir", default="vidldm-studio", help="folder for clips and sidecars (default: ./vidldm-studio)")
    p = sub.add_parser("replay", help="make a clip again from its JSON sidecar", description="Make a clip again from the JSON sidecar written next to it.")
    p.add_argument("sidecar")
    p.add_argument("-o", "--output", default=None, help="where to write (default: the sidecar's output with '-replay')")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--device", help="override the device")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output and its sidecar (never the sidecar replayed)")
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
    p.add_argument("--wordings", choices=("fixed", "varied", "rich"), default="fixed",
                   help="fixed: one caption form; varied: several wordings of each motion and sentence orders; rich: "
                   "about three times as many wordings (vidldm.data.wordings; the clips are the same for the same seed) "
                   "(default: fixed)")
    p = sub.add_parser("eval", help="evaluate a model on the shapes benchmark (oracle-read accuracy)",
                       description="Generate clips for a fixed set of shapes prompts and read them back with an oracle: "
                       "colour/shape/motion accuracy, persistence, smoothness, size stability; also the real clips "
                       "(ceiling), the image model frame by frame (floor) and image animation.")
    p.add_argument("benchmark", choices=("shapes", "keyframes"),
                   help="shapes: text to video; keyframes: start and end keyframes through the model's keyframe encoder")
    p.add_argument("--model", default="shapes", help="model to evaluate (default: shapes)")
    p.add_argument("--motion-adapter", help="evaluate the model with this motion adapter instead of its own (AnimateDiff "
                   "file or adapter folder, e.g. checkpoints/shapes-3p/motion_adapter)")
    p.add_argument("--n", type=int, default=None, help="number of prompts (default: 210; keyframes: 50 clips)")
    p.add_argument("--sparsectrl", help="keyframes: the SparseCtrl keyframe encoder (default: the model's own)")
    p.add_argument("--exact-keyframes", action=argparse.BooleanOptionalAction, default=None,
                   help="keyframes: also give them as known frames, as generate --exact-keyframes does (default: the "
                   "keyframe encoder's own)")
    p.add_argument("--animate", type=int, default=50, help="number of stills to animate (default: 50)")
    settings.add_flags(p, "eval", model_default="shapes")
    p.add_argument("--device", help="cpu, cuda, ...")
    p.add_argument("-o", "--output", help="markdown report (default: docs/evaluation.md; keyframes: docs/eval-keyframes.md)")
    p = sub.add_parser("info", help="describe a model or a motion adapter", description="Describe a model (pipeline folder, built-in name) or a motion-adapter file/folder.")
    p.add_argument("model", nargs="?", help="the model or adapter to describe (not needed with --schedulers)")
    p.add_argument("--schedulers", action="store_true", help="list the names --scheduler takes")
    p.add_argument("--motion-adapter", help="describe the model with this adapter")
    p.add_argument("--variant", help="weights variant of diffusers folders, e.g. fp16 (default: plain, or the only one there)")
    p = sub.add_parser("export", help="write a model as a diffusers AnimateDiffPipeline folder",
                       description="Write a model (any --model vidldm loads) as a folder diffusers' "
                       "AnimateDiffPipeline.from_pretrained loads and that gives the same frames. Adapters with layers "
                       "diffusers has no class for (spatio-temporal attention, text cross-attention, temporal "
                       "convolutions) are refused.")
    p.add_argument("model")
    p.add_argument("output", help="folder to create")
    p.add_argument("--format", choices=("diffusers",), default="diffusers", help="folder layout (default: diffusers)")
    p.add_argument("--motion-adapter", help="export the model with this adapter")
    p.add_argument("--config", help="local diffusers SD folder giving configs for a single-file model")
    p.add_argument("--variant", help="weights variant of diffusers folders to read, e.g. fp16")
    p.add_argument("--lossy", action="store_true",
                   help="export even where diffusers computes slightly differently (per-frame normalisation) "
                   "or cannot use a feature (frame conditioning)")
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
    """Where the clip goes, checked before any work: never onto an input, never over an existing clip or sidecar
    unless `--overwrite`. Without `-o`, `outputs/<prompt>-<seed>.mp4`, or the next free `-2`, `-3`... name."""
    from vidldm.io import check_output_path

    if args.output is None:
        text = " ".join(args.prompt) if isinstance(args.prompt, list) else str(args.prompt)  # a walk has several
        slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "clip"
        folder = Path("outputs")
        folder.mkdir(exist_ok=True)  # our own default folder; a user-given one must exist
        return _free_name(folder, f"{slug}-{seed}", ".mp4")
    out = check_output_path(args.output)
    inputs = [getattr(args, k, None) for k in input_keys(args)] + list(getattr(args, "protected", []))
    for given in filter(None, inputs):
        for written in (out, sidecar_path(out)):
            if written.exists() and Path(given).exists() and written.resolve() == Path(given).resolve():
                raise VidldmError(f"'{written}' is the input '{given}'; vidldm never writes over an input: choose another -o")
    if _taken(out) and not args.overwrite:
        raise VidldmError(f"'{out}' or its sidecar '{sidecar_path(out).name}' exists; pass --overwrite to replace both, "
                          "or choose another -o")
    return out


def _taken(out: Path) -> bool:
    """A clip, a frames folder that holds frames, or the sidecar they would share, is already there."""
    frames = out.is_dir() and any(out.glob("frame_*.png"))
    return (out.is_file() or frames) or sidecar_path(out).exists()


# ----------------------------------------------------------------------------- running

def run_mode(args: argparse.Namespace, pipes: dict | None = None) -> Path:
    """Make one clip of a mode command; `pipes` keeps the last loaded model for the next clip (run files)."""
    import torch

    settings.check_args(args)  # first: the prompt's frames are checked against a valid --frames
    check_prompt(args)
    image_prompt(args)  # --ip-adapter and --ip-image come together
    check_control(args)  # so do --controlnet and --control, --sparsectrl and --keyframe
    for key in input_keys(args):
        check_media(getattr(args, key), "image" if key in settings.IMAGE_INPUTS else "video")
    args.seed = normalize_seed(args.seed) if args.seed is not None else random.randrange(2**31)
    output = resolve_output(args, args.seed)

    start = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_model(args, device, pipes)
    pipe.set_progress_bar_config(disable=args.quiet)
    frames = make_clip(pipe, args, output, device)
    print(f"wrote {output} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}, seed {args.seed}) "
          f"in {time.perf_counter() - start:.1f}s")
    return output


def memory_options(args: argparse.Namespace, device: str):
    """`--offload`'s pipeline method, or None. On a CPU it is a no-op, said in one line: offload moves weights between
    GPU and CPU memory, and there every weight already is in CPU memory; the frames are the same either way, so a
    command written for a GPU machine still runs here."""
    if args.offload == "none":
        return None
    if not str(device).startswith("cuda"):
        print(f"vidldm: --offload {args.offload} has no effect on {device}: the weights are in CPU memory already",
              file=sys.stderr)
        return None
    if args.offload == "model":
        return lambda pipe, dev: pipe.enable_model_cpu_offload(device=dev)
    return lambda pipe, dev: pipe.enable_sequential_cpu_offload(device=dev)


def load_model(args: argparse.Namespace, device: str, pipes: dict | None = None):
    """The pipeline the model and memory settings name (dtype: fp16 on a GPU, fp32 on a CPU unless `--dtype`), its
    LoRAs loaded and offload set; from `pipes` when the previous clip used the same ones (run files)."""
    from vidldm.loading import apply_controlnets, apply_ip_adapter, apply_loras, load_pipeline

    dtype = args.dtype or ("fp16" if str(device).startswith("cuda") else "fp32")
    key = tuple((s.key, str(getattr(args, s.key, None))) for s in settings.SETTINGS
                if s.group in ("model", "memory") or s.name in ("ip_adapter", "image_encoder", "controlnet", "sparsectrl"))
    sparsectrl = sparsectrl_spec(args)  # --sparsectrl, or the model's own encoder for --keyframe alone
    key += (device, dtype, sparsectrl)
    if pipes is not None and key in pipes:
        return pipes[key]
    if pipes is not None:
        pipes.clear()  # one model in memory at a time
    offload = memory_options(args, device)
    pipe = load_pipeline(args.model, args.motion_adapter, config=args.config, device="cpu" if offload else device,
                         dtype=dtype, variant=args.variant)
    apply_loras(pipe, getattr(args, "lora", None), getattr(args, "motion_lora", None))  # before offload: peft wraps
    apply_ip_adapter(pipe, getattr(args, "ip_adapter", None), getattr(args, "image_encoder", None))  # and the encoder
    apply_controlnets(pipe, getattr(args, "controlnet", None), sparsectrl)  # offloaded with the UNet
    if offload is not None:                                                               # the layers hooks then move
        offload(pipe, device)
    if getattr(args, "vae_tiling", False):
        pipe.enable_vae_tiling()
    if pipes is not None:
        pipes[key] = pipe
    return pipe


def run_file(args: argparse.Namespace) -> int:
    """`vidldm run`: every clip of a run file through `run_mode`, one model load per model; a summary at the end."""
    from vidldm.run_file import load_run_file

    jobs = load_run_file(args.run_file)
    folder = Path(args.output) if args.output else Path("outputs") / re.sub(r"[^\w.-]+", "-", Path(args.run_file).stem)
    extra = ["-q"] * args.quiet + ["--overwrite"] * args.overwrite + ([f"--device={args.device}"] if args.device else [])
    if args.dry_run:
        for job in jobs:
            print("vidldm " + shlex.join([*job.argv, "-o", str(folder / (job.stem + job.suffix)), *extra]))
        return 0
    _make_folder(folder, default=args.output is None)
    pipes: dict = {}
    made, failed, start = [], [], time.perf_counter()
    for n, job in enumerate(jobs, 1):
        output = folder / (job.stem + job.suffix) if args.overwrite else _free_name(folder, job.stem, job.suffix)
        print(f"[{n}/{len(jobs)}] {job.where}: {output}", file=sys.stderr)
        try:
            job_args = build_parser().parse_args([*job.argv, "-o", str(output), *extra])
            job_args.protected = [args.run_file]
            made.append(run_mode(job_args, pipes))
        except VidldmError as err:
            print(f"vidldm: error: {job.where}: {err}", file=sys.stderr)
            failed.append(f"{job.where}: {err}")
    print(f"run {args.run_file}: {len(made)} of {len(jobs)} clips made in {folder}/ in {time.perf_counter() - start:.1f}s")
    for line in failed:
        print(f"  failed: {line}")
    return 1 if failed else 0


def _make_folder(folder: Path, default: bool) -> None:
    """The run's folder: ours (outputs/...) is made; a user's -o may be new, but inside a folder that exists."""
    from vidldm.io import check_output_folder

    if folder.exists() and not folder.is_dir():
        raise VidldmError(f"'{folder}' is a file, not a folder; give -o a folder for the run's clips")
    if not default:
        check_output_folder(folder)
    folder.mkdir(parents=default, exist_ok=True)


def _free_name(folder: Path, stem: str, suffix: str) -> Path:
    out, n = folder / f"{stem}{suffix}", 1
    while _taken(out):
        n += 1
        out = folder / f"{stem}-{n}{suffix}"
    return out


def run_walk(args: argparse.Namespace) -> Path:
    """`vidldm walk`: the clips of a latent walk (vidldm.walk) as one file, with a sidecar that replays it."""
    import torch

    settings.check_args(args)
    for prompt in args.prompt:
        if isinstance(parse_prompt(prompt, args.frames), dict):
            raise VidldmError("a walk's prompts are plain prompts; prompt travel within a clip is for generate")
    seeds = settings.parse_seeds(args.seeds) if args.seeds else [random.randrange(2**31)]
    from vidldm.walk import walk_stops

    walk_stops(args.prompt, seeds)  # the stops pair up, before any model loads
    args.seeds = ",".join(map(str, seeds))
    args.fps = args.fps or 8.0
    output = resolve_output(args, seeds[0])
    from vidldm.io import write_clip
    from vidldm.walk import latent_walk, lay_out

    start = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_model(args, device)
    pipe.set_progress_bar_config(disable=True)
    resolve_sampling(pipe, args)
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    args.frames, args.height, args.width = args.frames or pipe.default_num_frames, args.height or side, args.width or side
    check_memory(pipe, args, device)
    call = {k: v for k, v in settings.pipeline_kwargs(args).items() if k not in ("num_frames", "height", "width", "negative_prompt")}
    clips = latent_walk(pipe, args.prompt, seeds, args.between, args.frames, args.height, args.width, args.negative_prompt,
                        on_clip=None if args.quiet else lambda i, n: print(f"clip {i + 1}/{n}", file=sys.stderr), **call)
    frames = lay_out(clips, args.layout)
    write_clip(frames, output, args.fps)
    write_sidecar(output, {"command": "walk", "prompt": list(args.prompt), **settings.recorded(args)})
    print(f"wrote {output} ({len(clips)} clips of {args.frames} frames, {args.layout}, seeds {args.seeds}) "
          f"in {time.perf_counter() - start:.1f}s")
    return output


def replay(args: argparse.Namespace) -> Path:
    path = Path(args.sidecar)
    saved = read_sidecar(path)
    command = saved["command"]
    out = args.output or str(Path(saved["output"]).with_stem(Path(saved["output"]).stem + "-replay"))
    prompts = saved["prompt"] if command == "walk" else [prompt_text(saved["prompt"])]
    argv = [command, *(saved[k] for k in settings.MODE_INPUTS.get(command, ()) if k in saved), *prompts]
    argv += settings.replay_argv(saved, command)
    argv += ["-o", out] + (["-q"] if args.quiet else []) + (["--device", args.device] if args.device else [])
    argv += ["--overwrite"] if args.overwrite else []
    again = build_parser().parse_args(argv)
    again.protected = [str(path)]  # the sidecar being replayed is an input too
    return run_walk(again) if command == "walk" else run_mode(again)


def info(args: argparse.Namespace) -> None:
    from vidldm.models.motion_formats import load_motion_adapter

    if args.schedulers:
        _print_schedulers()
        return
    if args.model is None:
        raise VidldmError("info needs a model or motion adapter to describe, or --schedulers")

    target = Path(args.model)
    if target.is_file() or (target.is_dir() and (target / "config.json").exists() and not (target / "model_index.json").exists()):
        adapter = load_motion_adapter(target, variant=args.variant)
        print(f"motion adapter: {target}")
        _print_adapter(adapter)
        return
    from vidldm.loading import load_pipeline

    pipe = load_pipeline(args.model, args.motion_adapter, device="cpu", variant=args.variant)
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


def export(args: argparse.Namespace) -> None:
    from vidldm.loading import export_diffusers

    pipe = export_diffusers(args.model, args.output, args.motion_adapter, config=args.config, variant=args.variant,
                            lossy=args.lossy)
    print(f"wrote {args.output}: a diffusers AnimateDiffPipeline (load it with AnimateDiffPipeline.from_pretrained)")
    if pipe.generation_defaults:  # a diffusers folder has no place for them
        print("  not kept (a diffusers folder has no place for them), the model's sampling defaults: "
              + ", ".join(f"{k}={v}" for k, v in pipe.generation_defaults.items()))


def cache(args: argparse.Namespace) -> None:
    import torch

    from vidldm.data import build_latent_cache
    from vidldm.train.config import adapter_max_seq_length, load_config
    from vidldm.train.trainer import build_dataset

    config = load_config(args.config, args.set)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from vidldm.loading import load_pipeline

    pipe = load_pipeline(config.model.pretrained, config.model.motion_adapter, device=device,
                         fresh_max_seq_length=adapter_max_seq_length(config.model))
    start = time.perf_counter()
    out = build_latent_cache(build_dataset(config), pipe.vae, pipe.encode_text, args.output, device=device,
                             overwrite=args.overwrite)
    print(f"wrote latent cache {out} in {time.perf_counter() - start:.1f}s")


def evaluate(args: argparse.Namespace) -> None:
    import torch

    from vidldm.eval.report import evaluate as run_eval
    from vidldm.eval.report import write_report
    from vidldm.io import check_output_folder
    from vidldm.loading import load_pipeline

    if args.benchmark == "keyframes":
        return evaluate_keyframes(args)
    if args.sparsectrl or args.exact_keyframes is not None:
        raise VidldmError(f"{'--sparsectrl' if args.sparsectrl else '--exact-keyframes'} is for vidldm eval keyframes")
    args.n = 210 if args.n is None else args.n
    args.output = args.output or "docs/evaluation.md"
    if args.n < 1 or args.animate < 0:
        raise VidldmError("--n must be at least 1 and --animate at least 0")
    settings.check_args(args)
    # The eval's sampling flags, as the settings table gives them (steps, guidance, temporal end, smoothing)
    given = {s.flag: getattr(args, s.key) for s in settings.SETTINGS
             if "eval" in s.commands and s.name in settings.SAMPLING_DEFAULTS}
    out = Path(args.output)
    check_output_folder(out)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(args.model, args.motion_adapter, device=device)
    pipe.set_progress_bar_config(disable=True)
    resolve_sampling(pipe, args)
    rows, animation = run_eval(pipe, n=args.n, steps=args.steps, guidance=args.guidance, animate=args.animate,
                               temporal_end=args.temporal_end, temporal_smoothing=args.temporal_smoothing,
                               log=lambda m: print(m, file=sys.stderr))
    command = f"vidldm eval shapes --model {args.model}{_adapter_flag(args)} --n {args.n} --animate {args.animate}"
    command += "".join(f" {flag} {value:g}" for flag, value in given.items() if value is not None)  # remakes the table
    used = f"{args.steps} steps, guidance {args.guidance}, temporal layers for {args.temporal_end:g} of the steps"
    used += f"{_free_init_note(pipe)}"
    used += f", latents smoothed over time (weight {args.temporal_smoothing:g})" if args.temporal_smoothing else ""
    used += f", device {device}"
    print(write_report(rows, animation, out, command, used, model=args.model + _adapter_flag(args)))
    print(f"animation: first-frame PSNR {animation['first_frame_psnr_db']:.1f} dB, motion {100 * animation['motion_acc']:.1f}%")
    print(f"wrote {out}")


def _adapter_flag(args: argparse.Namespace) -> str:
    """' --motion-adapter X' where one was given: the report's command remakes it and its title names it."""
    return f" --motion-adapter {args.motion_adapter}" if args.motion_adapter else ""


def _free_init_note(pipe, free_init: int | None = None) -> str:
    """', FreeInit N runs' where the eval's rows (its floor aside) run FreeInit: `free_init`, else the model's."""
    iters = free_init or pipe.sampling_defaults()["free_init"]
    return f", FreeInit {iters} runs" if iters > 1 else ""


def evaluate_keyframes(args: argparse.Namespace) -> None:
    """`vidldm eval keyframes`: start and end keyframes through the keyframe encoder (vidldm.eval.keyframes)."""
    import torch

    from vidldm import atomic
    from vidldm.builtin_names import own_keyframe_encoder
    from vidldm.clip_run import keyframe_encoder_exact, keyframe_encoder_settings
    from vidldm.eval.keyframes import HELD_OUT_SEED, format_rows
    from vidldm.eval.keyframes import evaluate_keyframes as run_eval
    from vidldm.io import check_output_folder
    from vidldm.loading import apply_controlnets, load_pipeline

    args.n = 50 if args.n is None else args.n
    if args.n < 1:
        raise VidldmError("--n must be at least 1")
    given_exact = args.exact_keyframes  # as typed, for the report's command line (resolve_sampling fills it later)
    settings.check_args(args)
    if args.sparsectrl:
        path, scale = settings.parse_lora_spec(args.sparsectrl, "--sparsectrl scale")
        exact = bool(args.exact_keyframes)
    else:  # the model's own, as `--keyframe` uses it: at the scale and settings it was tuned with, unless given
        own = own_keyframe_encoder(args.model)
        if own is None:
            raise VidldmError(f"the model '{args.model}' has no keyframe encoder of its own; give --sparsectrl PATH")
        path, (scale, tuned) = str(own), keyframe_encoder_settings(own)
        exact = keyframe_encoder_exact(own) if args.exact_keyframes is None else args.exact_keyframes
        for name, value in tuned.items():
            if getattr(args, settings.BY_NAME[name].key, None) is None:
                setattr(args, settings.BY_NAME[name].key, value)
    out = Path(args.output or "docs/eval-keyframes.md")
    check_output_folder(out)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(args.model, args.motion_adapter, device=device)
    apply_controlnets(pipe, sparsectrl=path)
    pipe.set_progress_bar_config(disable=True)
    resolve_sampling(pipe, args)
    start = time.perf_counter()
    free_init = getattr(args, "free_init", None)  # the own encoder's (set above), as `--keyframe` uses it
    rows = run_eval(pipe, n=args.n, steps=args.steps, guidance=args.guidance, temporal_end=args.temporal_end,
                    scale=scale, log=lambda m: print(m, file=sys.stderr), free_init=free_init, exact=exact)
    table = format_rows(rows)
    command = (f"vidldm eval keyframes --model {args.model}{_adapter_flag(args)} --n {args.n}" + (f" --sparsectrl {args.sparsectrl}" if args.sparsectrl else "")
               + ("" if given_exact is None else f" --{'' if exact else 'no-'}exact-keyframes"))
    text = (f"# Keyframes: {args.n} held-out clips (make-shapes seed {HELD_OUT_SEED}), frames 0 and last given\n\n"
            f"Made with `{command}` (keyframe scale {scale:g}, {args.steps} steps, guidance {args.guidance}, temporal layers for "
            f"{args.temporal_end:g} of the steps{_free_init_note(pipe, free_init)}"
            f"{', keyframes also known frames' if exact else ''}, device {device}, "
            f"{time.perf_counter() - start:.0f} s).\n\n{table}\n")
    atomic.write_text(out, text)
    print(table)
    print(f"wrote {out}")


def train(args: argparse.Namespace) -> None:
    from vidldm.train import run_training

    if args.stop_after is not None and args.stop_after < 1:
        raise VidldmError(f"--stop-after must be at least 1, got {args.stop_after}")
    if args.export and not args.resume:
        raise VidldmError("--export saves a checkpoint's model: name it with --resume (a folder or 'latest')")
    run_training(args.config, resume=args.resume, stop_after=args.stop_after, overrides=args.set, export=args.export)


def serve(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise VidldmError(f"--port must be between 1 and 65535, got {args.port}")
    try:
        import gradio  # noqa: F401 (only to say what is missing; the studio imports it)
    except ImportError as err:
        raise VidldmError("the web studio needs gradio: pip install 'vidldm[web]' (or pip install gradio)") from err
    from vidldm.web import serve as run_studio

    for key in ("lora", "motion_lora"):
        for spec in getattr(args, key) or []:
            settings.BY_KEY[key].check(spec, settings.BY_KEY[key].flag)  # a missing file is one line before loading
    if args.sparsectrl:
        settings.BY_KEY["sparsectrl"].check(args.sparsectrl, "--sparsectrl")
    run_studio(args.model, args.motion_adapter, host=args.host, port=args.port, output_dir=args.output_dir,
               device=args.device, dtype=args.dtype, config=args.config, variant=args.variant, loras=args.lora,
               motion_loras=args.motion_lora, sparsectrl=args.sparsectrl)


def make_shapes(args: argparse.Namespace) -> None:
    from vidldm.data.shapes import make_shapes_dataset

    start = time.perf_counter()
    out = make_shapes_dataset(args.output, args.n, seed=args.seed, wordings=args.wordings)
    print(f"wrote {args.n} clips and captions.csv to {out} in {time.perf_counter() - start:.1f}s")


def _print_schedulers() -> None:
    from vidldm.schedulers import CLASS_NAMES, SCHEDULERS, describe

    print("--scheduler names (case-insensitive; _karras: Karras sigmas):")
    for name in SCHEDULERS:
        print(f"  {describe(name)}")
    print("and any of these diffusers classes by name: " + ", ".join(CLASS_NAMES))


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
    # Their loading bars too: an error must reach the user as one line, and a load prints its own summary.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


class Terminated(BaseException):
    """SIGTERM as an exception, so the cleanups that run on Ctrl-C (temporary files removed) run for it too.
    A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM raises Terminated; SIGINT raises KeyboardInterrupt as in a fresh interpreter, even where the process
    # that calls main() (a test run, an embedding program, a library it loaded) had set another handler for it.
    handlers = {signal.SIGTERM: _raise_terminated, signal.SIGINT: signal.default_int_handler} if _in_main_thread() else {}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        return _run(args)
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler set outside Python, which cannot be put back from here
                signal.signal(signum, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _run(args: argparse.Namespace) -> int:
    try:
        _quiet_libraries()  # inside the try: a SIGTERM or Ctrl-C during these imports is one line too
        import torch

        # Subnormal floats cost ~100x on x86 CPUs and sharp attention makes them (see flush_denormals in
        # vidldm.train.trainer). Per thread and inherited: set before torch starts its worker threads.
        torch.set_flush_denormal(True)
        commands = {**dict.fromkeys(MODES, run_mode), "replay": replay, "info": info, "train": train, "cache": cache,
                    "eval": evaluate, "make-shapes": make_shapes, "export": export, "run": run_file, "walk": run_walk,
                    "serve": serve}
        status = commands[args.command](args)
        return status if isinstance(status, int) else 0  # `run` returns 1 when some of its clips failed
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
