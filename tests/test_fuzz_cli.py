"""Many CLI argument combinations, drawn by a seeded generator: each run ends in exit 0 with a valid clip and
sidecar, or exit 2 with one line on stderr, no traceback and no new file (issue 30)."""

import contextlib
import io
import json
import random

import pytest

from vidldm.cli import main
from vidldm.io import read_video

# Each flag's values: mostly sensible, some wrong in every way a user can be wrong.
VALUES = {
    "--frames": ["1", "2", "3", "0", "-1", "x", "2.5", "100000000"],
    # Sizes the memory check refuses are tested in test_memory.py and test_reliability.py; one that fits but is
    # huge (16 x 100000) would only be slow here.
    "--height": ["16", "24", "8", "17", "0", "-16"],
    "--width": ["16", "32", "15", "-3"],
    "--steps": ["1", "2", "0", "5000", "nan"],
    "--guidance": ["1", "1.5", "7", "0", "-1", "nan", "inf", "1e308"],
    "--guidance-rescale": ["0", "0.5", "2", "-0.1"],
    "--temporal-end": ["0", "0.5", "1", "1.5", "nan"],
    "--fps": ["8", "0.5", "0", "-1", "1e-9", "300", "inf"],
    "--seed": ["0", "7", "-1", str(2**63), str(2**64 - 1), str(2**70), "abc"],
    "--scheduler": ["ddim", "euler_a", "dpm++", "bogus"],
    "--context-overlap": ["0", "1", "-1", "99"],
    "--dtype": ["fp32", "fp64"],
    # control flags (ControlNet, SparseCtrl): alone or with missing files, each ends in one line before any model loads
    "--controlnet": ["missing.safetensors", "missing:0.5"],
    "--control": ["missing.mp4"],
    "--control-start": ["0.2", "1.5", "nan"],
    "--control-end": ["0.5", "-1"],
    "--control-preprocess": ["canny", "sobel"],
    "--sparsectrl": ["missing.ckpt"],
    "--keyframe": ["0:missing.png", "first.png"],
}
PROMPTS = ["a red circle moving right", "", "   ", "0:a red circle | 1:a blue square", "0:a | x:b", "5:a | 2:b",
           "0:a | 0:b", "99:a", "0:a |", "ratio 16:9 | wide", "0:a | 1:"]
SUFFIXES = [".gif", ".mp4", ".webp", ".png", ".txt", "/", ""]


def draw(rng: random.Random, i: int, folder) -> tuple[list[str], object]:
    flags = ["--model", "tiny", "-q", "--height", "16", "--width", "16", "--steps", "1", "--frames", "2"]
    for flag in rng.sample(sorted(VALUES), rng.randint(0, 3)):
        value = rng.choice(VALUES[flag])
        flags += [f"{flag}={value}"]  # '=': values that start with '-' stay values
    # Half the draws keep a plain prompt and a .gif, so clips that should be made are made often enough to check.
    plain = rng.random() < 0.5
    out = folder / f"clip{i}{'.gif' if plain else rng.choice(SUFFIXES)}"
    return ["generate", PROMPTS[0] if plain else rng.choice(PROMPTS), *flags, "-o", str(out)], out


def run(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return code, err.getvalue()


@pytest.mark.parametrize("seed", range(3))
def test_random_argument_combinations_end_cleanly(tmp_path, seed):
    rng = random.Random(seed)
    outcomes = {0: 0, 2: 0}
    for i in range(25):
        argv, out = draw(rng, i, tmp_path)
        before = set(tmp_path.rglob("*"))
        code, err = run(argv)
        assert code in (0, 2), (argv, code, err[-2000:])
        assert "Traceback" not in err, (argv, err[-2000:])
        outcomes[code] += 1
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("vidldm: error: "), (argv, err)
            assert set(tmp_path.rglob("*")) == before, (argv, "a failed run left files")
        else:
            frames = read_video(out)[0] if out.suffix != ".png" else None
            assert frames is None or len(frames) >= 1
            sidecar = out.with_suffix(".json") if out.suffix else out.parent / f"{out.name}.json"
            assert json.loads(sidecar.read_text())["command"] == "generate"
    assert outcomes[0] > 0 and outcomes[2] > 0  # both kinds of outcome were exercised
