"""The benchmark settings: what is run, on which sizes, and what each reports.

| setting    | what                                                                                   |
|------------|----------------------------------------------------------------------------------------|
| `sd15`     | SD-1.5 + AnimateDiff-v2 shapes, 512x512, 16 frames, 25 steps, CFG 7.5, fp16 and bf16:   |
|            | diffusers' `AnimateDiffPipeline` (eager, compiled UNet) vs vidldm (plain, fast paths,  |
|            | fast paths + regional compile), same weights, same starting noise, one run             |
| `tiny-cpu` | the same comparison on the tiny test models, fp32 on the CPU                           |
| `long`     | vidldm, `long_frames` (128) with context windows vs `frames` (16): time and peak memory |
| `train`    | one step of vidldm's `TemporalStage` (16 frames, 256x256), checkpointing on and off    |

Every clip starts from the same noise and the same precomputed text embeddings (text encoding is
outside every timer); the first clip of each case is warm-up (compilation included) and is
reported apart. Each case's final latents are compared with vidldm's fp32 plain path
(cosine similarity), and diffusers' eager result with vidldm's plain one (same weights).

The long and train cases themselves are in `cases.py`: on the CPU each runs in its own process
(`isolated.py`), which imports them from there, not from here.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from functools import partial

import torch

from vidldm.bench.cases import long_case, train_case
from vidldm.bench.components import (
    Components,
    build_components,
    diffusers_pipeline,
    initial_latents,
    prompt_embeddings,
    vidldm_pipeline,
)
from vidldm.bench.isolated import run_isolated
from vidldm.bench.options import DTYPES, SETTINGS, Options, defaults
from vidldm.bench.timing import (
    PeakMemory,
    cosine,
    count_flops,
    free_memory,
    machine_info,
    max_abs_diff,
    median,
    timed,
)

# ----------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def exact_fp32():
    """No TF32 while computing the fp32 reference: it is what the fast paths are held to."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Clip:
    """One pipeline (either side) set up to make the benchmark clip from fixed noise and embeddings."""

    def __init__(self, side: str, pipe, o: Options, c: Components, cond, uncond, latents, dtype):
        self.side, self.pipe, self.o = side, pipe, o
        device = torch.device(o.device)
        self.cond, self.uncond = cond.to(device, dtype), uncond.to(device, dtype)
        self.latents = latents.to(device, dtype)
        self.final: torch.Tensor | None = None

    def __call__(self, output_type: str = "np", capture: bool = False):
        o, steps = self.o, self.o.steps

        def keep_last(pipe, i, t, tensors):  # the latents after the last step are the result
            if i == steps - 1:
                self.final = tensors["latents"].float().cpu()
            return {}

        kwargs = dict(prompt_embeds=self.cond, negative_prompt_embeds=self.uncond, num_frames=o.frames,
                      height=o.height, width=o.width, num_inference_steps=steps, guidance_scale=o.guidance,
                      latents=self.latents, output_type=output_type,
                      callback_on_step_end=keep_last if capture else None)
        with torch.no_grad():
            return self.pipe(**kwargs).frames

    def unet_call(self):
        """One classifier-free-guidance UNet call `(2, C, F, h, w)`, as the loop makes it."""
        x = torch.cat([self.latents, self.latents])
        t = torch.tensor(500, device=x.device)
        context = torch.cat([self.uncond, self.cond])
        if self.side == "vidldm":
            return lambda: self.pipe.video_unet(x, t, context)
        per_frame = context.repeat_interleave(self.o.frames, dim=0)  # diffusers wants ((B F), L, D)
        return lambda: self.pipe.unet(x, t, encoder_hidden_states=per_frame).sample

    def decode_call(self):
        latents = self.latents
        if self.side == "vidldm":
            from vidldm.models.video_vae import VideoVAE

            video_vae = VideoVAE(self.pipe.vae, chunk_size=8)  # the pipeline's default decode_chunk_size
            return lambda: video_vae.decode(latents)
        return lambda: self.pipe.decode_latents(latents, 16)  # diffusers' default decode_chunk_size


