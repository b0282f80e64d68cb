"""Does resident memory stay flat over many generations in one process (a notebook, a server)?

    OMP_NUM_THREADS=1 python scripts/generate_memory.py                  # 50 clips of the shipped model
    python scripts/generate_memory.py --runs 10 --model tiny --no-write

Loads the model once (`vidldm.loading.load_pipeline`), then makes `--runs` clips with the Python API,
each with another seed and one of a few prompts, and writes each as an mp4 into a temporary folder (as a
user would; `--no-write` skips it). After each clip it prints the process's resident memory (VmRSS from
/proc/self/status). The first clips warm up allocator pools and caches, so the reference is the value
after the third; the script says whether every later value stays within `--tolerance` (5%) of it and
exits 1 if not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = (
    "a red circle moving right on a black background",
    "a blue square moving up on a white background",
    "a green triangle moving left on a grey background",
    "a yellow star standing still on a black background",
)
REFERENCE_RUN = 3  # warm-up: allocator pools, oneDNN kernel caches, tokenizer caches fill in the first runs


def resident_mib() -> float:
    """This process's resident set (VmRSS) in MiB: what is in RAM now, unlike ru_maxrss's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # the kernel reports kB
    raise RuntimeError("no VmRSS in /proc/self/status (this script needs Linux)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="clips to make (default 50)")
    parser.add_argument("--model", default="shapes", help="model to load (default: shapes, the shipped one)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed drift from the value after run 3 (default 0.05)")
    parser.add_argument("--no-write", action="store_true", help="do not write the clips (generation only)")
    args = parser.parse_args()
    if args.runs <= REFERENCE_RUN:
        parser.error(f"--runs must be more than {REFERENCE_RUN} (the first {REFERENCE_RUN} are the warm-up)")

    import torch

    from vidldm.io import write_video
    from vidldm.loading import load_pipeline

    torch.set_flush_denormal(True)  # as the CLI does
    print(f"before loading: {resident_mib():.1f} MiB", flush=True)
    pipe = load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    print(f"model '{args.model}' loaded: {resident_mib():.1f} MiB", flush=True)
    values = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            start = time.perf_counter()
            frames = pipe(PROMPTS[i % len(PROMPTS)], generator=torch.Generator().manual_seed(i), output_type="np").frames[0]
            if not args.no_write:
                write_video(frames, Path(tmp) / f"clip{i}.mp4", fps=8)
            del frames
            values.append(resident_mib())
            print(f"run {i + 1:3d}: {values[-1]:8.1f} MiB  ({time.perf_counter() - start:.1f} s)", flush=True)
    return report(values, args.tolerance)


def report(values: list[float], tolerance: float) -> int:
    reference = values[REFERENCE_RUN - 1]
    later = values[REFERENCE_RUN:]
    worst = max(later, key=lambda v: abs(v - reference))
    drift = (worst - reference) / reference
    flat = abs(drift) <= tolerance
    print(f"after run {REFERENCE_RUN}: {reference:.1f} MiB; runs {REFERENCE_RUN + 1}-{len(values)}: "
          f"min {min(later):.1f}, max {max(later):.1f}, last {values[-1]:.1f} MiB; "
          f"largest drift {100 * drift:+.1f}% -> {'flat' if flat else 'NOT flat'} (within {100 * tolerance:.0f}%)")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
