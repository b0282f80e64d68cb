"""Nothing the user gave is lost, and bad numbers and paths end in one line before any work (issue 30)."""

import json
import os
import stat

import numpy as np
import pytest

from vidldm.cli import main
from vidldm.io import read_video, write_video

FAST = ["--model", "tiny", "--height", "16", "--width", "16", "--steps", "1", "--frames", "2", "--seed", "0", "-q"]


def cli(*args):
    return main([str(a) for a in args])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidldm: error: "), err
    return err[0]


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "in.mp4"
    write_video(np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8), path, fps=8)
    return path


@pytest.mark.parametrize("command", ["restyle", "extend"])
def test_an_input_video_is_never_written_over(tmp_path, clip, capsys, command):
    before = clip.read_bytes()
    for flags in ([], ["--overwrite"]):
        assert cli(command, clip, "blue", *FAST, "-o", clip, *flags) == 2
        assert "never writes over an input" in one_line_error(capsys)
        assert clip.read_bytes() == before


def test_an_input_image_is_never_written_over(tmp_path, capsys):
    from PIL import Image

    still = tmp_path / "still.png"
    Image.fromarray(np.full((16, 16, 3), 99, np.uint8)).save(still)
    before = still.read_bytes()
    assert cli("animate", still, "it moves", *FAST, "-o", still, "--overwrite") == 2
    assert "never writes over an input" in one_line_error(capsys) and still.read_bytes() == before


def test_replay_never_writes_over_the_sidecar_it_replays(tmp_path, capsys):
    assert cli("generate", "a red circle", *FAST, "-o", tmp_path / "clip.gif") == 0
    capsys.readouterr()
    sidecar = tmp_path / "clip.json"
    before = sidecar.read_bytes()
    assert cli("replay", sidecar, "-o", tmp_path / "clip.mp4", "--overwrite", "-q") == 2  # clip.mp4's sidecar is clip.json
    assert "never writes over an input" in one_line_error(capsys) and sidecar.read_bytes() == before


def test_existing_outputs_need_overwrite_and_the_sidecar_follows(tmp_path, capsys):
    out = tmp_path / "clip.gif"
    assert cli("generate", "a red circle", *FAST, "-o", out) == 0
    capsys.readouterr()
    first = out.read_bytes()
    assert cli("generate", "a blue square", *FAST, "-o", out) == 2
    assert "--overwrite" in one_line_error(capsys) and out.read_bytes() == first
    assert cli("generate", "a blue square", *FAST, "-o", tmp_path / "clip.mp4") == 2  # would replace clip.json
    assert cli("generate", "a blue square", *FAST, "-o", out, "--overwrite") == 0
    assert json.loads((tmp_path / "clip.json").read_text())["prompt"] == "a blue square"


def test_without_o_the_next_free_name_is_used(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert cli("generate", "a red circle", *FAST) == 0
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == [
        "a-red-circle-0-2.json", "a-red-circle-0-2.mp4", "a-red-circle-0.json", "a-red-circle-0.mp4"]


@pytest.mark.parametrize("target, message", [
    ("/dev/null", "is a device or a pipe"),
    ("/dev/stdout", "is a device or a pipe"),
])
def test_devices_are_one_line(tmp_path, capsys, target, message):
    if not os.path.exists(target):
        pytest.skip(f"{target} does not exist here")
    assert cli("generate", "a red circle", *FAST, "-o", target) == 2
    assert message in one_line_error(capsys)


def test_a_pipe_and_a_folder_named_like_a_file_are_one_line(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.mp4")
    assert cli("generate", "a red circle", *FAST, "-o", tmp_path / "pipe.mp4") == 2
    assert "is a device or a pipe" in one_line_error(capsys)
    (tmp_path / "dir.mp4").mkdir()
    assert cli("generate", "a red circle", *FAST, "-o", tmp_path / "dir.mp4") == 2
    assert "it is a folder" in one_line_error(capsys)
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe.mp4").st_mode) and not any((tmp_path / "dir.mp4").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_folder_is_one_line(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert cli("generate", "a red circle", *FAST, "-o", folder / "x.mp4") == 2
        assert "read-only" in one_line_error(capsys)
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("flags, message", [
    (["--fps", "1e-9"], "--fps must be between 0.001 and 240, got 1e-09"),
    (["--fps", "1000"], "--fps must be between 0.001 and 240, got 1000.0"),
    (["--steps", "5000"], "num_inference_steps must be at most 1000"),
    (["--frames", "2.5"], "invalid int value"),
])
def test_numbers_out_of_range_are_one_line(tmp_path, capsys, flags, message):
    if "invalid" in message:  # argparse's own message, also one line, also exit 2
        with pytest.raises(SystemExit) as exit_info:
            cli("generate", "a red circle", *FAST, *flags, "-o", tmp_path / "x.gif")
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
        return
    assert cli("generate", "a red circle", *FAST, *flags, "-o", tmp_path / "x.gif") == 2
    assert message in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_output_written_then_read_is_the_clip(tmp_path):
    assert cli("generate", "a red circle", *FAST, "-o", tmp_path / "clip.gif") == 0
    assert read_video(tmp_path / "clip.gif")[0].shape == (2, 16, 16, 3)


@pytest.mark.parametrize("flags, message", [
    (["--height", "100000", "--width", "100000"], "needs about"),
    (["--frames", "100000000"], "Lower --frames"),
    (["--seed", str(2**70)], "the seed must be between -2**63 and 2**64-1"),
])
def test_impossible_requests_are_refused_before_sampling(tmp_path, capsys, flags, message):
    argv = [a for a in FAST if a not in ("--frames", "2")] if "--frames" in flags else FAST
    assert cli("generate", "a red circle", *argv, *flags, "-o", tmp_path / "x.gif") == 2
    assert message in one_line_error(capsys) and list(tmp_path.iterdir()) == []
