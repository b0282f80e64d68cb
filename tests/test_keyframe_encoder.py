"""The keyframe encoder (issue 27): a SparseCtrl that `vidldm train` (stage keyframe) trains for a model, that the
model brings in its folder, that `--keyframe` uses without `--sparsectrl`, and that `vidldm eval keyframes` measures."""

import numpy as np
import pytest
import torch
from PIL import Image

from vidldm.builtin_names import own_keyframe_encoder
from vidldm.cli import main
from vidldm.control import new_keyframe_encoder
from vidldm.data.shapes import evaluation_specs, render_clip
from vidldm.errors import VidldmError
from vidldm.eval.keyframes import centroid_error, format_rows, monotone, read_rows
from vidldm.loading import load_pipeline
from vidldm.train.config import load_config
from vidldm.train.trainer import Trainer

from .test_train import moving_square, recipe, snapshot, video_folder  # noqa: F401 (a fixture)


def _call(pipe, **kw):
    return pipe("a square moving right", num_frames=4, height=16, width=16, num_inference_steps=3, output_type="np",
                generator=torch.Generator().manual_seed(0), **kw).frames[0]


def _keys():
    clip = moving_square(4)
    return dict(conditioning_frames=[clip[0], clip[3]], controlnet_frame_indices=[0, 3])