# ----------------------------------------------------------------------------- sd15 / tiny-cpu

def compare(o: Options) -> dict:
    """diffusers vs vidldm on the same weights: one row per (dtype, side, variant)."""
    device = torch.device(o.device)
    torch.backends.cudnn.benchmark = o.cudnn_benchmark
    c = build_components(o.model, o.seed)
    cond, uncond = prompt_embeddings(c)
    start = initial_latents(c, o.frames, o.height, o.width, o.seed)
    result: dict = {"options": asdict(o), "cases": [], "flops": {}, "agreement": {}}

    reference = None
    if o.verify:
        with exact_fp32():
            clip = Clip("vidldm", vidldm_pipeline(c, device, torch.float32), o, c, cond, uncond, start, torch.float32)
            clip("latent", capture=True)
            reference = clip.final
        del clip
        free_memory(device)

    variants = [("diffusers", "eager"), ("vidldm", "plain"), ("vidldm", "fast")]
    if o.compile:
        variants += [("diffusers", "compile"), ("vidldm", "fast+compile")]
    for dtype_name in o.dtypes:
        finals = {}
        for side, variant in variants:
            row, final = run_case(c, o, side, variant, dtype_name, cond, uncond, start, result["flops"])
            if reference is not None:
                row["cosine_vs_fp32"] = cosine(final, reference)
            finals[(side, variant)] = final
            result["cases"].append(row)
        ours, theirs = finals[("vidldm", "plain")], finals[("diffusers", "eager")]
        result["agreement"][dtype_name] = {"cosine": cosine(ours, theirs), "max_abs_diff": max_abs_diff(ours, theirs)}
    summarize(result, o)
    return result


def run_case(c: Components, o: Options, side: str, variant: str, dtype_name: str, cond, uncond, start, flops: dict):
    """Build one side, switch its variant on, and measure: warm-up, clips, UNet step, decode, memory."""
    device, dtype = torch.device(o.device), DTYPES[dtype_name]
    pipe = (vidldm_pipeline if side == "vidldm" else diffusers_pipeline)(c, device, dtype)
    if variant == "fast":
        pipe.enable_fast_paths(fuse_qkv=True, channels_last=True)
    elif variant == "fast+compile":
        pipe.enable_fast_paths(fuse_qkv=True, channels_last=True, compile=True, compile_options=o.compile_options)
    elif variant == "compile":  # diffusers' usual recipe: the whole UNet
        pipe.unet.compile(**o.compile_options)
    clip = Clip(side, pipe, o, c, cond, uncond, start, dtype)

    warmup = timed(partial(clip, "np", capture=True), device)[0]  # partial: `clip` is deleted below
    final = clip.final
    with PeakMemory(device) as memory:
        seconds = timed(partial(clip, "np"), device, o.repeats)
    with torch.no_grad():
        unet, decode = clip.unet_call(), clip.decode_call()
        unet_s = median(timed(unet, device, o.unet_calls))
        decode_s = median(timed(decode, device, 1))
        if variant in ("eager", "plain") and f"{side}_unet_call" not in flops:
            flops[f"{side}_unet_call"] = count_flops(unet)
            flops[f"{side}_decode"] = count_flops(decode)
    row = dict(side=side, variant=variant, dtype=dtype_name, s_per_clip=median(seconds), clip_seconds=seconds,
               warmup_s=warmup, unet_s_per_step=unet_s, decode_s=decode_s,
               peak_memory_bytes=memory.peak_bytes if device.type == "cuda" else None)
    del clip, pipe, unet, decode
    if variant in ("compile", "fast+compile"):
        torch._dynamo.reset()  # free the compiled graphs; the next case compiles its own
    free_memory(device)
    return row, final


