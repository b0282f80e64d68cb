"""`vidldm eval shapes`: the shipped model against its ceiling (real clips) and floor (no temporal layers).

Rows of the table, all over the same fixed prompts (`evaluation_specs`) and seeds:
- **real clips**: the procedural clips themselves after an mp4 round trip (what the oracle can read);
- **real clips through the VAE**: encoded and decoded by the model's VAE (what any generator on its
  latents can reach at best);
- **video model**: the shipped pipeline;
- **video model, paraphrased prompts**: the same clips asked for in held-out words (`vidldm.eval.paraphrase`:
  other motion words, other sentence orders), same seeds: how far the learned motions carry to new wording;
- **image model, frame by frame**: the same pipeline with its temporal layers off at every step
  (`temporal_end=0`, no FreeInit: its 3-D low-pass ties the frames), i.e. every frame denoised on its own from
  the same noise;
- **animate still**: frame 0 of a real clip given as `image=` ("clean" conditioning):
  first-frame PSNR against the still and the motion accuracy of what follows.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from vidldm import atomic
from vidldm.data.shapes import evaluation_specs, render_clip
from vidldm.eval.paraphrase import paraphrase
from vidldm.eval.shapes import IMAGE_MODEL_FLOOR, first_frame_psnr, format_table, score
from vidldm.frames import frames_to_tensor, tensor_to_frames
from vidldm.io import read_video, write_video
from vidldm.models.video_vae import VideoVAE
from vidldm.pipeline import VideoPipeline


def _generate(pipe: VideoPipeline, specs, steps: int | None, guidance: float | None, batch: int, images=None, captions=None,
              first: int = 0, **kwargs) -> list[np.ndarray]:
    """One clip per spec, seeded by its index in the evaluation's list (`specs` starting at index `first`: a slice of
    the row samples as the whole row does); `images` (one still per spec) animates them; `captions` (one per spec)
    replaces the specs' own."""
    captions = captions or [s.caption for s in specs]
    clips = []
    for start in range(0, len(specs), batch):
        chunk = specs[start : start + batch]
        if images is not None:
            kwargs["image"] = images[start : start + batch]
        out = pipe(captions[start : start + batch], num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                   generator=[torch.Generator().manual_seed(first + start + i) for i in range(len(chunk))], **kwargs).frames
        clips += [(f * 255).round().astype(np.uint8) for f in out]
    return clips


@torch.no_grad()
def vae_round_trip(pipe: VideoPipeline, clips: list[np.ndarray], batch: int = 8) -> list[np.ndarray]:
    """Clips `(F, H, W, 3)` uint8 -> the same clips encoded (posterior mean) and decoded by the pipeline's VAE."""
    video_vae = VideoVAE(pipe.vae, temporal_decoder=pipe.temporal_decoder)
    out = []
    for start in range(0, len(clips), batch):
        video = torch.stack([frames_to_tensor(c, *c.shape[1:3]) for c in clips[start : start + batch]])
        video = rearrange(video, "b f c h w -> b c f h w").to(pipe.device, pipe.vae.dtype)
        decoded = tensor_to_frames(video_vae.decode(video_vae.encode(video)))
        out += [(f * 255).round().astype(np.uint8) for f in decoded]
    return out


def _round_trip(clips: list[np.ndarray]) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        out = []
        for i, clip in enumerate(clips):
            write_video(clip, Path(tmp) / f"{i}.mp4", fps=8)
            out.append(read_video(Path(tmp) / f"{i}.mp4")[0])
        return out


def evaluate(pipe: VideoPipeline, n: int = 210, steps: int | None = None, guidance: float | None = None, batch: int = 8,
             animate: int = 50, temporal_end: float | None = None, temporal_smoothing: float | None = None,
             log=print) -> tuple[dict[str, dict], dict[str, float]]:
    """The table's rows and the animation row. A sampling setting left None is the model's own (its sampling.json,
    as `vidldm generate` uses it); the image-model floor row runs without temporal layers or smoothing whatever is
    given."""
    specs = evaluation_specs(n)
    rows: dict[str, dict] = {}
    t = time.perf_counter()
    real = [render_clip(s) for s in specs]
    rows["real clips (mp4 round trip)"] = score(_round_trip(real), specs)
    log(f"real clips scored ({time.perf_counter() - t:.0f}s)")
    rows["real clips through the VAE"] = score(vae_round_trip(pipe, real), specs)
    log(f"VAE round trip scored ({time.perf_counter() - t:.0f}s)")
    # Generate at the size of the clips the prompts describe (64x64 for the shapes data).
    size = dict(height=real[0].shape[1], width=real[0].shape[2], num_frames=real[0].shape[0])
    video = dict(temporal_end=temporal_end, temporal_smoothing=temporal_smoothing, **size)  # the video model's rows
    rows["video model"] = score(_generate(pipe, specs, steps, guidance, batch, **video), specs)
    log(f"video model scored ({time.perf_counter() - t:.0f}s)")
    reworded = [paraphrase(s, i) for i, s in enumerate(specs)]
    rows["video model, paraphrased prompts"] = score(
        _generate(pipe, specs, steps, guidance, batch, captions=reworded, **video), specs)
    log(f"paraphrased prompts scored ({time.perf_counter() - t:.0f}s)")
    rows["image model, frame by frame"] = score(_generate(pipe, specs, steps, guidance, batch, **IMAGE_MODEL_FLOOR, **size), specs)
    log(f"image model scored ({time.perf_counter() - t:.0f}s)")
    anim_specs = specs[:animate]
    stills = [clip[0] for clip in real[:animate]]
    anim_clips = _generate(pipe, anim_specs, steps, guidance, batch, images=stills, image_conditioning="clean", **video)
    psnrs = [first_frame_psnr(clip, still) for clip, still in zip(anim_clips, stills)]
    animation = {"first_frame_psnr_db": float(np.mean(psnrs)), **score(anim_clips, anim_specs)}
    rows["animate still (clean)"] = animation
    log(f"animation scored ({time.perf_counter() - t:.0f}s)")
    return rows, animation


def write_report(rows: dict[str, dict], animation: dict[str, float], path: Path, command: str, settings: str,
                 *, model: str) -> str:
    table = format_table(rows)
    title = "the shipped shapes model" if model == "shapes" else f"`{model}`"  # a report must not claim the wrong model
    text = (
        f"# Evaluation of {title}\n\n"
        f"Made with `{command}` ({settings}).\n\n"
        "An oracle reads each clip (the object found by colour against the background: colour, shape, "
        "centroid, area per frame) and compares it with the prompt it was made from. Smoothness is the mean "
        "absolute second difference of the centroid (px/frame², lower is smoother); size stability is the "
        "relative spread of the area in clips that should keep their size (lower is steadier).\n\n"
        f"{table}\n\n"
        f"Image animation (`image_conditioning=\"clean\"`, {animation['n']} stills): first-frame PSNR "
        f"{animation['first_frame_psnr_db']:.1f} dB, motion accuracy {100 * animation['motion_acc']:.1f}%.\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text)
    return table