def test_a_new_keyframe_encoder_starts_as_the_model_it_was_made_from():
    pipe = load_pipeline("tiny", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    net = new_keyframe_encoder(pipe.unet, pipe.motion_adapter)
    assert net.config.use_simplified_condition_embedding and net.config.conditioning_channels == pipe.unet.config.in_channels
    for key, value in pipe.unet.down_blocks.state_dict().items():  # the UNet's encoder half, copied
        assert torch.equal(net.down_blocks.state_dict()[key], value), key
    plain = _call(pipe)
    pipe.set_controlnet(net)
    np.testing.assert_allclose(_call(pipe, **_keys()), plain, atol=1e-6)  # its zero convolutions add nothing yet


@pytest.fixture(scope="module")
def trained(tmp_path_factory, video_folder):  # noqa: F811
    tmp = tmp_path_factory.mktemp("keyframe")
    config = load_config(recipe(tmp, video_folder, stage="keyframe", train={"max_steps": 6, "learning_rate": 3e-3},
                                checkpoint={"every": 100}))
    trainer = Trainer(config)
    frozen = {name: snapshot(getattr(trainer.pipe, name)) for name in ("unet", "motion_adapter", "vae")}
    encoder_before = snapshot(trainer.stage.sparsectrl)
    trainer.train()
    return tmp / "run", trainer, frozen, encoder_before


def test_the_keyframe_stage_trains_the_encoder_alone_and_saves_it_beside_the_model(trained):
    run, trainer, frozen, encoder_before = trained
    assert {n.split(".")[0] for n, p in trainer.stage.named_parameters() if p.requires_grad} == {"sparsectrl"}
    for name, state in frozen.items():
        for key, value in getattr(trainer.pipe, name).state_dict().items():
            assert torch.equal(value, state[key]), f"{name}.{key} changed"
    after = trainer.stage.sparsectrl.state_dict()
    assert not torch.equal(after["controlnet_cond_embedding.weight"], encoder_before["controlnet_cond_embedding.weight"])
    assert (run / "sparsectrl" / "config.json").is_file()
    assert own_keyframe_encoder(str(run / "pipeline")) == run / "pipeline" / "sparsectrl"
    pipe = load_pipeline(run / "pipeline", device="cpu")
    assert pipe.controlnets == []  # the pipeline itself is unchanged: plain prompts need no keyframes
    assert not pipe.motion_adapter.config.get("sparse_frame_conditioning")  # nor does the adapter claim anything


def test_keyframe_alone_uses_the_models_own_encoder(trained, tmp_path, capsys):
    run = trained[0]
    Image.fromarray(moving_square(4)[0]).save(tmp_path / "start.png")
    Image.fromarray(moving_square(4)[3]).save(tmp_path / "end.png")
    common = ["generate", "a square moving right", "--frames", "4", "--height", "16", "--width", "16", "--steps", "2",
              "--seed", "1", "--keyframe", f"0:{tmp_path / 'start.png'}", "--keyframe", f"3:{tmp_path / 'end.png'}"]
    own = tmp_path / "own.gif"
    assert main([*common, "--model", str(run / "pipeline"), "-o", str(own)]) == 0
    given = tmp_path / "given.gif"
    assert main([*common, "--model", str(run / "pipeline"), "--sparsectrl", str(run / "sparsectrl"), "-o", str(given)]) == 0
    assert own.read_bytes() == given.read_bytes()  # the same encoder, found in the model's folder
    capsys.readouterr()
    refused = tmp_path / "refused.gif"
    assert main([*common, "--model", "tiny", "-o", str(refused)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no keyframe encoder of its own" in err[0] and "--sparsectrl" in err[0]
    assert not refused.exists()


@pytest.mark.parametrize("change, message", [
    ({"model": {"sparsectrl": "/no/such/encoder"}, "stage": "keyframe"}, "model.sparsectrl '/no/such/encoder' does not exist"),
    ({"model": {"sparsectrl": "."}}, "model.sparsectrl is the keyframe encoder the keyframe stage continues"),
    ({"stage": "keyframe", "train": {"max_known_frames": 4}}, "train.max_known_frames must be between 1 and data.num_frames - 1"),
    ({"stage": "keyframe", "train": {"keyframe_weight": 0}}, "train.keyframe_weight must be a number > 0"),
    ({"stage": "keyframe", "train": {"keyframe_weight": float("inf")}}, "train.keyframe_weight must be a number > 0"),
    ({"train": {"keyframe_weight": 4.0}}, "train.keyframe_weight is for the keyframe stage; stage is temporal"),
])
def test_keyframe_recipes_are_checked(tmp_path, video_folder, change, message):  # noqa: F811
    with pytest.raises(VidldmError, match=message):
        load_config(recipe(tmp_path, video_folder, **change))


def test_keyframe_weight_weighs_the_frames_the_encoder_is_told(trained, monkeypatch):
    """The loss is a weighted mean over frames: from the other frames' mean (weight -> 0) to the keyframes' (weight ->
    inf), monotone in between, and the plain mean at 1 (what the stage trained with before the setting existed)."""
    trainer = trained[1]
    batch = trainer.data.next()

    def loss(weight):
        monkeypatch.setattr(trainer.config.train, "keyframe_weight", weight)
        with torch.no_grad():  # the same generator: the same keyframes, noise and timesteps for every weight
            return float(trainer.stage.forward(batch, torch.Generator().manual_seed(3)))

    losses = [loss(w) for w in (1e-6, 0.5, 1.0, 4.0, 1e6)]
    assert loss(1.0) == losses[2]
    assert losses == sorted(losses) or losses == sorted(losses, reverse=True)
    assert abs(losses[0] - losses[-1]) > 1e-3 * abs(losses[2])  # keyframes and the rest are not predicted alike


def test_the_keyframe_stage_continues_a_saved_encoder(trained, tmp_path, video_folder):  # noqa: F811
    run = trained[0]
    config = load_config(recipe(tmp_path, video_folder, stage="keyframe", model={"sparsectrl": str(run / "sparsectrl")},
                                train={"max_steps": 1}))
    trainer = Trainer(config)
    saved = trained[1].stage.sparsectrl.state_dict()
    for key, value in trainer.stage.sparsectrl.state_dict().items():
        assert torch.equal(value, saved[key]), key


# ----------------------------------------------------------------------------- the eval

def test_centroid_error_and_monotone_read_what_the_clip_shows():
    clip = render_clip(evaluation_specs(20, seed=2029)[0])
    assert centroid_error(clip[0], clip[0]) == 0.0
    shifted = np.roll(clip[0], 4, axis=1)  # 4 px to the right: the background is plain, so the roll moves the object
    assert centroid_error(shifted, clip[0]) == pytest.approx(4.0, abs=0.5)
    moving = next(render_clip(s) for s in evaluation_specs(20, seed=2029) if s.motion.startswith("moving"))
    assert monotone(moving)
    assert not monotone(moving[[0, 1, 2, 3, 2, 1, 0, 15]])  # back and forth along the path


def test_read_rows_put_the_real_clips_at_the_ceiling():
    specs = evaluation_specs(6, seed=2029)
    real = [render_clip(s) for s in specs]
    row = read_rows(real, real, [s.motion.startswith("moving") for s in specs], 3.0)
    assert row["ends_within"] == 1.0 and row["first_error_px"] == 0.0 and row["monotone"] == 1.0
    swapped = read_rows(real[::-1], real, [True] * 6, 3.0)  # others' clips: their objects sit elsewhere
    assert swapped["ends_within"] < 1.0 and swapped["mean_error_px"] > 3.0
    assert "| real |" in format_rows({"real": row})


def test_eval_keyframes_with_an_untrained_encoder_matches_the_prompt_alone(tmp_path):
    from vidldm.eval.keyframes import evaluate_keyframes

    pipe = load_pipeline("tiny", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    pipe.set_controlnet(new_keyframe_encoder(pipe.unet, pipe.motion_adapter))
    rows = evaluate_keyframes(pipe, n=2, steps=2, guidance=1.0, log=lambda m: None)
    assert list(rows) == ["video model, keyframes 0 and last (SparseCtrl)", "video model, the prompt alone",
                          "image model, frame by frame (floor)", "real clips (ceiling)"]
    keyed, alone = rows["video model, keyframes 0 and last (SparseCtrl)"], rows["video model, the prompt alone"]
    assert keyed == pytest.approx(alone, nan_ok=True)  # zero convolutions: the keyframes change nothing yet
    assert pipe.controlnets  # the encoder is set again afterwards


def test_screening_runs_the_keyframe_row_alone_on_other_clips(monkeypatch):
    """scripts/screen_keyframes.py: settings are chosen on clips of another seed than the report's, keyframe row only."""
    import vidldm.eval.keyframes as keyframes

    drawn = []
    monkeypatch.setattr(keyframes, "evaluation_specs", lambda n, seed: drawn.append(seed) or evaluation_specs(n, seed))
    pipe = load_pipeline("tiny", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    pipe.set_controlnet(new_keyframe_encoder(pipe.unet, pipe.motion_adapter))
    rows = keyframes.evaluate_keyframes(pipe, n=2, steps=1, guidance=1.0, seed=2031, baselines=False, log=lambda m: None)
    assert list(rows) == ["video model, keyframes 0 and last (SparseCtrl)"] and rows[next(iter(rows))]["n"] == 2
    assert drawn == [2031] != [keyframes.HELD_OUT_SEED]


def test_eval_keyframes_needs_an_encoder(capsys):
    assert main(["eval", "keyframes", "--model", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no keyframe encoder of its own; give --sparsectrl" in err[0]


def test_the_settings_an_encoder_was_tuned_with_apply_unless_given(trained, tmp_path):
    """`sparsectrl/sampling.json`: the scale and sampling settings `--keyframe` uses with the model's own encoder; a
    flag the user gives wins, and the sidecar records what was used."""
    import json
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained[0] / "pipeline", model)
    Image.fromarray(moving_square(4)[0]).save(tmp_path / "start.png")
    (model / "sparsectrl" / "sampling.json").write_text(json.dumps({"scale": 0.5, "temporal_end": 0.5}))
    common = ["generate", "a square moving right", "--model", str(model), "--frames", "4", "--height", "16", "--width",
              "16", "--steps", "2", "--seed", "1", "--keyframe", f"0:{tmp_path / 'start.png'}"]
    assert main([*common, "-o", str(tmp_path / "tuned.gif")]) == 0
    assert json.loads((tmp_path / "tuned.json").read_text())["temporal_end"] == 0.5
    assert main([*common, "--sparsectrl", f"{model / 'sparsectrl'}:0.5", "--temporal-end", "0.5",
                 "-o", str(tmp_path / "spelled.gif")]) == 0
    assert (tmp_path / "tuned.gif").read_bytes() == (tmp_path / "spelled.gif").read_bytes()
    assert main([*common, "--temporal-end", "1", "-o", str(tmp_path / "mine.gif")]) == 0
    assert json.loads((tmp_path / "mine.json").read_text())["temporal_end"] == 1.0


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON"),
    ('{"scale": "strong"}', "scale must be a number >= 0"),
    ('{"scale": 1.5, "temporal_ends": 0.5}', "unknown sampling setting 'temporal_ends'"),
    ("[1.5]", "must hold a JSON object"),
])
def test_a_bad_encoder_settings_file_is_one_line(tmp_path, text, message):
    from vidldm.clip_run import keyframe_encoder_settings

    (tmp_path / "sampling.json").write_text(text)
    with pytest.raises(VidldmError, match=message):
        keyframe_encoder_settings(tmp_path)
    (tmp_path / "sampling.json").write_text('{"scale": 1.5, "temporal_end": 0.85}')
    assert keyframe_encoder_settings(tmp_path) == (1.5, {"temporal_end": 0.85})


def test_exact_keyframes_are_also_known_frames(trained, tmp_path, capsys):
    """`--exact-keyframes`: the keyframes also enter as known frames (the clip passes through them); the encoder's
    sampling.json gives the default, the flag wins, the sidecar records what was used and a replay follows it; an
    old sidecar without the key replays without (legacy); the flag without keyframes is one line, nothing written."""
    import json
    import shutil

    from vidldm.clip_run import keyframe_encoder_exact

    model = tmp_path / "model"
    shutil.copytree(trained[0] / "pipeline", model)
    clip = moving_square(4)
    for i in (0, 3):
        Image.fromarray(clip[i]).save(tmp_path / f"key{i}.png")
    common = ["generate", "a square moving right", "--model", str(model), "--frames", "4", "--height", "16", "--width",
              "16", "--steps", "2", "--seed", "1", "--keyframe", f"0:{tmp_path / 'key0.png'}",
              "--keyframe", f"3:{tmp_path / 'key3.png'}"]

    def made(name, *extra):
        out = tmp_path / f"{name}.gif"
        assert main([*common, *extra, "-o", str(out)]) == 0
        return json.loads(out.with_suffix(".json").read_text())["exact_keyframes"], out.read_bytes()

    steered, exact = made("steered"), made("exact", "--exact-keyframes")
    assert steered[0] is False and exact[0] is True and steered[1] != exact[1]
    (model / "sparsectrl" / "sampling.json").write_text(json.dumps({"scale": 1.0, "exact_keyframes": True}))
    assert keyframe_encoder_exact(model / "sparsectrl") is True
    default, off = made("default"), made("off", "--no-exact-keyframes")
    assert default == exact and off == steered  # scale 1 is the default scale: only the flag differs
    assert main(["replay", str(tmp_path / "steered.json"), "-o", str(tmp_path / "again.gif")]) == 0
    assert (tmp_path / "again.gif").read_bytes() == steered[1]  # recorded off: the encoder's new default does not apply
    sidecar = json.loads((tmp_path / "steered.json").read_text())
    del sidecar["exact_keyframes"]
    (tmp_path / "before.json").write_text(json.dumps(sidecar))
    assert main(["replay", str(tmp_path / "before.json"), "-o", str(tmp_path / "old.gif")]) == 0
    assert (tmp_path / "old.gif").read_bytes() == steered[1]
    capsys.readouterr()
    refused = tmp_path / "refused.gif"
    assert main([*common[:-4], "--exact-keyframes", "-o", str(refused)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--exact-keyframes makes the keyframes known frames: give --keyframe" in err[0]
    assert not refused.exists()
    (model / "sparsectrl" / "sampling.json").write_text(json.dumps({"exact_keyframes": "yes"}))
    with pytest.raises(VidldmError, match="exact_keyframes must be true or false"):
        keyframe_encoder_exact(model / "sparsectrl")


def test_eval_keyframes_exact_gives_the_keyframes_as_known_frames(monkeypatch):
    """`evaluate_keyframes(exact=True)` (`vidldm eval keyframes --exact-keyframes`): the keyframes also go in as
    known frames `{0: first, F-1: last}`, and the row says so."""
    import vidldm.eval.keyframes as keyframes

    pipe = load_pipeline("tiny", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    pipe.set_controlnet(new_keyframe_encoder(pipe.unet, pipe.motion_adapter))
    calls = []
    real_call = type(pipe).__call__
    monkeypatch.setattr(type(pipe), "__call__", lambda self, *a, **k: calls.append(k) or real_call(self, *a, **k))
    rows = keyframes.evaluate_keyframes(pipe, n=1, steps=1, guidance=1.0, baselines=False, log=lambda m: None, exact=True)
    assert list(rows) == ["video model, keyframes 0 and last (SparseCtrl and known frames)"]
    image, given = calls[0]["image"], calls[0]["conditioning_frames"]
    assert sorted(image) == [0, calls[0]["num_frames"] - 1]
    assert all(np.array_equal(image[i], g) for i, g in zip(sorted(image), given))


def test_eval_keyframes_report_names_the_flags_given(trained, tmp_path, capsys):
    """The report's command line is what was typed: the encoder's default exact_keyframes is not written as a flag;
    `eval shapes` refuses the keyframe flag."""
    report = tmp_path / "kf.md"
    common = ["eval", "keyframes", "--model", str(trained[0] / "pipeline"), "--n", "1", "--steps", "1", "-o", str(report)]
    assert main(common) == 0
    assert "--n 1`" in report.read_text() and "exact-keyframes" not in report.read_text()
    assert main([*common, "--exact-keyframes"]) == 0
    assert "--n 1 --exact-keyframes`" in report.read_text() and "keyframes also known frames" in report.read_text()
    capsys.readouterr()
    assert main(["eval", "shapes", "--model", "tiny", "--n", "1", "--exact-keyframes"]) == 2
    assert "--exact-keyframes is for vidldm eval keyframes" in capsys.readouterr().err