def summarize(result: dict, o: Options) -> None:
    """Ratios against diffusers in the same dtype and achieved TFLOP/s, added to each row."""
    flops = result["flops"]
    if "vidldm_unet_call" in flops:
        flops["clip"] = o.steps * flops["vidldm_unet_call"] + flops["vidldm_decode"]
    for row in result["cases"]:
        same = {(r["side"], r["variant"]): r for r in result["cases"] if r["dtype"] == row["dtype"]}
        eager = same.get(("diffusers", "eager"))
        compiled = same.get(("diffusers", "compile"))
        row["speedup_vs_diffusers_eager"] = eager["s_per_clip"] / row["s_per_clip"] if eager else None
        row["speedup_vs_diffusers_compile"] = compiled["s_per_clip"] / row["s_per_clip"] if compiled else None
        unet_flops = flops.get(f"{row['side']}_unet_call")
        row["clip_tflops_per_s"] = flops["clip"] / row["s_per_clip"] / 1e12 if "clip" in flops else None
        row["unet_tflops_per_s"] = unet_flops / row["unet_s_per_step"] / 1e12 if unet_flops else None
    if "clip" in flops:
        flops["clip_tflop"] = flops["clip"] / 1e12


# ----------------------------------------------------------------------------- long clips

def long_clip(o: Options) -> dict:
    """vidldm at `frames` and at `long_frames` with context windows: seconds per clip and peak memory.

    On CUDA both run in this process (peak allocated memory, weights included). On the CPU each
    runs in its own process and the figure is resident-memory growth during the clip.
    """
    result: dict = {"options": asdict(o), "cases": []}
    if torch.device(o.device).type == "cuda":
        c = build_components(o.model, o.seed)
        pipe = vidldm_pipeline(c, o.device, DTYPES[o.dtypes[0]])
        long_case(o, o.frames, c=c, pipe=pipe, measure=False)  # warm-up, not reported
        result["cases"] = [long_case(o, f, c=c, pipe=pipe) for f in (o.frames, o.long_frames)]
        del pipe
        free_memory(o.device)
    else:
        result["cases"] = [run_isolated("long", o, frames=f) for f in (o.frames, o.long_frames)]
    short, long = result["cases"]
    for key in ("peak_memory_bytes", "growth_bytes"):
        if short.get(key) and long.get(key) is not None:
            result[f"{key.removesuffix('_bytes')}_ratio"] = long[key] / short[key]
    return result


# ----------------------------------------------------------------------------- training step

def train(o: Options) -> dict:
    """One `temporal` training step with gradient checkpointing on and off: clips/s and peak memory."""
    result: dict = {"options": asdict(o), "cases": []}
    for checkpointing in (False, True):
        if torch.device(o.device).type == "cuda":
            result["cases"].append(train_case(o, checkpointing))
            free_memory(o.device)
        else:
            result["cases"].append(run_isolated("train", o, checkpointing=checkpointing))
    return result


# ----------------------------------------------------------------------------- entry point

RUNNERS = {"sd15": compare, "tiny-cpu": compare, "long": long_clip, "train": train}


def run(settings: list[str], **overrides) -> dict:
    """Run `settings` in order with `overrides` on top of each one's defaults; the report as a dict."""
    if not settings:
        raise ValueError(f"name at least one benchmark setting: {', '.join(SETTINGS)}")
    options = {name: defaults(name, **overrides) for name in settings}  # check everything before running
    report: dict = {"machine": None, "settings": {}}
    threads = torch.get_num_threads()
    try:
        for name, o in options.items():
            torch.set_num_threads(o.threads or threads)
            report["machine"] = report["machine"] or machine_info(o.device)
            report["settings"][name] = RUNNERS[name](o)
    finally:  # the caller's process keeps its own thread count (a test suite's runs after this one)
        torch.set_num_threads(threads)
    return report
