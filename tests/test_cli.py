"""The `vidldm` command: playable files, a sidecar that makes the clip again, one-line errors."""

import json
import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

from vidldm.cli import main
from vidldm.io import read_video, write_video

# The tiny random model keeps CLI tests fast; the shipped default model has its own tests (test_shapes_model.py).
FAST = ["--frames", "4", "--steps", "2", "--model", "tiny", "--height", "16", "--width", "16", "-q"]


def cli(*argv):
    return main([*map(str, argv)])


@pytest.fixture
def clip_file(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    return write_video(frames, tmp_path / "input.mp4", fps=8)


def test_generate_mp4_is_playable(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert cli("generate", "a red circle moving right", *FAST, "--seed", 1, "-o", out) == 0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream)]
        assert (len(frames), stream.codec_context.width, stream.codec_context.height) == (4, 16, 16)
        assert float(stream.average_rate) == 8.0
        assert stream.codec_context.name == "h264" and frames[0].format.name == "yuv420p"
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["prompt"] == "a red circle moving right" and side["seed"] == 1 and side["model"] == "tiny"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_generate_animations(tmp_path, suffix):
    out = tmp_path / f"clip{suffix}"
    assert cli("generate", "a blue square", *FAST, "--seed", 2, "-o", out) == 0
    with Image.open(out) as im:
        assert im.n_frames == 4 and im.size == (16, 16)


def test_sidecar_makes_the_same_clip_again(tmp_path):
    out = tmp_path / "clip.gif"
    assert cli("generate", "0:a red circle | 3:a blue circle", *FAST, "--scheduler", "euler_a", "--temporal-end", 0.5,
               "-o", out) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert isinstance(side["seed"], int)  # a random seed was drawn and recorded
    assert side["temporal_end"] == 0.5
    again = tmp_path / "again.gif"
    assert cli("replay", out.with_suffix(".json"), "-o", again, "-q") == 0
    assert np.array_equal(read_video(out)[0], read_video(again)[0])


def test_replay_of_a_sidecar_older_than_a_setting_uses_the_behaviour_of_its_time(tmp_path):
    """A sidecar written before temporal_end / guidance_rescale / free_init / temporal_decoder / temporal_smoothing
    were recorded replays with the temporal layers at every step, no rescale, no FreeInit, frame-by-frame decoding
    and no smoothing, not with the model's defaults today (the shapes model runs FreeInit twice and has a temporal
    decoder)."""
    out = tmp_path / "clip.gif"
    assert cli("generate", "a red circle moving right on a black background", "--frames", 4, "--steps", 2,
               "--seed", 3, "-q", "--temporal-end", 0.7, "-o", out) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert (side["temporal_end"], side["free_init"], side["temporal_decoder"]) == (0.7, 2, True)  # the shapes model decodes with its own
    for key in ("temporal_end", "guidance_rescale", "free_init", "temporal_decoder", "temporal_smoothing"):
        del side[key]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(side))
    again = tmp_path / "again.gif"
    assert cli("replay", old, "-o", again, "-q") == 0
    replayed = json.loads(again.with_suffix(".json").read_text())
    assert (replayed["temporal_end"], replayed["guidance_rescale"], replayed["free_init"]) == (1.0, 0.0, 1)
    assert replayed["temporal_decoder"] is False  # the shapes model decoded frame by frame before it shipped one
    assert replayed["temporal_smoothing"] == 0.0
    assert cli("generate", "a red circle moving right on a black background", "--frames", 4, "--steps", 2,
               "--seed", 3, "-q", "--temporal-end", 1, "--free-init", 1, "--no-temporal-decoder",
               "--temporal-smoothing", 0, "-o", tmp_path / "full.gif") == 0
    assert np.array_equal(read_video(again)[0], read_video(tmp_path / "full.gif")[0])


def test_animate_restyle_extend(tmp_path, clip_file):
    still = tmp_path / "still.png"
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(still)
    assert cli("animate", still, "it moves", *FAST, "--seed", 0, "-o", tmp_path / "a.gif") == 0
    assert cli("restyle", clip_file, "blue", "--strength", 0.5, *FAST[2:], "--seed", 0, "-o", tmp_path / "r.gif") == 0
    assert read_video(tmp_path / "r.gif")[0].shape[0] == 6  # restyle keeps the input's length
    assert cli("extend", clip_file, "more", *FAST, "--known-frames", 2, "--seed", 0, "-o", tmp_path / "e.gif") == 0
    assert read_video(tmp_path / "e.gif")[0].shape[0] == 6 + 4 - 2  # input, then the new frames


