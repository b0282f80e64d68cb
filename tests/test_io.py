"""Tests for vidldm.io: round trips, frame sampling, fallbacks and errors."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from PIL import Image

from vidldm import io
from vidldm.io import read as io_read
from vidldm.io import write as io_write

F, H, W, FPS = 12, 48, 64, 8


def make_clip(frames: int = F, height: int = H, width: int = W) -> np.ndarray:
    """Smooth gradient background with a red square moving right: (F, H, W, 3) uint8."""
    yy, xx = np.mgrid[:height, :width]
    clip = np.empty((frames, height, width, 3), np.uint8)
    clip[..., 0] = (xx * 255 // max(width - 1, 1))[None]
    clip[..., 1] = (yy * 255 // max(height - 1, 1))[None]
    clip[..., 2] = 80
    for i in range(frames):
        x = 2 + 4 * i
        clip[i, 12:28, x : x + 16] = (255, 40, 40)
    return clip


def nearest_source_frames(frames: np.ndarray, source: np.ndarray) -> list[int]:
    """For each decoded frame, the index of the most similar source frame."""
    diff = np.abs(frames[:, None].astype(np.int16) - source[None].astype(np.int16))
    return diff.mean(axis=(2, 3, 4)).argmin(axis=1).tolist()


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return make_clip()


@pytest.fixture(scope="module")
def mp4(tmp_path_factory, clip):
    return io.write_video(clip, tmp_path_factory.mktemp("mp4") / "clip.mp4", fps=FPS)


# --- round trips -------------------------------------------------------------


def test_mp4_round_trip(mp4, clip):
    assert mp4.name == "clip.mp4"
    assert io.probe_video(mp4) == {"frames": F, "fps": 8.0, "width": W, "height": H}
    frames, fps = io.read_video(mp4)
    assert frames.shape == (F, H, W, 3) and frames.dtype == np.uint8
    assert fps == pytest.approx(8.0)
    assert mean_abs_diff(frames, clip) < 8
    assert nearest_source_frames(frames, clip) == list(range(F))


@pytest.mark.parametrize("suffix", [".MOV", ".mkv"])
def test_other_containers_round_trip(tmp_path, clip, suffix):
    path = io.write_video(clip, tmp_path / f"clip{suffix}", fps=FPS)
    assert io.probe_video(path)["frames"] == F
    frames, fps = io.read_video(path)
    assert frames.shape == clip.shape and fps == pytest.approx(8.0)


def test_non_integer_fps_is_kept(tmp_path, clip):
    path = io.write_video(clip[:4], tmp_path / "slow.mp4", fps=7.5)
    assert io.probe_video(path)["fps"] == pytest.approx(7.5)


def test_odd_size_is_padded_to_even(tmp_path):
    odd = make_clip(4, height=47, width=65)
    path = io.write_video(odd, tmp_path / "odd.mp4", fps=FPS)
    info = io.probe_video(path)
    assert (info["width"], info["height"], info["frames"]) == (66, 48, 4)
    frames, _ = io.read_video(path)
    # The user's pixels survive; the extra row/column replicates the edge.
    assert mean_abs_diff(frames[:, :47, :65], odd) < 8
    assert mean_abs_diff(frames[:, 47, :65], odd[:, 46]) < 8


def test_gif_round_trip(tmp_path, clip):
    path = io.write_video(clip, tmp_path / "clip.gif", fps=FPS)
    with Image.open(path) as im:
        assert im.n_frames == F
        assert im.info["loop"] == 0
    frames, fps = io.read_video(path)
    assert frames.shape == clip.shape
    assert fps == pytest.approx(1000 / 120)  # GIF delays are 1/100 s: 125 ms -> 120 ms
    assert mean_abs_diff(frames, clip) < 8


def test_webp_round_trip(tmp_path, clip):
    path = io.write_video(clip, tmp_path / "clip.webp", fps=FPS, quality=95)
    with Image.open(path) as im:
        assert im.n_frames == F
        assert im.info["loop"] == 0
    frames, fps = io.read_video(path)
    assert frames.shape == clip.shape and fps == pytest.approx(8.0)
    assert mean_abs_diff(frames, clip) < 8


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_repeated_frames_survive_animation_merging(tmp_path, suffix):
    # Both encoders merge identical consecutive frames into a longer one.
    clip = np.repeat(np.array([0, 0, 0, 200, 200, 90], np.uint8), 8 * 8 * 3).reshape(6, 8, 8, 3)
    frames, _ = io.read_video(io.write_video(clip, tmp_path / f"rep{suffix}", fps=FPS))
    assert frames[:, 0, 0, 0].tolist() == [0, 0, 0, 200, 200, 90]


def test_png_folder_round_trip(tmp_path, clip):
    out = io.write_video(clip, f"{tmp_path}/frames/", fps=FPS)
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"frame_{i:05d}.png" for i in range(F)]
    frames, fps = io.read_video(out)
    np.testing.assert_array_equal(frames, clip)  # PNG is lossless
    assert fps == io.DEFAULT_FOLDER_FPS
    assert io.read_video(out, fps=24, stride=3)[1] == 8.0  # fps declares the folder's rate
    assert io.probe_video(out) == {"frames": F, "fps": 8.0, "width": W, "height": H}


def test_folder_without_suffix_and_rewrite_keeps_other_files(tmp_path, clip):
    out = tmp_path / "frames"
    io.write_video(clip, out)
    (out / "notes.txt").write_text("keep me")
    io.write_video(clip[:3], out)  # existing folder: frames replaced, stale ones removed
    assert sorted(p.name for p in out.iterdir()) == [
        "frame_00000.png",
        "frame_00001.png",
        "frame_00002.png",
        "notes.txt",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]


def test_folder_reads_frames_in_numeric_order(tmp_path, clip):
    for i in (2, 10, 1):
        Image.fromarray(clip[i]).save(tmp_path / f"img_{i}.png")
    frames, _ = io.read_video(tmp_path)
    assert nearest_source_frames(frames, clip) == [1, 2, 10]


def test_single_png_and_grid(tmp_path, clip):
    single = io.write_video(clip[:1], tmp_path / "one.png")
    np.testing.assert_array_equal(io.read_image(single), clip[0])

    grid = io.read_image(io.write_grid(clip, tmp_path / "grid.png", gap=0))
    assert grid.shape == (3 * H, 4 * W, 3)  # ceil(sqrt(12)) = 4 columns, 3 rows
    np.testing.assert_array_equal(grid[H : 2 * H, 2 * W : 3 * W], clip[6])
    with_gap = io.read_image(io.write_grid(clip[:5], tmp_path / "g2.png", cols=2))
    assert with_gap.shape == (3 * H + 2 * 2, 2 * W + 2, 3)


# --- inputs accepted by write_video -----------------------------------------


def test_to_uint8_frames_layouts(clip):
    torch = pytest.importorskip("torch")
    as_float = clip.astype(np.float32) / 255
    chw = torch.from_numpy(as_float).permute(0, 3, 1, 2)
    for frames in (
        clip,
        as_float,
        chw,
        chw.permute(0, 2, 3, 1),
        torch.from_numpy(clip),
        [Image.fromarray(f) for f in clip],
    ):
        np.testing.assert_array_equal(io.to_uint8_frames(frames), clip)
    clipped = io.to_uint8_frames(np.array([-0.5, 0.5, 2.0]).reshape(1, 1, 1, 3))
    assert clipped.ravel().tolist() == [0, 128, 255]


def test_rgba_and_grayscale_images_become_rgb(tmp_path):
    Image.new("RGBA", (5, 4), (10, 20, 30, 0)).save(tmp_path / "a.png")
    Image.new("L", (5, 4), 77).save(tmp_path / "l.png")
    assert io.read_image(tmp_path / "a.png").shape == (4, 5, 3)
    assert io.read_image(tmp_path / "l.png")[0, 0].tolist() == [77, 77, 77]


# --- frame sampling ----------------------------------------------------------


def test_stride(mp4, clip):
    frames, fps = io.read_video(mp4, stride=2)
    assert len(frames) == 6 and fps == pytest.approx(4.0)
    assert nearest_source_frames(frames, clip) == [0, 2, 4, 6, 8, 10]
    frames, fps = io.read_video(mp4, start=3, stride=4)
    assert nearest_source_frames(frames, clip) == [3, 7, 11] and fps == pytest.approx(2.0)


def test_explicit_indices(mp4, clip):
    frames, fps = io.read_video(mp4, indices=[0, 5, 11])
    assert nearest_source_frames(frames, clip) == [0, 5, 11]
    assert fps == pytest.approx(8 / 5.5)  # mean spacing of the picked frames


def test_target_fps(mp4, clip):
    frames, fps = io.read_video(mp4, fps=4)
    assert fps == 4.0 and nearest_source_frames(frames, clip) == [0, 2, 4, 6, 8, 10]
    frames, fps = io.read_video(mp4, fps=3)  # every 2.67 frames, nearest frame
    assert fps == 3.0 and nearest_source_frames(frames, clip) == [0, 3, 5, 8, 11]


def test_max_frames(mp4, clip):
    frames, _ = io.read_video(mp4, max_frames=5)
    assert nearest_source_frames(frames, clip) == [0, 1, 2, 3, 4]
    frames, _ = io.read_video(mp4, fps=16, max_frames=4)  # upsampling repeats frames
    assert nearest_source_frames(frames, clip) == [0, 1, 1, 2]


def test_sampling_applies_to_animations(tmp_path, clip):
    path = io.write_video(clip, tmp_path / "clip.webp", fps=FPS)
    frames, fps = io.read_video(path, indices=[1, 4])
    assert nearest_source_frames(frames, clip) == [1, 4] and fps == pytest.approx(8 / 3)


def test_index_out_of_range(mp4):
    with pytest.raises(io.MediaError, match=r"frame index 12 out of range.*12 frames"):
        io.read_video(mp4, indices=[0, 12])
    with pytest.raises(io.MediaError, match="start frame 20 is past the end"):
        io.read_video(mp4, start=20)


def test_conflicting_sampling_arguments(mp4):
    with pytest.raises(ValueError, match="either stride or fps"):
        io.read_video(mp4, stride=2, fps=4)
    with pytest.raises(ValueError, match="either indices"):
        io.read_video(mp4, indices=[0], start=1)


# --- PyAV fallback -----------------------------------------------------------


@pytest.fixture
def pyav_calls(monkeypatch):
    """Record calls to the PyAV reader while still running it."""
    calls = []
    real = io_read._read_pyav

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(io_read, "_read_pyav", spy)
    return calls


def test_pyav_used_when_decord_missing(monkeypatch, mp4, pyav_calls):
    pytest.importorskip("decord")
    expected, expected_fps = io.read_video(mp4, indices=[0, 5, 11])
    assert pyav_calls == []  # decord handled it

    monkeypatch.setitem(sys.modules, "decord", None)  # makes `import decord` fail
    frames, fps = io.read_video(mp4, indices=[0, 5, 11])
    assert len(pyav_calls) == 1
    assert fps == pytest.approx(expected_fps)
    assert frames.shape == expected.shape and mean_abs_diff(frames, expected) < 1


def test_pyav_used_when_decord_fails(monkeypatch, mp4, clip, pyav_calls):
    def broken_reader(*args, **kwargs):
        raise RuntimeError("decord cannot open this")

    fake = types.SimpleNamespace(VideoReader=broken_reader, cpu=lambda i: None)
    monkeypatch.setitem(sys.modules, "decord", fake)
    frames, fps = io.read_video(mp4, stride=2)
    assert len(pyav_calls) == 1
    assert fps == pytest.approx(4.0)
    assert nearest_source_frames(frames, clip) == [0, 2, 4, 6, 8, 10]


# --- errors ------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(io.MediaError, match=r"cannot read video '.*nope\.mp4': file does not exist"):
        io.read_video(tmp_path / "nope.mp4")
    with pytest.raises(io.MediaError, match="file does not exist"):
        io.read_image(tmp_path / "nope.png")
    with pytest.raises(io.MediaError, match="file does not exist"):
        io.probe_video(tmp_path / "nope.mp4")


def test_text_file_is_not_a_video(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(io.MediaError, match="not a decodable video") as err:
        io.read_video(fake)
    assert "\n" not in str(err.value)
    with pytest.raises(io.MediaError, match="not a decodable video"):
        io.probe_video(fake)
    with pytest.raises(io.MediaError, match="not a readable image"):
        io.read_image(fake)
    (tmp_path / "fake.gif").write_text("not a gif")
    with pytest.raises(io.MediaError, match="not a readable image"):
        io.read_video(tmp_path / "fake.gif")


def test_empty_folder_has_no_frames(tmp_path):
    with pytest.raises(io.MediaError, match="folder has no"):
        io.read_video(tmp_path)


def test_unknown_extension(tmp_path, clip):
    with pytest.raises(io.MediaError, match=r"unknown extension '\.avi'; supported: \.mp4"):
        io.write_video(clip, tmp_path / "clip.avi")
    assert list(tmp_path.iterdir()) == []


def test_missing_output_folder(tmp_path, clip):
    with pytest.raises(io.MediaError, match=r"output folder '.*missing' does not exist; create it"):
        io.write_video(clip, tmp_path / "missing" / "clip.mp4")
    with pytest.raises(io.MediaError, match="does not exist"):
        io.write_grid(clip, tmp_path / "missing" / "grid.png")


def test_empty_and_malformed_frames(tmp_path, clip):
    with pytest.raises(io.MediaError, match="empty"):
        io.write_video(clip[:0], tmp_path / "clip.mp4")
    with pytest.raises(io.MediaError, match="empty"):
        io.write_video([], tmp_path / "clip.mp4")
    with pytest.raises(io.MediaError, match=r"layout \(F, H, W, 3\)"):
        io.write_video(clip[0], tmp_path / "clip.mp4")
    with pytest.raises(io.MediaError, match="single image"):
        io.write_video(clip, tmp_path / "clip.png")
    assert list(tmp_path.iterdir()) == []


def _fail_on_call(n: int, real):
    calls = {"count": 0}

    def wrapper(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == n:
            raise RuntimeError("encoder exploded")
        return real(*args, **kwargs)

    return wrapper


def test_failed_mp4_write_leaves_nothing(monkeypatch, tmp_path, clip):
    monkeypatch.setattr(io_write, "_to_av_frame", _fail_on_call(5, io_write._to_av_frame))
    with pytest.raises(RuntimeError, match="encoder exploded"):
        io.write_video(clip, tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_file(monkeypatch, tmp_path, clip):
    path = io.write_video(clip[:2], tmp_path / "clip.gif")
    before = path.read_bytes()
    monkeypatch.setattr(Image.Image, "save", _fail_on_call(1, Image.Image.save))
    with pytest.raises(RuntimeError):
        io.write_video(clip, path)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.gif"]
    assert path.read_bytes() == before


def test_failed_folder_write_leaves_nothing(monkeypatch, tmp_path, clip):
    monkeypatch.setattr(io_write, "_save_png", _fail_on_call(3, io_write._save_png))
    with pytest.raises(RuntimeError):
        io.write_video(clip, tmp_path / "frames/")
    assert list(tmp_path.iterdir()) == []
