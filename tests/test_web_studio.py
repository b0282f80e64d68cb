"""The studio's parts in-process (no server, no browser): the form against the CLI's flags, uploads, replay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")  # tests/test_web.py fails in CI where it is missing

from vidldm import sampling_settings as settings  # noqa: E402
from vidldm.errors import VidldmError  # noqa: E402
from vidldm.io import read_video, write_clip  # noqa: E402
from vidldm.web import build_app, uploads  # noqa: E402
from vidldm.web.form import _SERVER_GROUPS, form_settings  # noqa: E402
from vidldm.web.studio import Studio  # noqa: E402

FAST = {"num_frames": 3, "height": 16, "width": 16, "num_inference_steps": 2}


def _values(mode: str, **given) -> list:
    return [{**FAST, **given}.get(s.name) for s in form_settings(mode)]


def _cli_flags(mode: str) -> set[str]:
    from vidldm.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[mode]
    # the server's own: the model and what loads with it (LoRAs, IP-Adapters), and how it was loaded (offload)
    model_flags = {s.flag for s in settings.SETTINGS
                   if s.group in _SERVER_GROUPS or (s.group == "memory" and not s.to_pipeline)}
    longest = [max((o for o in a.option_strings if not o.startswith("--no-")), key=len)
               for a in sub._actions if a.option_strings]  # `--free-noise`, not its `--no-free-noise` form
    return set(longest) - model_flags - {
        "--help", "--output", "--quiet", "--overwrite"}  # the server's model; outputs are the studio's own


def test_every_cli_setting_of_each_mode_is_in_its_tab_with_the_models_default(pipe, tmp_path):
    tuned = pipe.with_parts()
    tuned.set_generation_defaults(num_inference_steps=7, guidance_scale=3.0, temporal_end=0.5)
    app = build_app(tuned, tmp_path)
    fields = {c["props"].get("elem_id"): c["props"] for c in app.config["components"]}
    for mode in settings.MODES:
        flags = _cli_flags(mode)
        assert flags and {f"{mode}-{settings.BY_KEY[f.lstrip('-').replace('-', '_')].key}" for f in flags} <= set(fields)
    assert (fields["generate-steps"]["value"], fields["generate-guidance"]["value"]) == (7, 3.0)
    assert fields["restyle-temporal_end"]["value"] == 0.5 and fields["restyle-strength"]["value"] == 0.6
    assert fields["generate-frames"]["value"] == 16 and fields["generate-seed"]["value"] == ""  # blank: random


def test_a_clip_replays_from_the_gallery_the_same(pipe, tmp_path):
    studio = Studio(pipe, tmp_path, {"model": "tiny"})
    first = studio.make("generate", "0:a red circle | 2:a blue circle", None, _values("generate", seed="5"))
    again = studio.replay(first)
    assert first.mp4.name.startswith("0001-") and again.mp4.name.startswith("0002-")
    np.testing.assert_array_equal(read_video(first.mp4)[0], read_video(again.mp4)[0])
    a, b = json.loads(first.sidecar.read_text()), json.loads(again.sidecar.read_text())
    assert {**a, "output": None} == {**b, "output": None} and a["seed"] == 5 and a["model"] == "tiny"
    assert [c.mp4 for c in Studio(pipe, tmp_path).clips] == [first.mp4, again.mp4]  # a restarted server lists them


def test_inbetween_and_interpolate_frames_take_their_uploads_and_replay(pipe, tmp_path):
    start, end = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(np.full((16, 16, 3), 20, np.uint8)).save(start)
    Image.fromarray(np.full((16, 16, 3), 220, np.uint8)).save(end)
    studio = Studio(pipe, tmp_path / "out")
    clip = studio.make("inbetween", "it brightens", [str(start), str(end)], _values("inbetween", seed="3"))
    saved = clip.settings()
    assert Path(saved["start"]).read_bytes() == start.read_bytes() and Path(saved["end"]).read_bytes() == end.read_bytes()
    np.testing.assert_array_equal(read_video(studio.replay(clip).mp4)[0], read_video(clip.mp4)[0])
    source = write_clip(np.stack([np.full((16, 16, 3), v, np.uint8) for v in (0, 250)]), tmp_path / "in.mp4", fps=4)
    up = studio.make("interpolate-frames", "", [str(source)], _values("interpolate-frames", seed="1", factor=3))
    frames, fps = read_video(up.mp4)
    assert len(frames) == 4 and fps == 12  # no prompt needed; the rate rises with the factor
    with pytest.raises(VidldmError, match="upload a still image first"):
        studio.make("inbetween", "x", [str(start), None], _values("inbetween"))


def test_animate_keeps_a_copy_of_the_still_that_the_sidecar_names(pipe, tmp_path):
    still = tmp_path / "still.png"
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(still)
    studio = Studio(pipe, tmp_path / "out")
    clip = studio.make("animate", "it moves", str(still), _values("animate", seed="1"))
    saved = clip.settings()
    assert Path(saved["image"]).parent == studio.output_dir / "inputs"
    assert Path(saved["image"]).read_bytes() == still.read_bytes()


@pytest.mark.parametrize("name, content, message", [
    ("still.txt", b"hello", "'still.txt' is not a supported image type; upload one of .png, .jpg"),
    ("still.png", b"not a png", "'still.png' could not be read as an image; upload a .png"),
])
def test_bad_stills_are_refused_in_one_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(VidldmError, match="^" + message.replace(".", r"\.")):
        uploads.check_upload(str(tmp_path / name), "image")


def test_uploads_are_limited_in_size_and_frames(tmp_path, monkeypatch):
    clip = tmp_path / "clip.mp4"
    write_clip(np.zeros((6, 16, 16, 3), np.uint8), clip, 8)
    assert uploads.check_upload(str(clip), "video") == str(clip)
    monkeypatch.setattr(uploads, "MAX_VIDEO_FRAMES", 5)
    with pytest.raises(VidldmError, match="^'clip.mp4' has 6 frames; upload a clip of 1 to 5 frames$"):
        uploads.check_upload(str(clip), "video")
    monkeypatch.setattr(uploads, "MAX_UPLOAD_MB", 0)
    with pytest.raises(VidldmError, match="uploads are limited to 0 MB"):
        uploads.check_upload(str(clip), "video")
    with pytest.raises(VidldmError, match="^upload a video first$"):
        uploads.check_upload(None, "video")


def test_form_mistakes_are_the_cli_checks(pipe, tmp_path):
    studio = Studio(pipe, tmp_path)
    with pytest.raises(VidldmError, match="^--frames must be at least 1, got 0$"):
        studio.make("generate", "a red circle", None, _values("generate", num_frames=0))
    with pytest.raises(VidldmError, match="^seed must be a number, got 'abc'$"):
        studio.make("generate", "a red circle", None, _values("generate", seed="abc"))
    with pytest.raises(VidldmError, match="^type a prompt first$"):
        studio.make("generate", "  ", None, _values("generate"))
    assert list(tmp_path.iterdir()) == []


def test_the_cli_imports_gradio_only_to_serve():
    code = "import sys, vidldm.cli as c; c.build_parser().parse_args(['generate', 'x']); print('gradio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_restyle_and_extend_take_an_uploaded_clip_and_report_each_step(pipe, tmp_path):
    clip = tmp_path / "in.mp4"
    write_clip(np.full((4, 16, 16, 3), 90, np.uint8), clip, 8)
    studio, steps = Studio(pipe, tmp_path / "out"), []
    restyled = studio.make("restyle", "blue", str(clip), _values("restyle", num_frames=None, strength=0.5, seed="2"),
                           on_step=lambda done, total: steps.append((done, total)))
    assert read_video(restyled.mp4)[0].shape[0] == 4 and steps == [(1, 1)]  # strength 0.5 of 2 steps: one runs
    steps.clear()
    extended = studio.make("extend", "on", str(clip), _values("extend", num_frames=3, num_known_frames=2, seed="2"),
                           on_step=lambda done, total: steps.append((done, total)))
    assert read_video(extended.mp4)[0].shape[0] == 4 + 3 - 2 and steps == [(1, 2), (2, 2)]


@pytest.fixture(scope="module")
def keyframe_encoder(pipe, tmp_path_factory):
    """A keyframe encoder for the tiny model, saved as a folder; random, so its keyframes change the clip."""
    from vidldm.control import new_keyframe_encoder
    from vidldm.models.tiny import randomize_

    folder = tmp_path_factory.mktemp("encoder") / "sparsectrl"
    randomize_(new_keyframe_encoder(pipe.unet, pipe.motion_adapter), std=0.05, seed=3).save_pretrained(folder)
    return folder


def _stills(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(np.full((16, 16, 3), 30, np.uint8)).save(a)
    Image.fromarray(np.full((16, 16, 3), 230, np.uint8)).save(b)
    return str(a), str(b)


def test_generate_takes_keyframes_through_the_servers_sparsectrl_and_replays(pipe, tmp_path, keyframe_encoder):
    a, b = _stills(tmp_path)
    studio = Studio(pipe, tmp_path / "out", {"model": "tiny", "sparsectrl": str(keyframe_encoder)})
    keyed = studio.make("generate", "a circle", None, _values("generate", seed="4"), keyframes=[("0", a), ("", b)])
    saved = keyed.settings()
    assert [spec.split(":")[0] for spec in saved["keyframe"]] == ["0", "2"]  # blank: the last of the 3 frames
    assert Path(saved["keyframe"][1].split(":", 1)[1]).read_bytes() == Path(b).read_bytes()  # a kept copy
    assert pipe.controlnets == []  # set for the keyframed clip only
    np.testing.assert_array_equal(read_video(studio.replay(keyed).mp4)[0], read_video(keyed.mp4)[0])
    plain = studio.make("generate", "a circle", None, _values("generate", seed="4"))
    alone = Studio(pipe, tmp_path / "alone", {"model": "tiny"})
    assert alone.keyframe_encoder is None and studio.keyframe_encoder is not None
    np.testing.assert_array_equal(read_video(plain.mp4)[0], read_video(alone.make(
        "generate", "a circle", None, _values("generate", seed="4")).mp4)[0])  # no keyframes: the encoder is off
    assert np.abs(read_video(plain.mp4)[0].astype(int) - read_video(keyed.mp4)[0]).max() > 0
    with pytest.raises(VidldmError, match="^this model has no keyframe encoder; serve it with --sparsectrl PATH"):
        alone.make("generate", "a circle", None, _values("generate"), keyframes=[("0", a)])
    made = sorted(studio.output_dir.rglob("*"))
    for mode, slots, message in (("generate", [("x", a)], "^a keyframe's frame must be a whole number from 0"),
                                 ("generate", [("0", a), ("0", b)], "^two keyframes on frame 0; give each frame one keyframe$"),
                                 ("generate", [("7", a)], r"^keyframe indices must be frames in \[0, 2\], got 7$"),
                                 ("animate", [("0", a)], "^keyframes are for the generate tab")):
        with pytest.raises(VidldmError, match=message):
            studio.make(mode, "a circle", a, _values(mode), keyframes=slots)
    assert pipe.controlnets == [] and sorted(studio.output_dir.rglob("*")) == made  # refused before any file is kept


def _edited(clip, tmp_path, **changes):
    """A copy of `clip` in a new folder with its sidecar's settings changed, as a Clip of that folder."""
    import json
    import shutil

    folder = tmp_path / f"edited{len(list(tmp_path.glob('edited*')))}"
    folder.mkdir()
    for path in (clip.mp4, clip.gif, clip.sidecar):
        shutil.copy(path, folder / path.name)
    saved = json.loads(clip.sidecar.read_text())
    saved.update(changes)
    (folder / clip.sidecar.name).write_text(json.dumps(saved))
    return type(clip)(folder / clip.mp4.name, folder / clip.gif.name, folder / clip.sidecar.name)