def test_info(capsys):
    assert cli("info", "tiny") == 0
    out = capsys.readouterr().out
    assert "motion adapter" in out and "up to 16 frames" in out
    assert "sampling defaults (diffusers', the model sets none): num_inference_steps 25, guidance_scale 7.5" in out


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("generate", "animate", "restyle", "extend", "replay", "info"):
        assert command in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "x", "--height", "15"], "multiple of 4 (the VAE's downsampling)"),  # the shapes default model
        (["generate", "x", "--frames", "0"], "--frames must be at least 1"),
        (["generate", "x", "--steps", "0"], "--steps must be at least 1"),
        (["generate", "x", "--temporal-end", "1.5"], "--temporal-end must be between 0 and 1"),
        (["generate", "x", "--scheduler", "bogus"], "unknown scheduler"),
        (["generate", "x", "--model", "no-such-model"], "unknown model"),
        (["animate", "missing.png", "x"], "does not exist"),
        (["animate", "{notmedia}", "x"], "cannot read"),
        (["restyle", "{notmedia}", "x"], "not a decodable video"),  # probed before sampling, for the memory check
        (["generate", "x", "-o", "{tmp}/no/such/folder/clip.mp4"], "does not exist; create it first"),
        (["generate", "x", "-o", "{tmp}/clip.avi"], "cannot write"),
        (["replay", "{tmp}/nothing.json"], "does not exist"),
        (["eval", "shapes", "--model", "tiny", "--steps", "0", "-o", "{tmp}/eval.md"], "--steps must be at least 1"),
    ],
)
def test_bad_input_one_line_no_output(tmp_path, capsys, argv, message):
    notmedia = tmp_path / "notes.png"
    notmedia.write_text("not an image")
    notvideo = tmp_path / "notes.mp4"
    notvideo.write_text("not a video")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    argv = [str(notmedia) if a == "{notmedia}" and argv[0] == "animate" else str(notvideo) if a == "{notmedia}" else a for a in argv]
    before = set(tmp_path.iterdir())
    code = main([*argv, *(["-o", str(tmp_path / "out.mp4")] if "-o" not in argv and argv[0] != "replay" else []), *(FAST[-1:] if argv[0] not in ("replay", "eval") else [])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("vidldm: error: ") and message in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert set(tmp_path.iterdir()) == before  # no partial output, no sidecar, no temp files


def test_real_process_exits_cleanly_on_bad_input(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vidldm", "generate", "x", "--steps", "0", "-o", str(tmp_path / "c.mp4")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "vidldm: error: --steps must be at least 1, got 0"
    assert "Traceback" not in proc.stderr


def test_eval_report_names_the_flags_that_remake_it(tmp_path, capsys):
    out = tmp_path / "evaluation.md"
    assert cli("eval", "shapes", "--model", "tiny", "--n", 1, "--animate", 1, "--steps", 1, "--temporal-end", 0.5,
               "--temporal-smoothing", 0.2, "-o", out) == 0
    text = out.read_text()
    assert "`vidldm eval shapes --model tiny --n 1 --animate 1 --steps 1 --temporal-end 0.5 --temporal-smoothing 0.2`" in text
    assert "temporal layers for 0.5 of the steps" in text and "latents smoothed over time (weight 0.2)" in text
    assert cli("eval", "shapes", "--model", "tiny", "--temporal-end", 2, "-o", out) == 2
    assert "--temporal-end must be between 0 and 1" in capsys.readouterr().err


def test_eval_takes_a_motion_adapter_and_its_report_names_it(tmp_path, capsys):
    """`vidldm eval --motion-adapter`: a committed adapter checkpoint is evaluated on the model without a pipeline
    folder of its own; the report's command and title name it, and a missing one is one line, nothing written."""
    from vidldm.loading import tiny_pipeline

    tiny_pipeline().motion_adapter.save_pretrained(tmp_path / "adapter")
    out = tmp_path / "evaluation.md"
    assert cli("eval", "shapes", "--model", "tiny", "--motion-adapter", tmp_path / "adapter", "--n", 1, "--animate", 1,
               "--steps", 1, "-o", out) == 0
    assert f"# Evaluation of `tiny --motion-adapter {tmp_path / 'adapter'}`" in out.read_text()
    assert f"`vidldm eval shapes --model tiny --motion-adapter {tmp_path / 'adapter'} --n 1" in out.read_text()
    missing = tmp_path / "missing.md"
    assert cli("eval", "shapes", "--model", "tiny", "--motion-adapter", tmp_path / "nope", "-o", missing) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(tmp_path / "nope") in err and not missing.exists()


def test_a_model_folder_brings_its_sampling_defaults_and_flags_win(tmp_path):
    from vidldm.loading import tiny_pipeline

    pipe = tiny_pipeline()
    pipe.set_generation_defaults(num_inference_steps=2, guidance_scale=3.0, temporal_end=0.5)
    pipe.save_pretrained(tmp_path / "model")
    small = ["--model", tmp_path / "model", "--frames", 4, "--height", 16, "--width", 16, "-q"]
    assert cli("generate", "x", *small, "-o", tmp_path / "a.mp4") == 0
    side = json.loads((tmp_path / "a.json").read_text())
    assert (side["steps"], side["guidance"], side["temporal_end"]) == (2, 3.0, 0.5)
    assert cli("generate", "x", *small, "--guidance", 5, "-o", tmp_path / "b.mp4") == 0
    side = json.loads((tmp_path / "b.json").read_text())
    assert (side["steps"], side["guidance"], side["temporal_end"]) == (2, 5.0, 0.5)
