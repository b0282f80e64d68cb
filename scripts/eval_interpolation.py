"""Measure in-betweening, frame-rate upsampling and latent walks on a model (issue 28's checks).

    python scripts/eval_interpolation.py --model shapes --n 50 --walks 10 -o docs/interpolation.md

Held-out clips: `evaluation_specs(n, seed=2027)` (the training set is drawn with seed 0 and the shapes eval with
1234), rendered by the same code as `vidldm make-shapes`, 16 frames at 64 px. Read by the oracle of `vidldm eval`.

- In-betweening: frames 0 and 15 of a real clip are the keyframes; PSNR of the made first/last frames to them
  (their VAE round trip; with `known_pixels`, the default, they come out exactly as given),
  the share of clips whose object moves monotonically from the first keyframe's place to the last's (its
  progress along the line between them never steps back more than 1 px), and the oracle's smoothness against the
  real clips' (target: within 3x).
- Upsampling 2x: every other frame of a real clip is dropped, the 8 kept frames are upsampled to 15, and the
  made frames are compared to the dropped ones (PSNR), against a linear cross-fade of the two neighbours and the
  image model's training-free `replace` baseline (temporal layers off), and the dropped frames' own VAE round
  trip: the VAE's reconstruction of the right answer, the practical ceiling of a model that makes its frames as
  latents of this VAE (not a strict bound: another latent could decode nearer). The model's frames are scored
  twice, as decoded (`known_pixels` off) and with the kept frames' pixels warped onto them (`known_pixels`, the
  default), and against a model-free baseline: optical flow half way between the neighbours.
- Walks: a walk between two random seeds (one prompt, 4 clips between); the mean absolute pixel difference
  between consecutive clips against that between the two seeds' clips, and whether the oracle reads every clip of
  the walk with the prompt's colour and shape.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vidldm.data.shapes import evaluation_specs, render_clip
from vidldm.eval.keyframes import monotone
from vidldm.eval.report import vae_round_trip
from vidldm.eval.shapes import IMAGE_MODEL_FLOOR, analyse_clip
from vidldm.known_pixels import with_known_pixels
from vidldm.loading import load_pipeline
from vidldm.walk import latent_walk


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr_of(mse(a, b))


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def psnr_of(mean_squared_error: float) -> float:
    return math.inf if mean_squared_error == 0 else 10 * math.log10(255.0**2 / mean_squared_error)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def run(pipe, clip: np.ndarray, prompt: str, seed: int, **call) -> np.ndarray:
    out = pipe(prompt, output_type="np", generator=torch.Generator().manual_seed(seed), **call)
    return to_uint8(out.frames[0])


def given_pixels(made: np.ndarray, keys: dict[int, np.ndarray]) -> np.ndarray:
    """`made` `(F, H, W, 3)` uint8 as the pipeline's `known_pixels` makes it (vidldm.known_pixels: the keyframes as
    given, the frames between redrawn from their pixels); the clip is sampled once, without it, for both rows."""
    given = {i: frame.astype(np.float32) / 255 for i, frame in keys.items()}
    return to_uint8(with_known_pixels(made[None].astype(np.float32) / 255, given)[0])


def flow_midpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The frame halfway between `a` and `b` `(H, W, 3)` uint8 by optical flow alone (no model): each warped half
    way along its flow to the other (OpenCV's Farneback flow, as `known_pixels` uses), then averaged. A classical
    motion-compensated interpolation, the baseline RIFE/FILM improve on."""
    import cv2

    grey = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b)]
    h, w = grey[0].shape
    x, y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    halves = []
    for src, (g0, g1) in ((a, grey), (b, grey[::-1])):
        f = cv2.calcOpticalFlowFarneback(g0, g1, None, 0.5, 3, 9, 5, 5, 1.1, 0)  # src's pixels to the other frame
        halves.append(cv2.remap(src.astype(np.float32), x - 0.5 * f[..., 0], y - 0.5 * f[..., 1], cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE))  # backward warp, the flow read at the target pixel
    return ((halves[0] + halves[1]) / 2).round().clip(0, 255).astype(np.uint8)


