"""Latent walks (`vidldm walk`, `vidldm.walk`): stops, points, clips equal to plain generation at the stops."""

import json

import numpy as np
import pytest
import torch

from vidldm.builtins import tiny_pipeline
from vidldm.cli import main
from vidldm.errors import VidldmError
from vidldm.io import read_video
from vidldm.walk import latent_walk, lay_out, walk_points, walk_stops

SIZE = dict(num_frames=4, height=16, width=16)
FAST = ["--model", "tiny", "--frames", "4", "--steps", "2", "--height", "16", "--width", "16", "-q"]


def cli(*argv):
    return main([*map(str, argv)])


def test_stops_pair_prompts_with_seeds():
    assert walk_stops(["a", "b"], [1]) == [("a", 1), ("b", 1)]
    assert walk_stops(["a"], [1, 2, 3]) == [("a", 1), ("a", 2), ("a", 3)]
    assert walk_stops(["a", "b"], [1, 2]) == [("a", 1), ("b", 2)]
    for prompts, seeds, message in [(["a"], [1], "two stops"), (["a", "b", "c"], [1, 2], "3 prompts and 2 seeds"),
                                    ([], [1], "at least one prompt")]:
        with pytest.raises(VidldmError, match=message):
            walk_stops(prompts, seeds)


def test_points_run_from_the_first_stop_to_the_last_evenly():
    assert walk_points(2, 0) == [(0, 0.0), (0, 1.0)]
    assert walk_points(3, 1) == [(0, 0.0), (0, 0.5), (1, 0.0), (1, 0.5), (1, 1.0)]
    assert len(walk_points(4, 3)) == 3 * 4 + 1


def test_the_walk_passes_through_the_clips_generate_makes_and_moves_gradually():
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    clips = latent_walk(pipe, ["a red circle", "a blue square"], [1, 2], 3, num_inference_steps=2, **SIZE)
    assert clips.shape == (5, 4, 16, 16, 3)
    for clip, (prompt, seed) in ((clips[0], ("a red circle", 1)), (clips[-1], ("a blue square", 2))):
        plain = pipe(prompt, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(seed), **SIZE)
        assert np.abs(plain.frames[0] - clip).max() < 1e-5  # the stops are the clips generate makes
    steps = [np.abs(clips[i + 1] - clips[i]).mean() for i in range(4)]
    assert max(steps) < np.abs(clips[-1] - clips[0]).mean()  # each step smaller than the whole way


def test_layouts():
    clips = np.random.default_rng(0).random((5, 3, 4, 6, 3)).astype(np.float32)
    assert lay_out(clips, "sequence").shape == (15, 4, 6, 3)
    grid = lay_out(clips, "grid")
    assert grid.shape == (3, 8, 18, 3)  # 3 columns, 2 rows, one empty cell
    assert np.array_equal(grid[:, 4:, 6:12], clips[4]) and not grid[:, 4:, 12:].any()
    with pytest.raises(VidldmError, match="layout must be one of"):
        lay_out(clips, "spiral")


def test_cli_walk_writes_one_file_and_a_sidecar_that_replays_it(tmp_path):
    out = tmp_path / "walk.gif"
    assert cli("walk", "a red circle", "a blue square", "--seeds", "1,2", "--between", 1, *FAST, "-o", out) == 0
    frames = read_video(out)[0]
    assert frames.shape == (12, 16, 16, 3)  # three clips one after another
    side = json.loads(out.with_suffix(".json").read_text())
    assert (side["command"], side["prompt"], side["seeds"], side["between"]) == ("walk", ["a red circle", "a blue square"], "1,2", 1)
    assert cli("replay", out.with_suffix(".json"), "-o", tmp_path / "again.gif", "-q") == 0
    assert np.array_equal(read_video(tmp_path / "again.gif")[0], frames)


@pytest.mark.parametrize("argv, message", [
    (["a", "b", "c", "--seeds", "1,2"], "3 prompts and 2 seeds"),
    (["a", "--seeds", "1"], "two stops"),
    (["a", "--seeds", "1,x"], "--seeds takes whole numbers separated by commas"),
    (["a", "b", "--between", "-1"], "--between must be between 0 and 64"),
    (["0:a | 2:b", "c"], "a walk's prompts are plain prompts"),
])
def test_bad_walks_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    assert cli("walk", *argv, *FAST, "-o", tmp_path / "w.mp4") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not list(tmp_path.iterdir())
