#!/usr/bin/env python
"""Benchmark vidldm against diffusers' AnimateDiffPipeline on the same weights; see docs/benchmarks.md.

    python scripts/benchmark.py sd15 long train --json bench.json        # on a GPU: the issue's figures
    python scripts/benchmark.py tiny-cpu long train --threads 1           # on a CPU: tiny models
    python scripts/benchmark.py sd15 --device cpu --height 64 --width 64 --frames 4 --steps 2   # smoke run

Prints a table and, with --json, writes every number (per-run seconds, FLOPs, machine) to a file.
Any option overrides the setting's default for every setting named.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vidldm import atomic


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from vidldm.bench.options import SETTINGS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("settings", nargs="+", choices=SETTINGS, help="what to run, in this order")
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    p.add_argument("--device", help="cuda or cpu (default: the setting's)")
    p.add_argument("--model", choices=["sd15", "tiny"], help="component shapes (default: the setting's)")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--frames", type=int, help="frames per clip (long: the short clip)")
    p.add_argument("--steps", type=int, help="denoising steps")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    p.add_argument("--dtypes", help="comma-separated: fp32, fp16, bf16")
    p.add_argument("--repeats", type=int, help="timed clips (or training steps) per case, after one warm-up")
    p.add_argument("--unet-calls", type=int, help="UNet calls timed for the per-step figure")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also run the compiled cases (diffusers' UNet, vidldm's regions)")
    p.add_argument("--compile-mode", help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    p.add_argument("--compile-dynamic", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile dynamic shapes (default: torch's automatic choice)")
    p.add_argument("--cudnn-benchmark", action="store_true", default=None, help="torch.backends.cudnn.benchmark on both sides")
    p.add_argument("--no-verify", dest="verify", action="store_false", default=None,
                   help="skip the fp32 reference run and cosine similarities")
    p.add_argument("--long-frames", type=int, help="frames of the long clip (default 128)")
    p.add_argument("--context-frames", type=int, help="context window length (default 16)")
    p.add_argument("--context-overlap", type=int, help="context window overlap (default 4)")
    p.add_argument("--train-frames", type=int)
    p.add_argument("--train-height", type=int)
    p.add_argument("--train-width", type=int)
    p.add_argument("--train-batch", type=int, help="default: the largest power of two that fits (CUDA), 1 (CPU)")
    p.add_argument("--train-max-batch", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from vidldm.bench import defaults, format_table, run

    overrides = {k: v for k, v in vars(args).items() if k not in ("settings", "json")}
    try:  # check every option before anything runs
        for name in args.settings:
            defaults(name, **overrides)
    except ValueError as err:  # bad options: one line, no traceback, no half-written file
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = run(args.settings, **overrides)
    print(format_table(report))
    if args.json is not None:
        atomic.write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
