"""vidldm.data: caption discovery, clip sampling (stride, fps, seeds, flips), skipping bad videos, latent cache."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from vidldm.data import (
    ClipInfo,
    LatentCacheDataset,
    VideoClipDataset,
    build_latent_cache,
    collate,
    find_clips,
)
from vidldm.errors import VidldmError
from vidldm.io import write_video
from vidldm.models.tiny import byte_tokenizer, tiny_text_encoder, tiny_vae
from vidldm.models.video_vae import VideoVAE

SIZE, FPS, LONG = 32, 8, 24


def counting_clip(frames: int = LONG) -> np.ndarray:
    """Solid grey frames whose value encodes the frame index, 10*i + 5: (F, 32, 32, 3) uint8."""
    values = (10 * np.arange(frames) + 5).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (frames, SIZE, SIZE, 3)).copy()


def decoded_indices(pixel_values: torch.Tensor) -> list[int]:
    """Which source frames a (3, F, H, W) sample of a counting clip holds (codec error is a few levels)."""
    levels = (pixel_values + 1) * 127.5
    return [round((v - 5) / 10) for v in levels.mean(dim=(0, 2, 3)).tolist()]


def gradient_clip(frames: int = 8) -> np.ndarray:
    """Dark left, bright right: a horizontal flip is plainly visible. (F, 32, 32, 3) uint8."""
    row = np.linspace(0, 255, SIZE).astype(np.uint8)
    return np.broadcast_to(row[None, None, :, None], (frames, SIZE, SIZE, 3)).copy()


@pytest.fixture(scope="module")
def counting_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("counting")
    write_video(counting_clip(), root / "count.mp4", fps=FPS)
    (root / "count.txt").write_text("numbers going up\n")
    return root


def dataset(root, **kwargs):
    return VideoClipDataset(root, **{"num_frames": 4, "height": SIZE, "width": SIZE, **kwargs})


# --- finding clips and captions ---------------------------------------------------------------


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_captions_csv(tmp_path):
    elsewhere = touch(tmp_path / "other" / "abs.mp4")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "captions.csv").write_text(
        f'path,caption\nclips/a.mp4,"a dog runs, then stops"\n\n{elsewhere},  padded  \n'
    )
    touch(tmp_path / "data" / "ignored.mp4")  # a captions file lists exactly what it lists
    clips = find_clips(tmp_path / "data")
    assert clips == [
        ClipInfo(tmp_path / "data" / "clips" / "a.mp4", "a dog runs, then stops"),
        ClipInfo(elsewhere, "padded"),
    ]


def test_captions_jsonl(tmp_path):
    lines = [{"path": "b.mp4", "caption": "second"}, {"path": "sub/a.webm", "caption": "first"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert find_clips(tmp_path) == [ClipInfo(tmp_path / "b.mp4", "second"), ClipInfo(tmp_path / "sub/a.webm", "first")]


def test_webvid_csv(tmp_path):
    (tmp_path / "results_2M_val.csv").write_text(
        "videoid,contentUrl,duration,page_dir,name\n"
        '31353427,https://x/1.mp4,PT00H00M15S,001_050,"Aerial view, of a lake"\n'
        "1234,https://x/2.mp4,PT00H00M09S,051_100,Cat sleeping\n"
    )
    assert find_clips(tmp_path) == [
        ClipInfo(tmp_path / "001_050" / "31353427.mp4", "Aerial view, of a lake"),
        ClipInfo(tmp_path / "051_100" / "1234.mp4", "Cat sleeping"),
    ]


def test_sidecar_txt_recursive_sorted(tmp_path):
    for name in ["b/z.mp4", "a.gif", "b/c.MOV", "notes.txt", "image.png", ".a.mp4.tmp-1234.mp4"]:
        touch(tmp_path / name)
    (tmp_path / "b" / "z.txt").write_text("  zebra crossing \n")
    (tmp_path / "a.txt").write_text("an animation")
    assert find_clips(tmp_path) == [
        ClipInfo(tmp_path / "a.gif", "an animation"),
        ClipInfo(tmp_path / "b" / "c.MOV", ""),
        ClipInfo(tmp_path / "b" / "z.mp4", "zebra crossing"),
    ]


def test_explicit_captions_file_wins(tmp_path):
    (tmp_path / "captions.csv").write_text("path,caption\na.mp4,from folder\n")
    (tmp_path / "mine.jsonl").write_text('{"path": "b.mp4", "caption": "from argument"}\n')
    assert find_clips(tmp_path, captions=tmp_path / "mine.jsonl") == [ClipInfo(tmp_path / "b.mp4", "from argument")]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("captions.csv", "file,text\na.mp4,x\n", "line 1: expected a header with columns path,caption"),
        ("captions.csv", "path,caption\na.mp4,ok\nb.mp4\n", "line 3: expected 2 columns"),
        ("captions.csv", "path,caption\n,no path\n", "line 2: the path is empty"),
        ("captions.jsonl", '{"path": "a.mp4", "caption": "x"}\n{"path": "b.mp4",\n', "line 2: not valid JSON"),
        ("captions.jsonl", '{"path": "a.mp4"}\n', "line 1: expected an object"),
    ],
)
def test_malformed_captions_name_the_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(VidldmError, match=message):
        find_clips(tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(VidldmError, match="does not exist"):
        find_clips(tmp_path / "nope")
    with pytest.raises(VidldmError, match="no clips found"):
        find_clips(tmp_path)
    with pytest.raises(VidldmError, match="captions file .* does not exist"):
        find_clips(tmp_path, captions=tmp_path / "missing.csv")
    with pytest.raises(VidldmError, match="no clips found"):
        VideoClipDataset(tmp_path, num_frames=4, height=SIZE, width=SIZE)
    with pytest.raises(VidldmError, match="either stride or fps"):
        VideoClipDataset(tmp_path, num_frames=4, height=SIZE, width=SIZE, stride=2, fps=4)


# --- sampling ---------------------------------------------------------------------------------


def test_sample_layout_and_range(tmp_path):
    write_video(gradient_clip(), tmp_path / "wide.mp4", fps=FPS)  # 32x32 -> 16x24 by crop
    sample = VideoClipDataset(tmp_path, num_frames=3, height=16, width=24)[0]
    assert sample["pixel_values"].shape == (3, 3, 16, 24)
    assert sample["pixel_values"].dtype == torch.float32
    assert -1 <= sample["pixel_values"].min() < sample["pixel_values"].max() <= 1
    assert sample["caption"] == "" and sample["path"] == str(tmp_path / "wide.mp4")
    batch = collate([sample, sample])
    assert batch["pixel_values"].shape == (2, 3, 3, 16, 24)
    assert batch["caption"] == ["", ""] and batch["path"] == [sample["path"]] * 2


@pytest.mark.parametrize("kwargs, step", [({}, 1), ({"stride": 3}, 3), ({"fps": 4}, 2), ({"fps": 8}, 1)])
def test_stride_and_fps_pick_evenly_spaced_frames(counting_folder, kwargs, step):
    ds = dataset(counting_folder, **kwargs)
    for epoch in range(3):
        ds.set_epoch(epoch)
        sample = ds[0]
        got = decoded_indices(sample["pixel_values"])
        assert np.diff(got).tolist() == [step] * 3
        assert 0 <= got[0] and got[-1] < LONG
        assert sample["caption"] == "numbers going up"


def test_same_seed_epoch_index_same_sample_other_epochs_move(counting_folder):
    a, b = dataset(counting_folder, seed=3), dataset(counting_folder, seed=3)
    a.set_epoch(5)
    b.set_epoch(5)
    torch.testing.assert_close(a[0]["pixel_values"], b[0]["pixel_values"], rtol=0, atol=0)
    starts = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        starts.add(decoded_indices(a[0]["pixel_values"])[0])
    assert len(starts) > 1  # 21 possible starts; a fixed seed makes this deterministic


def test_flip_mirrors_about_half_the_samples(tmp_path):
    write_video(gradient_clip(), tmp_path / "g.mp4", fps=FPS)
    plain, flipping = dataset(tmp_path, seed=1), dataset(tmp_path, seed=1, flip=True)
    flipped = []
    for epoch in range(8):
        plain.set_epoch(epoch)
        flipping.set_epoch(epoch)
        x, y = plain[0]["pixel_values"], flipping[0]["pixel_values"]
        # The flip is drawn after the window, so both datasets read the same frames.
        if torch.equal(y, x):
            flipped.append(False)
        else:
            torch.testing.assert_close(y, x.flip(-1), rtol=0, atol=0)
            assert y[..., 0].mean() > y[..., -1].mean()  # bright side now on the left
            flipped.append(True)
    assert any(flipped) and not all(flipped)


# --- bad videos -------------------------------------------------------------------------------


def test_bad_videos_are_skipped_counted_and_warned_once(tmp_path, caplog):
    write_video(counting_clip(), tmp_path / "b_good.mp4", fps=FPS)
    (tmp_path / "a_corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(2000))
    write_video(counting_clip(3), tmp_path / "c_short.mp4", fps=FPS)
    ds = dataset(tmp_path, num_frames=8)
    assert len(ds) == 3
    with caplog.at_level(logging.WARNING, logger="vidldm.data"):
        for epoch in range(2):
            ds.set_epoch(epoch)
            samples = [ds[i] for i in range(len(ds))]
    assert {s["path"] for s in samples} == {str(tmp_path / "b_good.mp4")}
    assert all(np.diff(decoded_indices(s["pixel_values"])).tolist() == [1] * 7 for s in samples)
    assert ds.skipped == {
        str(tmp_path / "a_corrupt.mp4"): "unreadable",
        str(tmp_path / "c_short.mp4"): "too short (3 frames, need 8)",
    }
    warnings = [r.getMessage() for r in caplog.records if r.name == "vidldm.data"]
    assert len(warnings) == 2
    assert "a_corrupt.mp4" in warnings[0] and "c_short.mp4" in warnings[1]
    assert ds.report() == (
        "skipped 2 of 3 videos: a_corrupt.mp4 (unreadable), c_short.mp4 (too short (3 frames, need 8))"
    )


def test_too_short_depends_on_stride_and_fps(counting_folder):
    assert dataset(counting_folder, num_frames=8, stride=3)[0]  # needs 22 of 24 frames
    too_long = dataset(counting_folder, num_frames=8, stride=4)  # needs 29
    with pytest.raises(VidldmError, match="no readable clip with at least 8 frames"):
        too_long[0]
    assert too_long.skipped == {str(counting_folder / "count.mp4"): "too short (24 frames, need 29)"}
    with pytest.raises(VidldmError, match="no readable clip"):
        dataset(counting_folder, num_frames=8, fps=2)[0]  # 8 frames at 2 fps span 29 source frames


def test_missing_listed_file_is_skipped(tmp_path, counting_folder):
    (tmp_path / "captions.csv").write_text(f"path,caption\ngone.mp4,lost\n{counting_folder / 'count.mp4'},kept\n")
    ds = dataset(tmp_path)
    assert ds[0]["caption"] == "kept"
    assert ds.skipped == {str(tmp_path / "gone.mp4"): "missing file"}


# --- latent cache -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_encoder():
    tokenizer, encoder = byte_tokenizer(), tiny_text_encoder()

    @torch.no_grad()
    def encode_text(captions):
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        return encoder(ids)[0]

    return encode_text


@pytest.fixture(scope="module")
def three_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("three")
    for i, caption in enumerate(["red", "a green field", "blue"]):
        write_video(counting_clip(6) + np.uint8(10 * i), root / f"{i}.mp4", fps=FPS)
        (root / f"{i}.txt").write_text(caption)
    return root


def test_latent_cache_round_trip(tmp_path, three_clips, text_encoder):
    vae = tiny_vae()
    ds = dataset(three_clips, num_frames=2)
    out = build_latent_cache(ds, vae, text_encoder, tmp_path / "cache", batch_size=2, shard_size=2)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "shard_00000.safetensors", "shard_00001.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no temp folder left behind
    index = json.loads((out / "index.json").read_text())
    assert index["num_items"] == 3 and [s["size"] for s in index["shards"]] == [2, 1]
    assert (index["num_frames"], index["height"], index["width"]) == (2, SIZE, SIZE)
    assert index["latent_shape"] == [4, 2, 16, 16] and index["prompt_embeds_shape"] == [32, 32]

    cache = LatentCacheDataset(out)
    assert len(cache) == 3
    ds.set_epoch(0)
    with torch.no_grad():
        for i in range(3):
            item, clip = cache[i], ds[i]
            assert item["caption"] == clip["caption"] == ["red", "a green field", "blue"][i]
            assert item["latents"].shape == (4, 2, 16, 16) and item["latents"].dtype == torch.float32
            assert item["prompt_embeds"].shape == (32, 32) and item["prompt_embeds"].dtype == torch.float32
            direct = VideoVAE(vae).encode(clip["pixel_values"][None])[0]
            torch.testing.assert_close(item["latents"], direct, atol=2e-3, rtol=2e-3)  # float16 storage
            torch.testing.assert_close(item["prompt_embeds"], text_encoder([clip["caption"]])[0], atol=2e-3, rtol=2e-3)


def test_latent_cache_refuses_to_overwrite(tmp_path, three_clips, text_encoder):
    vae, ds = tiny_vae(), dataset(three_clips, num_frames=1)
    out = build_latent_cache(ds, vae, text_encoder, tmp_path / "cache", shard_size=8)
    before = (out / "index.json").read_text()
    with pytest.raises(VidldmError, match="already exists and is not empty.*overwrite=True"):
        build_latent_cache(ds, vae, text_encoder, out)
    assert (out / "index.json").read_text() == before
    build_latent_cache(ds, vae, text_encoder, out, shard_size=2, overwrite=True)
    assert len(json.loads((out / "index.json").read_text())["shards"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_not_a_latent_cache(tmp_path):
    with pytest.raises(VidldmError, match="does not exist"):
        LatentCacheDataset(tmp_path / "nope")
    with pytest.raises(VidldmError, match="is not a latent cache"):
        LatentCacheDataset(tmp_path)
    (tmp_path / "index.json").write_text('{"something": "else"}')
    with pytest.raises(VidldmError, match="is not a latent cache"):
        LatentCacheDataset(tmp_path)
