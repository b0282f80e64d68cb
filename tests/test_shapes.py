"""Procedural shapes clips: determinism, captions, geometry and the dataset folder."""

import csv
import dataclasses
import itertools

import numpy as np
import pytest

from vidldm.data import find_clips
from vidldm.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    MOTIONS,
    SHAPES,
    ClipSpec,
    evaluation_specs,
    make_shapes_dataset,
    parse_caption,
    random_spec,
    render_clip,
    render_frame,
)
from vidldm.errors import VidldmError
from vidldm.io import read_video

F, S = 16, 64


def object_mask(frame, spec):
    """(H, W) bool: pixels that differ from the spec's background at all."""
    return (frame != np.array(BACKGROUNDS[spec.background], np.uint8)).any(axis=-1)


def weighted_centroid_and_area(frame, spec):
    """Coverage-weighted (x, y) centroid and area, independent of the oracle."""
    bg = np.array(BACKGROUNDS[spec.background], np.float64)
    fg = np.array(COLOURS[spec.colour], np.float64)
    alpha = ((frame - bg) @ (fg - bg)) / ((fg - bg) @ (fg - bg))
    rows, cols = np.indices(alpha.shape)
    area = alpha.sum()
    return np.array([(alpha * (cols + 0.5)).sum(), (alpha * (rows + 0.5)).sum()]) / area, area