def inbetweening(pipe, specs, steps: int) -> dict[str, float]:
    ends, mono, smooth, real_smooth, mono_given, smooth_given = [], [], [], [], [], []
    for i, spec in enumerate(specs):
        clip = render_clip(spec)
        keys = {0: clip[0], 15: clip[15]}
        made = run(pipe, clip, spec.caption, i, image=keys, num_frames=16, num_inference_steps=steps, known_pixels=False)
        redrawn = given_pixels(made, keys)
        ends += [psnr(made[0], clip[0]), psnr(made[-1], clip[-1])]  # the keyframes' VAE round trip, known_pixels off
        moving = spec.motion.startswith("moving")
        if moving:
            mono.append(monotone(made))
            mono_given.append(monotone(redrawn))
        smooth.append(analyse_clip(made).smoothness)
        smooth_given.append(analyse_clip(redrawn).smoothness)
        real_smooth.append(analyse_clip(clip).smoothness)
        log(f"inbetween {i + 1}/{len(specs)}")
    return {"end_psnr_db": float(np.mean(ends)), "end_psnr_min_db": float(np.min(ends)),
            "monotone": float(np.mean(mono)), "smoothness": float(np.nanmean(smooth)),
            "real_smoothness": float(np.nanmean(real_smooth)), "monotone_given": float(np.mean(mono_given)),
            "smoothness_given": float(np.nanmean(smooth_given))}


def upsampling(pipe, specs, steps: int) -> dict[str, float]:
    model, given, image_model, fade, flow, ceiling = [], [], [], [], [], []
    for i, spec in enumerate(specs):
        clip = render_clip(spec)
        # the practical ceiling of a model that makes frames in this latent space: the dropped frames themselves,
        # encoded and decoded by the model's VAE (and temporal decoder, if it has one) with the rest of their clip
        redrawn = vae_round_trip(pipe, [clip[:15]])[0]
        kept, dropped = clip[0:15:2], clip[1:15:2]  # 8 kept (0, 2, ..., 14), 7 dropped between them
        keys = {2 * k: frame for k, frame in enumerate(kept)}
        made = run(pipe, clip, spec.caption, i, image=keys, num_frames=15, num_inference_steps=steps, known_pixels=False)
        alone = run(pipe, clip, spec.caption, i, image=keys, num_frames=15, num_inference_steps=steps,
                    image_conditioning="replace", known_pixels=False, **IMAGE_MODEL_FLOOR)
        crossfade = ((kept[:-1].astype(np.float64) + kept[1:]) / 2).round().astype(np.uint8)
        flow.append(mse(np.stack([flow_midpoint(a, b) for a, b in zip(kept[:-1], kept[1:])]), dropped))
        model.append(mse(made[1::2], dropped))
        given.append(mse(given_pixels(made, keys)[1::2], dropped))
        image_model.append(mse(alone[1::2], dropped))
        fade.append(mse(crossfade, dropped))
        ceiling.append(mse(redrawn[1::2], dropped))
        log(f"upsample {i + 1}/{len(specs)}")
    # PSNR of the mean squared error over all clips: a clip that stands still is remade exactly by a cross-fade
    # (infinite PSNR), which a mean of per-clip PSNRs cannot average
    return {"model_psnr_db": psnr_of(np.mean(model)), "known_pixels_psnr_db": psnr_of(np.mean(given)), "image_model_replace_psnr_db": psnr_of(np.mean(image_model)),
            "crossfade_psnr_db": psnr_of(np.mean(fade)), "flow_psnr_db": psnr_of(np.mean(flow)),
            "vae_ceiling_psnr_db": psnr_of(np.mean(ceiling))}


