"""Keyframes at any frames: in-betweening and frame-rate upsampling, and training for them (sparse known frames)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vidldm.cli import main
from vidldm.errors import VidldmError
from vidldm.io import read_video, write_video
from vidldm.train.stages import known_frame_indices

from .test_train import recipe, video_folder  # noqa: F401  (the fixture)

FAST = ["--steps", "2", "--model", "tiny", "--height", "16", "--width", "16", "-q", "--seed", "1"]


def cli(*argv):
    return main([*map(str, argv)])


def still(path, value, size=16):
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def test_sparse_known_frames_draw_every_pattern_and_never_the_whole_clip():
    g = torch.Generator().manual_seed(0)
    draws = [known_frame_indices(16, 4, True, g) for _ in range(400)]
    assert all(0 < len(d) < 16 and d == sorted(set(d)) and 0 <= d[0] and d[-1] < 16 for d in draws)
    assert [0, 15] in draws  # in-betweening's ends
    assert list(range(0, 16, 2)) in draws or list(range(1, 16, 2)) in draws  # every other frame (2x upsampling)
    assert any(d[0] > 0 and len(d) <= 4 and d not in ([0, 15],) and np.diff(d).std() > 0 for d in draws)  # anywhere
    assert sum(d == list(range(len(d))) for d in draws) > 50  # the first frames still (animation)
    first = [known_frame_indices(16, 4, False, g) for _ in range(50)]
    assert all(d == list(range(len(d))) and 1 <= len(d) <= 4 for d in first)


def test_a_sparse_recipe_trains_and_marks_the_adapter(tmp_path, video_folder):  # noqa: F811
    from vidldm.loading import load_pipeline
    from vidldm.train.config import load_config
    from vidldm.train.trainer import Trainer

    config = load_config(recipe(tmp_path, video_folder, train={"max_steps": 2, "known_frames": "sparse",
                                                                "frame_conditioning": 1.0}))
    Trainer(config).train()
    pipe = load_pipeline(tmp_path / "run" / "pipeline", device="cpu")
    assert pipe.motion_adapter.config.sparse_frame_conditioning is True
    # a declared setting, so diffusers passes it to the adapter rather than warning that it "will be ignored"
    init, unused, _ = type(pipe.motion_adapter).extract_init_dict(dict(pipe.motion_adapter.config))
    assert init["sparse_frame_conditioning"] is True and "sparse_frame_conditioning" not in unused
    assert pipe._conditioning_mode("auto", [0, 3]) == "clean"
    with pytest.raises(VidldmError, match="train.known_frames must be first or sparse"):
        load_config(recipe(tmp_path, video_folder, train={"known_frames": "middle"}))


def test_auto_conditioning_follows_what_the_adapter_learned():
    from vidldm.builtins import tiny_pipeline

    pipe = tiny_pipeline()
    assert pipe._conditioning_mode("auto", [0, 1]) == "replace"  # no frame conditioning at all
    pipe.motion_adapter.register_to_config(frame_conditioning=True)
    assert pipe._conditioning_mode("auto", [0, 1]) == "clean"  # a prefix: learned
    assert pipe._conditioning_mode("auto", [0, 7]) == "replace"  # keyframes anywhere: not learned
    assert pipe._conditioning_mode("clean", [0, 7]) == "clean"  # asked for


@pytest.mark.parametrize("mode", ["clean", "replace"])
def test_keyframes_sit_at_their_frames(mode):
    from vidldm.builtins import tiny_pipeline

    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    a, b = np.full((16, 16, 3), 30, np.uint8), np.full((16, 16, 3), 220, np.uint8)
    out = pipe("x", image={0: a, 5: b}, num_frames=6, height=16, width=16, num_inference_steps=2,
               image_conditioning=mode, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    from vidldm.models.video_vae import VideoVAE

    video = torch.from_numpy(np.stack([a, b])).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    expected = VideoVAE(pipe.vae).encode(video)
    assert torch.allclose(out[:, :, [0, 5]], expected, atol=1e-5)


def test_keyframes_come_out_as_given_with_known_pixels():
    """`known_pixels` (on unless the call or the model says otherwise): the keyframes' own pixels at their frames
    (resized as the model saw them), not their VAE round trip; off, the decoded latents as before."""
    from vidldm.builtins import tiny_pipeline

    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)

    def make(**kw):
        return pipe("x", image={0: a, 5: b}, num_frames=6, height=16, width=16, num_inference_steps=2, output_type="np",
                    generator=torch.Generator().manual_seed(0), **kw).frames[0]

    given, off = make(), make(known_pixels=False)
    assert np.array_equal((given[[0, 5]] * 255).round().astype(np.uint8), np.stack([a, b]))
    assert not np.allclose(off[[0, 5]], given[[0, 5]], atol=0.02)
    big = {0: np.kron(a, np.ones((2, 2, 1), np.uint8)), 5: np.kron(b, np.ones((2, 2, 1), np.uint8))}
    resized = pipe("x", image=big, num_frames=6, height=16, width=16, num_inference_steps=2, output_type="np",
                   generator=torch.Generator().manual_seed(0)).frames[0]
    from vidldm.frames import frames_to_tensor

    seen = (frames_to_tensor(big[0][None], 16, 16)[0].permute(1, 2, 0).numpy() + 1) / 2  # as the model saw it
    assert np.allclose(resized[0], seen, atol=1e-6)  # 32 px keyframes, resized for the 16 px clip
    with pytest.raises(VidldmError, match="known_pixels must be true or false"):
        make(known_pixels="no")


def test_bad_keyframes_are_one_line():
    from vidldm.builtins import tiny_pipeline

    pipe = tiny_pipeline()
    small, big = np.zeros((16, 16, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)
    for image, message in [({0: small, 9: small}, r"keyframe indices must be frames in \[0, 5\]"),
                           ({0: small, 5: big}, "keyframes have different sizes \\(16x16 and 32x32\\)"),
                           ({}, "non-empty"), ({"0": small}, "keyframe indices")]:
        with pytest.raises(VidldmError, match=message):
            pipe("x", image=image, num_frames=6, height=16, width=16, num_inference_steps=1)


def test_inbetween_makes_the_frames_between_two_stills(tmp_path):
    start, end = still(tmp_path / "a.png", 20), still(tmp_path / "b.png", 230)
    out = tmp_path / "ib.mp4"
    assert cli("inbetween", start, end, "it brightens", *FAST, "--frames", 6, "-o", out) == 0
    frames, fps = read_video(out)
    assert frames.shape == (6, 16, 16, 3) and fps == 8
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["start"] == str(start.resolve()) and side["end"] == str(end.resolve()) and side["frames"] == 6
    assert side["known_pixels"] is True  # the default, recorded
    again = tmp_path / "again.mp4"
    assert cli("replay", out.with_suffix(".json"), "-o", again, "-q") == 0
    assert np.array_equal(read_video(again)[0], frames)
    assert cli("inbetween", start, end, "it brightens", *FAST, "--frames", 6, "--no-known-pixels", "-o", tmp_path / "off.mp4") == 0
    assert json.loads((tmp_path / "off.json").read_text())["known_pixels"] is False


def test_interpolate_frames_raises_the_rate_and_keeps_every_input_frame_known(tmp_path):
    clip = np.stack([np.full((16, 16, 3), v, np.uint8) for v in (20, 120, 220)])
    src = write_video(clip, tmp_path / "in.mp4", fps=6)
    out = tmp_path / "up.mp4"
    assert cli("interpolate-frames", src, *FAST, "--factor", 3, "-o", out) == 0  # no prompt needed
    frames, fps = read_video(out)
    assert frames.shape == (7, 16, 16, 3) and fps == 18
    side = json.loads(out.with_suffix(".json").read_text())
    assert (side["factor"], side["fps"], side["video"]) == (3, 18.0, str(src.resolve()))
    assert cli("interpolate-frames", src, "a fade", *FAST, "--fps", 10, "-o", tmp_path / "slow.mp4") == 0
    assert read_video(tmp_path / "slow.mp4")[1] == 10


@pytest.mark.parametrize("argv, message", [
    (["inbetween", "{a}", "{missing}", "x", "--frames", "6"], "image '{missing}' does not exist"),
    (["inbetween", "{a}", "{b}", "x", "--frames", "2"], "--frames must be at least 3 for inbetween"),
    (["inbetween", "{a}", "{big}", "x", "--frames", "6"], "keyframes have different sizes"),
    (["interpolate-frames", "{one}", "--factor", "2"], "has 1 frame; interpolate-frames needs at least 2"),
    (["interpolate-frames", "{clip}", "--factor", "1"], "--factor must be between 2 and 8"),
    (["interpolate-frames", "{clip}", "--factor", "0"], "--factor must be between 2 and 8"),
    (["interpolate-frames", "{clip}", "--factor", "9"], "--factor must be between 2 and 8"),
    (["interpolate-frames", "{clip}", "--frames", "9"], "unrecognized arguments: --frames"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    paths = {"a": still(tmp_path / "a.png", 20), "b": still(tmp_path / "b.png", 200),
             "big": still(tmp_path / "big.png", 200, size=32), "missing": tmp_path / "nope.png",
             "one": write_video(np.zeros((1, 16, 16, 3), np.uint8), tmp_path / "one.mp4", fps=8),
             "clip": write_video(np.zeros((3, 16, 16, 3), np.uint8), tmp_path / "clip.mp4", fps=8)}
    argv = [a.format(**paths) for a in argv]
    before = set(tmp_path.iterdir())
    with pytest.raises(SystemExit) if "unrecognized" in message else _no_raise():
        assert cli(*argv, *FAST, "-o", tmp_path / "out.mp4") == 2
    err = capsys.readouterr().err
    assert message.format(**paths) in err and err.count("\n") == 1
    assert set(tmp_path.iterdir()) == before


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