def test_same_seed_same_clip_and_different_seed_differs():
    a = [random_spec(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    np.testing.assert_array_equal(render_clip(a[0]), render_clip(a[1]))
    assert random_spec(np.random.default_rng(8)) != a[0]


def test_clip_layout_and_frames_match():
    spec = random_spec(np.random.default_rng(0))
    clip = render_clip(spec)
    assert clip.shape == (F, S, S, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(render_frame(spec, 5), clip[5])
    assert render_clip(spec, num_frames=4, image_size=32).shape == (4, 32, 32, 3)
    with pytest.raises(VidldmError, match="unknown shape 'hexagon'"):
        render_frame(dataclasses.replace(spec, shape="hexagon"), 0)


def test_edges_are_anti_aliased():
    spec = random_spec(np.random.default_rng(3), colour="white", background="black", motion="standing still")
    levels = np.unique(render_frame(spec, 0)[..., 0])
    assert len(levels) > 4  # background, object and blended edge values in between


def test_caption_round_trip_for_every_combination():
    for shape, colour, background, motion in itertools.product(SHAPES, COLOURS, BACKGROUNDS, MOTIONS):
        spec = ClipSpec(shape, colour, background, motion, 32.0, 32.0, 12.0, 0.0, 0.0)
        assert spec.caption == f"a {colour} {shape} {motion} on a {background} background"
        assert parse_caption(spec.caption) == {
            "shape": shape,
            "colour": colour,
            "background": background,
            "motion": motion,
        }


def test_parse_caption_examples_and_rejects():
    assert parse_caption("A Red circle  moving right on a black background.") == {
        "shape": "circle",
        "colour": "red",
        "background": "black",
        "motion": "moving right",
    }
    for text in ("a red circle", "a pink circle moving right on a black background", "a dog running", ""):
        assert parse_caption(text) is None


def test_object_stays_in_frame_and_is_visible():
    rng = np.random.default_rng(0)
    for i in range(140):
        spec = random_spec(rng, motion=MOTIONS[i % len(MOTIONS)])
        for frame in render_clip(spec):
            mask = object_mask(frame, spec)
            assert mask.sum() >= 20, spec
            border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
            assert not border.any(), f"object touches the border: {spec}"


def test_background_never_equals_the_object_colour():
    rng = np.random.default_rng(1)
    for _ in range(500):
        spec = random_spec(rng)
        assert BACKGROUNDS[spec.background] != COLOURS[spec.colour]
    with pytest.raises(VidldmError, match="invisible"):
        random_spec(rng, colour="white", background="white")
    with pytest.raises(VidldmError, match="unknown shape"):
        random_spec(rng, shape="hexagon")


def test_sizes_and_speeds_in_range():
    rng = np.random.default_rng(2)
    for i in range(300):
        spec = random_spec(rng, motion=MOTIONS[i % len(MOTIONS)])
        sizes = (spec.size, spec.size + spec.growth * (F - 1))
        assert 6 <= min(sizes) and max(sizes) <= 26
        if spec.motion.startswith("moving"):
            assert 1.5 <= spec.speed <= 3.0 and spec.growth == 0
        elif spec.motion in ("growing", "shrinking"):
            assert 0.5 <= abs(spec.growth) <= 0.8 and spec.speed == 0
            assert (spec.growth > 0) == (spec.motion == "growing")
        else:
            assert spec.speed == 0 and spec.growth == 0


@pytest.mark.parametrize("motion", MOTIONS)
def test_motion_is_real(motion):
    rng = np.random.default_rng(4)
    for shape in SHAPES:
        spec = random_spec(rng, shape=shape, motion=motion)
        clip = render_clip(spec)
        (c0, a0), (c1, a1) = (
            weighted_centroid_and_area(clip[0], spec),
            weighted_centroid_and_area(clip[-1], spec),
        )
        direction = {
            "moving left": (-1, 0),
            "moving right": (1, 0),
            "moving up": (0, -1),  # y grows downward
            "moving down": (0, 1),
        }.get(motion, (0, 0))
        expected = np.array(direction) * spec.speed * (F - 1)
        # A growing triangle's centroid drifts down a little: it sits below its box centre.
        np.testing.assert_allclose(c1 - c0, expected, atol=2.0)
        if motion == "growing":
            assert a1 / a0 > 1.8
        elif motion == "shrinking":
            assert a1 / a0 < 1 / 1.8
        else:
            assert abs(a1 / a0 - 1) < 0.05


def test_make_shapes_dataset(tmp_path):
    out = make_shapes_dataset(tmp_path / "shapes", 3, seed=5)
    assert sorted(p.name for p in out.iterdir()) == [
        "captions.csv",
        "clip_00000.mp4",
        "clip_00001.mp4",
        "clip_00002.mp4",
    ]
    with open(out / "captions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "caption"]
    assert [r[0] for r in rows[1:]] == ["clip_00000.mp4", "clip_00001.mp4", "clip_00002.mp4"]
    rng = np.random.default_rng(5)
    assert [r[1] for r in rows[1:]] == [random_spec(rng).caption for _ in range(3)]
    for name, caption in rows[1:]:
        assert parse_caption(caption) is not None
        frames, fps = read_video(out / name)
        assert frames.shape == (F, S, S, 3) and fps == pytest.approx(8)
    assert [c.caption for c in find_clips(out)] == [r[1] for r in rows[1:]]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


@pytest.mark.parametrize("wordings", ["varied", "rich"])
def test_varied_wordings_keep_the_clips_and_say_each_motion_several_ways(tmp_path, wordings):
    """`wordings="varied"` or "rich": the same clips as "fixed" for the seed; each caption names the clip's colour,
    shape and background and one of its motion's training words; the fixed caption stays among them."""
    from vidldm.data.wordings import WORDING_SETS

    synonyms = WORDING_SETS[wordings][0]
    fixed = make_shapes_dataset(tmp_path / "fixed", 40, seed=3, num_frames=2, image_size=32)
    varied = make_shapes_dataset(tmp_path / "varied", 40, seed=3, num_frames=2, image_size=32, wordings=wordings)
    rng = np.random.default_rng(3)
    specs = [random_spec(rng, num_frames=2, image_size=32) for _ in range(40)]
    rows = {c.path.name: c.caption for c in find_clips(varied)}
    for i, spec in enumerate(specs):
        name = f"clip_{i:05d}.mp4"
        assert (fixed / name).read_bytes() == (varied / name).read_bytes()
        caption = rows[name]
        assert f"{spec.colour} {spec.shape}" in caption and f"{spec.background} background" in caption
        assert any(word in caption for word in synonyms[spec.motion])
    captions = list(rows.values())
    assert 0 < sum(c == s.caption for c, s in zip(captions, specs)) < 40  # some fixed, some varied
    assert len({c.split(" ")[0] for c in captions}) >= 2  # sentence frames differ
    with pytest.raises(VidldmError, match="wordings must be one of fixed, varied, rich"):
        make_shapes_dataset(tmp_path / "bad", 1, wordings="random")
    assert not (tmp_path / "bad").exists()


def test_make_shapes_dataset_refuses_bad_targets(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(VidldmError, match="not an empty folder"):
        make_shapes_dataset(full, 2)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    with pytest.raises(VidldmError, match=">= 1"):
        make_shapes_dataset(tmp_path / "none", 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (make_shapes_dataset(empty, 1, num_frames=2, image_size=32) / "clip_00000.mp4").is_file()


def test_evaluation_specs_fixed_and_balanced():
    specs = evaluation_specs()
    assert len(specs) >= 200
    assert specs == evaluation_specs()
    for field, values in (
        ("shape", SHAPES),
        ("colour", COLOURS),
        ("background", BACKGROUNDS),
        ("motion", MOTIONS),
    ):
        counts = {v: sum(getattr(s, field) == v for s in specs) for v in values}
        assert min(counts.values()) >= 20, (field, counts)
    assert all(BACKGROUNDS[s.background] != COLOURS[s.colour] for s in specs)
    assert len({(s.shape, s.colour, s.motion) for s in specs}) == len(SHAPES) * len(COLOURS) * len(MOTIONS)