def walks(pipe, specs, steps: int, between: int = 4) -> dict[str, float]:
    step_distance, seed_distance, read = [], [], []
    for i, spec in enumerate(specs):
        clips = to_uint8(latent_walk(pipe, [spec.caption], [1000 + 2 * i, 1001 + 2 * i], between, num_frames=16,
                                     height=64, width=64, num_inference_steps=steps))
        diffs = [np.abs(clips[k + 1].astype(np.float64) - clips[k]).mean() for k in range(len(clips) - 1)]
        step_distance.append(float(np.mean(diffs)))
        seed_distance.append(float(np.abs(clips[-1].astype(np.float64) - clips[0]).mean()))
        for clip in clips:
            obs = analyse_clip(clip)
            read.append(obs.colour == spec.colour and obs.shape == spec.shape)
        log(f"walk {i + 1}/{len(specs)}")
    return {"step_distance": float(np.mean(step_distance)), "seed_distance": float(np.mean(seed_distance)),
            "read_correctly": float(np.mean(read))}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--n", type=int, default=50, help="clips for in-betweening and for upsampling")
    parser.add_argument("--n-upsample", type=int, default=None, help="clips for upsampling (default: --n)")
    parser.add_argument("--walks", type=int, default=10)
    parser.add_argument("--steps", type=int, default=None, help="default: the model's")
    parser.add_argument("-o", "--output", default=None, help="also write the table as markdown here")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    pipe = load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    steps = args.steps or pipe.sampling_defaults()["num_inference_steps"]
    specs = evaluation_specs(max(args.n, args.walks), seed=2027)
    start = time.perf_counter()
    ib = inbetweening(pipe, specs[: args.n], steps)
    log(f"in-betweening: {ib}")  # each part as soon as it is measured: a long run stopped early keeps them
    up = upsampling(pipe, specs[: args.n_upsample or args.n], steps)
    log(f"upsampling: {up}")
    wk = walks(pipe, specs[: args.walks], steps)
    log(f"walks: {wk}")
    lines = [
        f"`python scripts/eval_interpolation.py --model {args.model} --n {args.n}"
        + (f" --n-upsample {args.n_upsample}" if args.n_upsample else "") + f" --walks {args.walks}` "
        f"({steps} steps, the model's other defaults; {time.perf_counter() - start:.0f} s on the CPU)",
        "",
        "| in-betweening (keyframes 0 and 15) | first/last frame PSNR | worst | monotone path | smoothness (px/f²) | real clips' |",
        "|---|---:|---:|---:|---:|---:|",
        f"| {args.n} held-out clips, `known_pixels` off | {ib['end_psnr_db']:.1f} dB | {ib['end_psnr_min_db']:.1f} dB | "
        f"{100 * ib['monotone']:.0f}% | {ib['smoothness']:.2f} | {ib['real_smoothness']:.2f} |",
        f"| the same clips, `known_pixels` (the default) | exact | exact | "
        f"{100 * ib['monotone_given']:.0f}% | {ib['smoothness_given']:.2f} | {ib['real_smoothness']:.2f} |",
        "",
        f"| upsampling 2x (8 -> 15 frames) on {args.n_upsample or args.n} held-out clips, made vs dropped frames | PSNR |",
        "|---|---:|",
        f"| video model (`image_conditioning` auto), `known_pixels` off | {up['model_psnr_db']:.1f} dB |",
        f"| the same frames, `known_pixels` (the default) | {up['known_pixels_psnr_db']:.1f} dB |",
        f"| image model, `replace` (temporal layers off) | {up['image_model_replace_psnr_db']:.1f} dB |",
        f"| linear cross-fade of the neighbours | {up['crossfade_psnr_db']:.1f} dB |",
        f"| optical flow alone, half way between the neighbours (no model) | {up['flow_psnr_db']:.1f} dB |",
        f"| the dropped frames through the VAE (the practical ceiling in this latent space) | "
        f"{up['vae_ceiling_psnr_db']:.1f} dB |",
        "",
        "| seed walks (one prompt, 4 clips between two seeds) | mean pixel distance | clips read right |",
        "|---|---:|---:|",
        f"| consecutive clips | {wk['step_distance']:.1f} / 255 | {100 * wk['read_correctly']:.0f}% |",
        f"| the two seeds' clips | {wk['seed_distance']:.1f} / 255 | |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
