"""The shapes oracle: reads rendered and encoded clips, detects absence, scores systems."""

import dataclasses
import math

import numpy as np
import pytest

from vidldm.data.shapes import BACKGROUNDS, evaluation_specs, random_spec, render_clip, render_frame
from vidldm.errors import VidldmError
from vidldm.eval.shapes import (
    IMAGE_MODEL_FLOOR,
    analyse_clip,
    analyse_frame,
    first_frame_psnr,
    format_table,
    score,
)
from vidldm.io import read_video, write_video


@pytest.fixture(scope="module")
def rendered():
    specs = evaluation_specs()[:60]
    return specs, [render_clip(s) for s in specs]


def accuracies(specs, clips):
    readings = [analyse_clip(c) for c in clips]
    return {
        field: np.mean([getattr(r, field) == getattr(s, field) for r, s in zip(readings, specs)])
        for field in ("colour", "shape", "motion", "background")
    }


def test_oracle_reads_rendered_clips(rendered):
    acc = accuracies(*rendered)
    assert acc["colour"] >= 0.95 and acc["motion"] >= 0.95 and acc["background"] >= 0.95
    assert acc["shape"] >= 0.90


def test_oracle_reads_clips_after_mp4_round_trip(tmp_path):
    # The first 7 specs hold every motion, every shape and 7 of the 8 colours.
    specs = evaluation_specs()[:7]
    decoded = []
    for i, spec in enumerate(specs):
        write_video(render_clip(spec), tmp_path / f"{i}.mp4", 8)
        decoded.append(read_video(tmp_path / f"{i}.mp4")[0])
    acc = accuracies(specs, decoded)
    assert all(value == 1.0 for value in acc.values()), acc


def test_frame_obs_matches_spec():
    spec = random_spec(
        np.random.default_rng(0), shape="square", colour="blue", background="gray", motion="standing still"
    )
    obs = analyse_frame(render_frame(spec, 0))
    assert obs.present and (obs.colour, obs.shape, obs.background) == ("blue", "square", "gray")
    np.testing.assert_allclose(obs.centroid, (spec.x, spec.y), atol=0.05)
    assert obs.area == pytest.approx(spec.size**2, rel=0.02)


def test_motion_direction_follows_image_axes():
    rng = np.random.default_rng(1)
    up = analyse_clip(render_clip(random_spec(rng, motion="moving up")))
    assert up.motion == "moving up" and up.displacement[1] < -20  # y decreases going up
    grow = analyse_clip(render_clip(random_spec(rng, motion="growing")))
    assert grow.motion == "growing" and grow.area_ratio > 1.5
    assert math.isnan(grow.size_stability)


def test_absence_is_detected():
    blank = np.full((64, 64, 3), BACKGROUNDS["gray"], np.uint8)
    obs = analyse_frame(blank)
    assert not obs.present and obs.colour is None and obs.shape is None and obs.background == "gray"
    spec = random_spec(np.random.default_rng(2), background="gray", motion="moving right")
    clip = render_clip(spec)
    assert analyse_clip(clip).persistent
    clip[7] = blank
    reading = analyse_clip(clip)
    assert not reading.persistent
    assert reading.motion == "moving right"  # one missing frame does not hide the motion
    assert score([clip], [spec])["persistence"] == 0.0


def test_oracle_ignores_speckles():
    spec = random_spec(np.random.default_rng(3), colour="red", shape="circle", background="black")
    frame = render_frame(spec, 0)
    clean = analyse_frame(frame)
    noisy = frame.copy()
    noisy[2, 60] = noisy[60, 3] = (255, 255, 0)  # isolated bright pixels, away from the object
    obs = analyse_frame(noisy)
    assert (obs.colour, obs.shape) == ("red", "circle")
    np.testing.assert_allclose(obs.centroid, clean.centroid, atol=1e-6)


def test_jitter_scores_worse_smoothness():
    spec = random_spec(np.random.default_rng(4), motion="moving right", background="black")
    jitter = np.random.default_rng(5).uniform(-2, 2, size=(16, 2))
    jittery = np.stack(
        [
            render_frame(dataclasses.replace(spec, x=spec.x + dx, y=spec.y + dy), t)
            for t, (dx, dy) in enumerate(jitter)
        ]
    )
    smooth, rough = analyse_clip(render_clip(spec)), analyse_clip(jittery)
    assert smooth.smoothness < 0.2
    assert rough.smoothness > smooth.smoothness + 1.0


