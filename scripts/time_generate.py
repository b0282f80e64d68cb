"""Time `vidldm generate` end to end, as a user runs it: a new process each time (Python start, imports,
loading the model, denoising, writing the clip), with the model's default settings unless flags say otherwise.

    python scripts/time_generate.py                       # the shipped model, 5 runs
    python scripts/time_generate.py --runs 3 -- --steps 15 --model tiny

Prints each run's wall time, the part the CLI reports itself (load + denoise + write: "wrote ... in X s") and
the rest (interpreter start and imports), then the median of each. The issue's target for the shipped model
is at most 10 s on 2 CPU cores.
"""

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a red circle moving right on a black background"


def one_run(prompt: str, extra: list[str], out: Path, seed: int) -> tuple[float, float]:
    """`(wall, reported)` seconds of one `vidldm generate` process."""
    argv = [sys.executable, "-m", "vidldm", "generate", prompt, "-o", str(out), "-q", "--seed", str(seed), *extra]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(f"vidldm generate failed (exit {done.returncode}): {last}")
    found = re.search(r" in ([0-9.]+)s$", done.stdout.strip())
    if found is None:
        sys.exit(f"vidldm generate printed no time: {done.stdout.strip()!r}")
    return wall, float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="how many processes to time (default 5)")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("extra", nargs="*", help="flags for vidldm generate, after --")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            wall, reported = one_run(args.prompt, args.extra, Path(tmp) / f"clip{i}.mp4", seed=i)
            rows.append((wall, reported, wall - reported))
            print(f"run {i + 1}: {wall:.2f} s end to end = {reported:.2f} s load + denoise + write "
                  f"+ {wall - reported:.2f} s start and imports", flush=True)
    wall, reported, rest = (statistics.median(column) for column in zip(*rows))
    print(f"median of {args.runs}: {wall:.2f} s end to end ({reported:.2f} s load + denoise + write, "
          f"{rest:.2f} s start and imports); min {min(r[0] for r in rows):.2f} s, max {max(r[0] for r in rows):.2f} s")


if __name__ == "__main__":
    main()
