"""Sample part of a `vidldm eval shapes` row with the seeds the whole row gives it, and keep the clips.

    python scripts/eval_subset.py --rows plain --start 84 --end 210 --motion-adapter runs/x/motion_adapter \
        --save runs/x-plain-84-210.npz

A 210-prompt row takes about 40 minutes on the 2-core CPU; this samples prompts [start, end) of it with the seeds the
full row gives them (each prompt's index in the row, `eval.report._generate`), at the model's defaults, so slices
sampled in different sessions or on different cores pool into the row (pool the saved clips with `--score`, or the
printed means weighted by n). Batches start at --start, so a slice that does not start at a multiple of 8 batches
its clips apart from the row's: float rounding only, the seeds are the same. `--rows para` is the paraphrased row
(`vidldm.eval.paraphrase`). Prints the oracle's scores (`vidldm.eval.shapes.score`) as JSON; `--save` writes the
clips `(N, F, H, W, 3)` uint8 and their indices.
`--score A.npz B.npz ...` scores saved slices together instead of sampling.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from vidldm.data.shapes import DEFAULT_IMAGE_SIZE, DEFAULT_NUM_FRAMES
from vidldm.eval.paraphrase import paraphrase
from vidldm.eval.report import _generate, evaluation_specs
from vidldm.eval.shapes import score

ROW = 210  # the prompts of a full row; a slice's seeds are its indices there


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--motion-adapter", help="sample with this adapter instead of the model's own")
    parser.add_argument("--rows", choices=("plain", "para"), default="plain")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--end", type=int, default=ROW)
    parser.add_argument("--batch", type=int, default=8, help="clips per call (default 8, as the row)")
    parser.add_argument("--save", help="write the clips and their indices to this .npz")
    parser.add_argument("--score", nargs="+", metavar="NPZ", help="score saved slices (same --rows) instead of sampling")
    args = parser.parse_args()
    specs = evaluation_specs(ROW)
    if args.score:
        saved = [np.load(path) for path in args.score]
        clips = [clip for s in saved for clip in s["clips"]]
        index = [int(i) for s in saved for i in s["index"]]
        if len(set(index)) < len(index):
            parser.error("the saved slices overlap: each prompt would count twice")
        print(json.dumps(score(clips, [specs[i] for i in index])))
        return
    if not 0 <= args.start < args.end <= ROW:
        parser.error(f"need 0 <= --start < --end <= {ROW}")
    torch.set_flush_denormal(True)
    from vidldm.loading import load_pipeline

    pipe = load_pipeline(args.model, args.motion_adapter)
    pipe.set_progress_bar_config(disable=True)
    part = specs[args.start : args.end]
    captions = [paraphrase(s, args.start + i) for i, s in enumerate(part)] if args.rows == "para" else None
    clips = _generate(pipe, part, None, None, args.batch, captions=captions, first=args.start,
                      height=DEFAULT_IMAGE_SIZE, width=DEFAULT_IMAGE_SIZE, num_frames=DEFAULT_NUM_FRAMES)  # the clips' size
    if args.save:
        np.savez_compressed(args.save, clips=np.stack(clips), index=np.arange(args.start, args.end))
    print(json.dumps(score(clips, part)))


if __name__ == "__main__":
    main()