def test_size_stability_flags_flicker():
    spec = random_spec(np.random.default_rng(6), motion="standing still")
    steady = render_clip(spec)
    flicker = np.stack(
        [
            render_frame(dataclasses.replace(spec, size=spec.size * (1.2 if t % 2 else 0.8)), t)
            for t in range(16)
        ]
    )
    assert analyse_clip(steady).size_stability < 0.01
    assert analyse_clip(flicker).size_stability > 0.2


def test_score_and_format_table(rendered):
    specs, clips = rendered[0][:14], rendered[1][:14]
    real = score(clips, specs)
    assert set(real) == {
        "colour_acc",
        "shape_acc",
        "motion_acc",
        "persistence",
        "smoothness",
        "size_stability",
        "n",
    }
    assert real["n"] == 14 and real["colour_acc"] == real["motion_acc"] == real["persistence"] == 1.0
    # Frame-by-frame "model": every frame is the first one, so nothing moves or grows.
    frozen = [np.repeat(c[:1], len(c), axis=0) for c in clips]
    still = score(frozen, specs)
    assert still["motion_acc"] == pytest.approx(sum(s.motion == "standing still" for s in specs) / 14)
    assert still["smoothness"] == pytest.approx(0.0, abs=1e-9)

    table = format_table(
        {"real clips": real, "image model frame by frame": still, "empty": {"n": 0, "smoothness": math.nan}}
    )
    lines = table.splitlines()
    assert len(lines) == 5 and lines[0].startswith("| system | n | colour | shape | motion | persistence |")
    assert lines[2].startswith("| real clips | 14 | 100.0% |")
    assert f"{real['smoothness']:.2f}" in lines[2]
    assert lines[4].count("n/a") == 6

    with pytest.raises(VidldmError, match="one clip per spec"):
        score(clips[:2], specs[:3])


def test_first_frame_psnr():
    image = render_frame(random_spec(np.random.default_rng(7)), 0)
    clip = np.repeat(image[None], 4, axis=0)
    assert first_frame_psnr(clip, image) == math.inf
    shifted = clip.astype(np.int16)
    shifted[0] += 10
    assert first_frame_psnr(np.clip(shifted, 0, 255).astype(np.uint8), image) == pytest.approx(28.13, abs=0.1)
    with pytest.raises(VidldmError, match="resize"):
        first_frame_psnr(clip, image[:32])


def test_bad_frame_layout_is_refused():
    with pytest.raises(VidldmError, match=r"\(H, W, 3\)"):
        analyse_frame(np.zeros((64, 64), np.uint8))


def test_evaluation_report_has_ceilings_floor_and_animation(pipe, tmp_path):
    """`vidldm eval shapes` end to end on the tiny random model: every row is there and well formed,
    the real clips read perfectly, and a random model scores far below them."""
    from pathlib import Path

    from vidldm.eval.report import evaluate, write_report

    rows, animation = evaluate(pipe, n=3, steps=2, guidance=2.0, batch=3, animate=1, log=lambda _: None)
    assert list(rows) == ["real clips (mp4 round trip)", "real clips through the VAE", "video model",
                          "video model, paraphrased prompts", "image model, frame by frame", "animate still (clean)"]
    real = rows["real clips (mp4 round trip)"]
    assert real["colour_acc"] == real["shape_acc"] == real["motion_acc"] == 1.0
    assert rows["video model"]["colour_acc"] < 1.0  # noise from a random model is not a red circle
    assert animation["n"] == 1 and math.isfinite(animation["first_frame_psnr_db"])
    path = Path(tmp_path) / "evaluation.md"
    table = write_report(rows, animation, path, "vidldm eval shapes --model tiny", "2 steps", model="tiny")
    assert "real clips through the VAE" in table and "first-frame PSNR" in path.read_text()
    assert path.read_text().startswith("# Evaluation of `tiny`")  # not "the shipped shapes model"


