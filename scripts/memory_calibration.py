"""Measured peak memory of a generation against `vidldm.memory`'s estimate, one fresh process per case.

    OMP_NUM_THREADS=1 python scripts/memory_calibration.py            # the table in docs/reliability.md
    python scripts/memory_calibration.py --case shapes 16 128 128     # one case

Each case runs in a new Python process: it loads the model, notes its resident memory (VmRSS), resets
the kernel's high-water mark (VmHWM, via /proc/self/clear_refs) so the loading's own peak does not count,
generates one clip with the model's own sampling settings but 4 steps (the allocator's pools grow over
the first steps and then hold: the shapes model's peak at 64x64 is 110 MiB after 2 steps, 115-129 MiB
after 20; a 128x128 clip of the tiny model takes half an hour at 25 steps on 2 busy cores), and reports
the peak.
"measured work" is that peak less the memory after loading: what the call added. The estimate of it is
`vidldm.memory.working_bytes`; `estimate_peak_bytes` adds the parameters. Also printed: `ru_maxrss`,
the process's peak over its whole life (loading included), for comparison. Linux only.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

STEPS = 4
CASES = [  # (model, frames, height, width)
    ("tiny", 16, 32, 32), ("tiny", 16, 64, 64), ("tiny", 16, 128, 128),
    ("shapes", 16, 64, 64), ("shapes", 16, 128, 128), ("shapes", 64, 64, 64), ("shapes", 16, 256, 256),
]


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def one_case(model: str, frames: int, height: int, width: int) -> dict:
    """Runs in the child process: load, reset the peak, generate, report (bytes)."""
    import torch

    from vidldm.loading import load_pipeline
    from vidldm.memory import estimate_peak_bytes, working_bytes

    torch.set_flush_denormal(True)
    before_load = status_kib("VmRSS")
    pipe = load_pipeline(model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    loaded = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
    reset_ok = status_kib("VmHWM") <= loaded + 1024
    pipe("a red circle moving right", num_frames=frames, height=height, width=width, num_inference_steps=STEPS,
         generator=torch.Generator().manual_seed(0), output_type="np")
    guidance = pipe.sampling_defaults()["guidance_scale"]
    return {
        "model": model, "frames": frames, "height": height, "width": width, "guidance": guidance,
        "runtime": before_load * 1024, "loaded": loaded * 1024, "peak": status_kib("VmHWM") * 1024, "reset_ok": reset_ok,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "est_work": working_bytes(pipe, frames, height, width, guidance=guidance),
        "est_peak": estimate_peak_bytes(pipe, frames, height, width, guidance=guidance),
    }


def run_case(case: tuple) -> dict:
    argv = [sys.executable, __file__, "--child", *map(str, case)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"case {case} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs=4, metavar=("MODEL", "FRAMES", "HEIGHT", "WIDTH"), help="one case only")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, *numbers = args.child
        print(json.dumps(one_case(model, *map(int, numbers))))
        return
    cases = [(args.case[0], *map(int, args.case[1:]))] if args.case else CASES
    print("| model | frames x H x W | after loading (MiB) | measured peak (MiB) | measured work (MiB) "
          "| estimated work (MiB) | estimate / measured | estimated peak + runtime (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for case in cases:
        r = run_case(case)
        work = r["peak"] - r["loaded"]
        note = "" if r["reset_ok"] else " (peak not reset)"
        print(f"| {r['model']} | {r['frames']}x{r['height']}x{r['width']} | {mib(r['loaded'])} | {mib(r['peak'])}{note} "
              f"| {mib(work)} | {mib(r['est_work'])} | {r['est_work'] / max(work, 1):.2f} "
              f"| {mib(r['est_peak'] + r['runtime'])} |", flush=True)


if __name__ == "__main__":
    main()