def test_replay_refuses_what_the_studio_would_remake_otherwise(pipe, tmp_path, keyframe_encoder):
    """A sidecar made with control the studio does not take, or keyframes through another encoder, is one line
    that points to `vidldm replay`, never a different clip."""
    a, b = _stills(tmp_path)
    studio = Studio(pipe, tmp_path / "out", {"model": "tiny", "sparsectrl": str(keyframe_encoder)})
    keyed = studio.make("generate", "a circle", None, _values("generate", seed="4"), keyframes=[("0", a)])
    plain = studio.make("generate", "a circle", None, _values("generate", seed="4"))
    for clip, changes, message in (
            (plain, {"controlnet": ["cn:1"], "control": ["c.mp4"]}, "^this clip was made with --controlnet, which "),
            (plain, {"ip_adapter": ["ip.bin"]}, "^this clip was made with --ip-adapter, which the studio does not"),
            (keyed, {"sparsectrl": "other"}, "^this clip's keyframes went through other, this server's go through "),
            (keyed, {"command": "animate", "image": a}, "^this animate clip has keyframes, which the studio takes in ")):
        with pytest.raises(VidldmError, match=message + ".*remake it with `vidldm replay "):
            studio.replay(_edited(clip, tmp_path, **changes))


def test_the_models_own_encoder_brings_its_tuned_settings_where_the_form_keeps_the_defaults(pipe, tmp_path,
                                                                                          keyframe_encoder):
    import shutil

    from vidldm.loading import load_pipeline

    model = tmp_path / "model"
    pipe.save_pretrained(model)
    shutil.copytree(keyframe_encoder, model / "sparsectrl")
    (model / "sparsectrl" / "sampling.json").write_text('{"scale": 1.5, "temporal_end": 0.85}')
    own = load_pipeline(model, device="cpu")
    own.set_progress_bar_config(disable=True)
    studio = Studio(own, tmp_path / "out", {"model": str(model)})
    a, b = _stills(tmp_path)
    at_default = own.sampling_defaults()["temporal_end"]  # what the form shows and sends back untouched
    assert at_default != 0.85
    keyed = studio.make("generate", "a circle", None, _values("generate", seed="1", temporal_end=at_default),
                        keyframes=[("0", a), ("2", b)])
    assert keyed.settings()["temporal_end"] == 0.85 and "sparsectrl" not in keyed.settings()
    # a replay remakes what the sidecar says, even a value at the model's default (the CLI's --temporal-end 1)
    replayed = studio.replay(_edited(keyed, tmp_path, temporal_end=at_default))
    assert replayed.settings()["temporal_end"] == at_default
    chosen = studio.make("generate", "a circle", None, _values("generate", seed="1", temporal_end=0.5),
                         keyframes=[("0", a)])
    assert chosen.settings()["temporal_end"] == 0.5  # a value the visitor chose stays


def test_a_bad_keyframe_encoder_is_one_line_naming_the_flag(pipe, tmp_path):
    broken = tmp_path / "enc"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(VidldmError, match=f"^--sparsectrl '{broken}': "):
        Studio(pipe, tmp_path / "out", {"model": "tiny", "sparsectrl": str(broken)})
