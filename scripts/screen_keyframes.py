"""Screen keyframe-encoder settings on clips the report is not made on (issue 27).

    python scripts/screen_keyframes.py --sparsectrl vidldm/weights/shapes/sparsectrl \
        --settings "te0.85 s1.5, te1.0 s1, te0.7 s1"

Each setting is `te<temporal_end> s<keyframe scale>`; every one runs the keyframe row of `vidldm eval keyframes`
(start and end keyframes, the oracle's reading) on `--n` clips drawn with `--seed` (default 2031), never the 50
clips of the report (seed 2029) nor the training clips (seed 0). A setting is chosen here, then measured once
with `vidldm eval keyframes`, so the reported numbers are not the ones the choice was made on.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from vidldm.eval.keyframes import HELD_OUT_SEED, evaluate_keyframes, format_rows
from vidldm.loading import apply_controlnets, load_pipeline

NUMBER = r"\d+(?:\.\d*)?|\.\d+"
SETTING = re.compile(rf"te(?P<te>{NUMBER})\s+s(?P<scale>{NUMBER})")


def parse_settings(text: str) -> list[tuple[float, float]]:
    """'te0.85 s1.5, te1 s1' -> [(0.85, 1.5), (1.0, 1.0)]: (temporal_end, keyframe scale) pairs."""
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = SETTING.fullmatch(part)
        if match is None:
            raise SystemExit(f"screen_keyframes: setting '{part}' is not 'te<temporal_end> s<scale>', e.g. 'te0.85 s1.5'")
        if not 0 <= float(match["te"]) <= 1:
            raise SystemExit(f"screen_keyframes: temporal_end in '{part}' must be between 0 and 1")
        pairs.append((float(match["te"]), float(match["scale"])))
    if not pairs:
        raise SystemExit("screen_keyframes: --settings names no setting; give e.g. 'te0.85 s1.5, te1.0 s1'")
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--sparsectrl", required=True, help="the keyframe encoder to screen (a SparseCtrl folder)")
    parser.add_argument("--settings", default="te0.85 s1.5, te1.0 s1", help="comma-separated 'te<end> s<scale>'")
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--seed", type=int, default=2031)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=6.0)
    parser.add_argument("--free-init", type=int, default=None, help="FreeInit runs (default: the model's)")
    parser.add_argument("--exact-keyframes", action=argparse.BooleanOptionalAction, default=False,
                        help="also give the keyframes as known frames (generate --exact-keyframes)")
    args = parser.parse_args()
    if args.n < 1 or args.steps < 1:
        raise SystemExit("screen_keyframes: --n and --steps must be at least 1")
    if args.seed == HELD_OUT_SEED:
        raise SystemExit(f"screen_keyframes: seed {HELD_OUT_SEED} draws the report's clips; screen on others")
    pairs = parse_settings(args.settings)
    pipe = load_pipeline(args.model, device="cpu")
    apply_controlnets(pipe, sparsectrl=args.sparsectrl)
    pipe.set_progress_bar_config(disable=True)
    rows = {}
    for temporal_end, scale in pairs:
        start = time.perf_counter()
        row = evaluate_keyframes(pipe, n=args.n, steps=args.steps, guidance=args.guidance, temporal_end=temporal_end,
                                 scale=scale, seed=args.seed, baselines=False, log=lambda m: None,
                                 free_init=args.free_init, exact=args.exact_keyframes)
        name = f"te {temporal_end:g}, scale {scale:g}" + (", exact keyframes" if args.exact_keyframes else "")
        rows[name] = next(iter(row.values()))
        print(f"{name}: {rows[name]} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    print(f"{args.sparsectrl}: {args.n} clips of make-shapes seed {args.seed}\n")
    print(format_rows(rows))


if __name__ == "__main__":
    main()