def test_the_evals_sampling_flags_reach_the_video_rows_and_not_the_floor(pipe, monkeypatch):
    """`--temporal-end` and `--temporal-smoothing` go to every video-model row (prompts, paraphrases, stills);
    the image-model floor keeps its own settings (no temporal layers, no smoothing)."""
    import vidldm.eval.report as report

    calls = []

    def fake_generate(pipe, specs, steps, guidance, batch, images=None, captions=None, **kwargs):
        calls.append(kwargs)
        return [np.zeros((16, 64, 64, 3), np.uint8) for _ in specs]

    monkeypatch.setattr(report, "_generate", fake_generate)
    report.evaluate(pipe, n=2, steps=1, animate=1, temporal_end=0.5, temporal_smoothing=0.2, log=lambda _: None)
    video = [c for c in calls if c["temporal_smoothing"] == 0.2]
    assert len(video) == 3 and all(c["temporal_end"] == 0.5 for c in video)
    assert [c for c in calls if c not in video] == [{**IMAGE_MODEL_FLOOR, "height": 64, "width": 64, "num_frames": 16}]


def test_paraphrases_are_held_out_and_keep_the_clip():
    """Every held-out wording names the spec's colour, shape and background, none of the training motion
    phrases, and no training caption; the 210 evaluation prompts meet every synonym and sentence frame."""
    from vidldm.data.shapes import COLOURS, MOTIONS, SHAPES
    from vidldm.eval.paraphrase import FRAMES, SYNONYMS, paraphrase

    specs = evaluation_specs(210)
    worded = [paraphrase(s, i) for i, s in enumerate(specs)]
    training = {f"a {c} {s} {m} on a {b} background" for c in COLOURS for s in SHAPES for m in MOTIONS for b in BACKGROUNDS}
    for spec, text in zip(specs, worded):
        assert text not in training
        assert not any(m in text for m in MOTIONS)
        assert f"{spec.colour} {spec.shape}" in text and spec.background in text
    for motion, words in SYNONYMS.items():
        said = [t for s, t in zip(specs, worded) if s.motion == motion]
        assert all(any(w in t for t in said) for w in words), motion
    assert all(any(f.split("{")[0] in t or f.startswith("a {colour}") for t in worded) for f in FRAMES)
    assert len({(t.split(" ")[0], t.split(" ")[-1]) for t in worded}) >= 3  # the frames differ in their ends


@pytest.mark.parametrize("wordings", ["varied", "rich"])
def test_training_wordings_share_nothing_with_the_held_out_ones(wordings):
    """`make-shapes --wordings varied|rich` may train on other words, but never on the evaluation's: no sentence
    frame in common, and no word of a held-out synonym except those of the fixed phrases ("left", "still",
    "moving"), nor a form of one (a held-out word as the start of a training word: "leftward" in "leftwards")."""
    from vidldm.data.shapes import MOTIONS
    from vidldm.data.wordings import WORDING_SETS
    from vidldm.eval.paraphrase import FRAMES, SYNONYMS

    synonyms, frames = WORDING_SETS[wordings]
    fixed_words = {w for m in MOTIONS for w in m.split()}
    held_out = {w for words in SYNONYMS.values() for phrase in words for w in phrase.split()} - fixed_words
    trained = {w for words in synonyms.values() for phrase in words for w in phrase.split()}
    assert set(synonyms) == set(MOTIONS)  # every training motion has its wordings
    assert not held_out & trained
    assert not [(h, t) for h in held_out for t in trained if len(h) > 3 and t.startswith(h[:-1])]
    assert not set(FRAMES) & set(frames[1:]) and FRAMES[0] == frames[0]  # the fixed frame only
    held_phrases = {p for words in SYNONYMS.values() for p in words}
    assert not held_phrases & {p for words in synonyms.values() for p in words}
    assert not [(h, t) for h in held_out | {"moving"} for t in trained if len(h) > 3 and h in t and h != t]  # "unmoving"


def test_a_slice_of_a_row_samples_its_clips_as_the_whole_row_does(pipe):
    """`_generate(..., first=k)` seeds each clip by its index in the row, so slices sampled apart pool into the row
    (scripts/eval_subset.py); the batches differ, the seeds do not."""
    from vidldm.eval.report import _generate

    specs = evaluation_specs(4)
    size = dict(height=32, width=32, num_frames=4)
    whole = _generate(pipe, specs, 2, 1.0, 4, **size)
    part = _generate(pipe, specs[2:], 2, 1.0, 4, first=2, **size)
    unseeded = _generate(pipe, specs[2:], 2, 1.0, 4, **size)
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(whole[2:], part))
    assert any(np.abs(a.astype(int) - b).max() > 1 for a, b in zip(whole[2:], unseeded))
