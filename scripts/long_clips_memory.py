#!/usr/bin/env python
"""Peak memory and time of long clips, with and without each long-clip and memory option; see docs/benchmarks.md.

    OMP_NUM_THREADS=1 python scripts/long_clips_memory.py                     # CPU: the shapes model, 16/64/128 frames
    python scripts/long_clips_memory.py --frames 16 64 --steps 4 --cases base decode_chunk_1
    python scripts/long_clips_memory.py --gpu                                 # GPU: SD1.5-size, offload vs diffusers'

Every case runs in a fresh process (this script again, with --case), so one case's allocator pools and
caches do not inflate the next one's peak. CPU: peak resident memory of the child (`resource.getrusage`,
ru_maxrss) and the seconds of the call. GPU: peak allocated CUDA memory (`torch.cuda.max_memory_allocated`)
of vidldm with `enable_model_cpu_offload()` (vidldm/offload.py) against diffusers' `AnimateDiffPipeline` with
its own `enable_model_cpu_offload()`, on the same random SD1.5-shaped weights (vidldm/bench/components.py),
512x512, 16 and 128 frames (diffusers' with FreeNoise windows of 16 for 128).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CPU_CASES = {  # name -> VideoPipeline keyword arguments (and "vae_tiling")
    "base": {},
    "no_free_noise": {"free_noise": False},
    "closed_loop": {"closed_loop": True},
    "decode_chunk_1": {"decode_chunk_size": 1},
    "vae_tiling": {"vae_tiling": True},
    "free_init_2": {"free_init": 2},
}


def run_cpu_case(case: dict) -> dict:
    import torch

    from vidldm.loading import load_pipeline

    torch.manual_seed(0)
    pipe = load_pipeline(case["model"], device="cpu")
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(CPU_CASES[case["name"]])
    if kwargs.pop("vae_tiling", False):
        pipe.enable_vae_tiling()
    if case["frames"] <= 16 and kwargs.get("closed_loop"):
        return {"skipped": "closed loop needs more frames than one window"}
    start = time.perf_counter()
    pipe("a red circle moving right on a black background", num_frames=case["frames"], output_type="np",
         num_inference_steps=case["steps"], generator=torch.Generator().manual_seed(0), **kwargs)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def run_gpu_case(case: dict) -> dict:
    import torch

    from vidldm.bench.components import build_components, diffusers_pipeline, initial_latents, vidldm_pipeline

    c = build_components("sd15")
    if case["side"] == "vidldm":
        pipe = vidldm_pipeline(c, "cpu", torch.float16, text_encoder=True)
    else:  # diffusers' FreeNoise takes prompts, not embeddings: both sides encode the same prompt
        pipe = diffusers_pipeline(c, "cpu", torch.float16)
        pipe.register_modules(text_encoder=_half(c.text_encoder), tokenizer=c.tokenizer)
        if case["frames"] > 16:
            pipe.enable_free_noise(context_length=16, context_stride=12)
    pipe.enable_model_cpu_offload(device="cuda")
    latents = initial_latents(c, case["frames"], 512, 512).half()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    pipe("a corgi running on the beach", latents=latents.cuda(), num_frames=case["frames"], height=512, width=512,
         num_inference_steps=case["steps"], output_type="np")
    torch.cuda.synchronize()
    return {"seconds": round(time.perf_counter() - start, 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20)}


def _half(module):
    import copy

    import torch

    return torch.nn.Module.to(copy.deepcopy(module), dtype=torch.float16)


def child(case: dict) -> dict:
    """Run `case` in a fresh Python process; its last stdout line is the JSON result."""
    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--gpu", action="store_true", help="SD1.5-size model offload against diffusers' (needs CUDA)")
    p.add_argument("--model", default="shapes", help="CPU model (default: shapes)")
    p.add_argument("--frames", type=int, nargs="+", default=[16, 64, 128])
    p.add_argument("--steps", type=int, default=20, help="denoising steps (peak memory does not depend on them)")
    p.add_argument("--cases", nargs="+", choices=list(CPU_CASES), default=list(CPU_CASES))
    args = p.parse_args()
    if args.case:
        case = json.loads(args.case)
        print(json.dumps(run_gpu_case(case) if case.get("side") else run_cpu_case(case)))
        return 0
    if args.gpu:
        print("| side | frames | peak GPU MiB | s |\n|---|---|---|---|")
        for frames in args.frames:
            for side in ("vidldm", "diffusers"):
                r = child({"side": side, "frames": frames, "steps": args.steps})
                print(f"| {side} (model offload) | {frames} | {r.get('peak_gpu_mib', r)} | {r.get('seconds', '')} |", flush=True)
        return 0
    print(f"{args.model} model, {args.steps} steps, CPU\n\n| case | frames | peak RSS MiB | s |\n|---|---|---|---|")
    for name in args.cases:
        for frames in args.frames:
            r = child({"name": name, "model": args.model, "frames": frames, "steps": args.steps})
            print(f"| {name} | {frames} | {r.get('peak_rss_mib', r.get('skipped', r))} | {r.get('seconds', '')} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
