"""IP-Adapter image prompts: vidldm equals diffusers' `AnimateDiffPipeline` + `load_ip_adapter` on the same tiny
weights, image encoder, latents and scheduler; frame ranges hold their own image; bad files end in one line, exit 2,
no file written."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from vidldm.errors import VidldmError
from vidldm.loading import tiny_pipeline
from vidldm.models.tiny import tiny_motion_adapter

FRAMES = 4
SETTINGS = dict(num_frames=FRAMES, height=32, width=32, num_inference_steps=2, guidance_scale=7.5, output_type="np")
CLIP_DIM = 24  # the tiny image encoder's projection (ViT-H's is 1024)


def tiny_image_encoder(seed=0) -> CLIPVisionModelWithProjection:
    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, projection_dim=CLIP_DIM, num_hidden_layers=2,
                              num_attention_heads=4, image_size=32, patch_size=8)
    return CLIPVisionModelWithProjection(config).eval()


def ip_adapter_sd15(unet, seed=1, std=0.2, cross_dim=None) -> dict[str, torch.Tensor]:
    """A random IP-Adapter in `ip-adapter_sd15.safetensors`' key layout: the image projection (a linear map to 4
    tokens, a LayerNorm) and to_k_ip / to_v_ip of every cross-attention, numbered 1, 3, 5, ... in the UNet's
    processor order (the original numbering counts the self-attentions too)."""
    g = torch.Generator().manual_seed(seed)
    cross = cross_dim or unet.config.cross_attention_dim
    sd = {"image_proj.proj.weight": torch.randn(4 * cross, CLIP_DIM, generator=g) * std,
          "image_proj.proj.bias": torch.randn(4 * cross, generator=g) * std,
          "image_proj.norm.weight": 1 + torch.randn(cross, generator=g) * std,
          "image_proj.norm.bias": torch.randn(cross, generator=g) * std}
    names = [n.removesuffix(".processor") for n in unet.attn_processors if n.endswith("attn2.processor")]
    for i, name in enumerate(names):
        width = unet.get_submodule(name).to_k.weight.shape[0]
        for proj in ("to_k_ip", "to_v_ip"):
            sd[f"ip_adapter.{2 * i + 1}.{proj}.weight"] = torch.randn(width, cross, generator=g) * std
    return sd


def write_adapter(folder, sd, name="ip-adapter_sd15.safetensors", encoder=True):
    """h94/IP-Adapter's layout: the adapter file with `image_encoder/` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / name))
    if encoder:
        tiny_image_encoder().save_pretrained(folder / "image_encoder")
    return folder / name


def still(seed, size=40):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def base_model():
    """A tiny pipeline whose adapter diffusers runs exactly, and its diffusers twin (`to_diffusers`: copies)."""
    base = tiny_pipeline()
    pipe = base.with_parts(motion_adapter=tiny_motion_adapter(base.unet, randomize=True, norm_mode="per_clip"))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe.to_diffusers()
    theirs.set_progress_bar_config(disable=True)
    return pipe, theirs


def latents(frames=FRAMES):
    return torch.randn(1, 4, frames, 16, 16, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return write_adapter(tmp_path_factory.mktemp("ip") / "models", ip_adapter_sd15(tiny_pipeline().unet))


@pytest.fixture(scope="module")
def loaded(adapter):
    pipe, theirs = base_model()
    pipe.load_ip_adapter(str(adapter))
    theirs.load_ip_adapter(str(adapter.parent), subfolder="", weight_name=adapter.name)
    return pipe, theirs


# ----------------------------------------------------------------------------- parity with diffusers

@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_ip_adapter_matches_diffusers(loaded, scale):
    pipe, theirs = loaded
    pipe.set_ip_adapter_scale(scale)
    theirs.set_ip_adapter_scale(scale)
    image = still(0)
    ours = pipe("a red circle", latents=latents(), ip_adapter_image=image, **SETTINGS).frames
    ref = theirs("a red circle", latents=latents(), ip_adapter_image=image, **SETTINGS).frames
    diff = float(np.abs(ours - ref).max())
    print(f"IP-Adapter scale {scale}: max abs diff vs diffusers {diff:.2e}")
    assert diff <= 1e-4
    plain = base_model()[0]("a red circle", latents=latents(), **SETTINGS).frames
    assert np.abs(ours - plain).max() > 1e-3  # the image prompt acts


def test_precomputed_embeddings_match_diffusers(loaded):
    """`ip_adapter_image_embeds` in diffusers' layout (unconditional first under guidance), shared by every frame."""
    pipe, theirs = loaded
    pipe.set_ip_adapter_scale(1.0)
    theirs.set_ip_adapter_scale(1.0)
    embeds = [torch.randn(2, 1, CLIP_DIM, generator=torch.Generator().manual_seed(4))]
    ours = pipe("a red circle", latents=latents(), ip_adapter_image_embeds=embeds, **SETTINGS).frames
    ref = theirs("a red circle", latents=latents(), ip_adapter_image_embeds=embeds, **SETTINGS).frames
    assert float(np.abs(ours - ref).max()) <= 1e-4


def test_scale_zero_and_unloading_give_the_model_back(adapter):
    pipe, _ = base_model()
    plain = pipe("a red circle", latents=latents(), **SETTINGS).frames
    pipe.load_ip_adapter(str(adapter))
    pipe.set_ip_adapter_scale(0.0)
    silent = pipe("a red circle", latents=latents(), ip_adapter_image=still(0), **SETTINGS).frames
    assert np.abs(silent - plain).max() <= 1e-5
    pipe.unload_ip_adapter()
    assert pipe.image_encoder is None and pipe.num_ip_adapters == 0
    assert np.array_equal(pipe("a red circle", latents=latents(), **SETTINGS).frames, plain)


# ----------------------------------------------------------------------------- frame ranges

def test_frame_ranges_hold_their_own_image_window_by_window(loaded):
    """With the temporal layers off (temporal_end=0) every frame is made on its own, so a frame in a range must
    be what the whole-clip prompt with that range's image makes, and a frame outside every range what the
    "no image" embedding makes (diffusers' negative: zeros); context windows (4 of 8 frames) slice the
    embeddings as they slice per-frame text."""
    pipe, _ = loaded
    pipe.set_ip_adapter_scale(1.0)
    a, b = still(1), still(2)
    args = dict(SETTINGS, num_frames=8, temporal_end=0.0, context_frames=4, latents=latents(8))
    ranges = pipe("a red circle", ip_adapter_image={(0, 2): a, (5, 6): b}, **args).frames[0]
    only_a = pipe("a red circle", ip_adapter_image=a, **args).frames[0]
    only_b = pipe("a red circle", ip_adapter_image=b, **args).frames[0]
    none = pipe("a red circle", ip_adapter_image_embeds=[torch.zeros(2, 1, CLIP_DIM)], **args).frames[0]
    for frames, want in (([0, 1, 2], only_a), ([5, 6], only_b), ([3, 4, 7], none)):
        assert np.abs(ranges[frames] - want[frames]).max() <= 1e-5, frames
    assert np.abs(only_a - only_b).max() > 1e-3  # the two images differ in what they make


def test_frame_ranges_are_checked(loaded):
    pipe, _ = loaded
    for ranges, message in (({(0, 4): still(1)}, "0 <= first <= last <= 3"), ({(2, 1): still(1)}, "first <= last"),
                            ({(0, 2): still(1), (2, 3): still(2)}, "overlap at frame 2"), ({0: still(1)}, "frame ranges")):
        with pytest.raises(VidldmError, match=message):
            pipe("a red circle", ip_adapter_image=ranges, **SETTINGS)


def test_image_prompt_and_adapter_come_together(loaded):
    pipe, _ = loaded
    with pytest.raises(VidldmError, match="an IP-Adapter is loaded: give ip_adapter_image"):
        pipe("a red circle", **SETTINGS)
    with pytest.raises(VidldmError, match="not both"):
        pipe("a red circle", ip_adapter_image=still(0), ip_adapter_image_embeds=[torch.zeros(2, 1, CLIP_DIM)], **SETTINGS)
    plain, _ = base_model()
    with pytest.raises(VidldmError, match="needs an IP-Adapter"):
        plain("a red circle", ip_adapter_image=still(0), **SETTINGS)


# ----------------------------------------------------------------------------- bad adapters

def test_bin_layout_loads_as_the_safetensors(tmp_path, loaded, adapter):
    """`ip-adapter_sd15.bin` holds two dicts, `image_proj` and `ip_adapter` (read without running code)."""
    sd = ip_adapter_sd15(tiny_pipeline().unet)
    nested = {part: {k.removeprefix(part + "."): v for k, v in sd.items() if k.startswith(part + ".")}
              for part in ("image_proj", "ip_adapter")}
    torch.save(nested, tmp_path / "ip-adapter_sd15.bin")
    pipe, _ = base_model()
    pipe.load_ip_adapter(str(tmp_path / "ip-adapter_sd15.bin"), image_encoder_folder=str(adapter.parent / "image_encoder"))
    ours = pipe("a red circle", latents=latents(), ip_adapter_image=still(0), **SETTINGS).frames
    loaded[0].set_ip_adapter_scale(1.0)
    assert np.array_equal(ours, loaded[0]("a red circle", latents=latents(), ip_adapter_image=still(0), **SETTINGS).frames)


def bad_adapters(tmp_path):
    unet = tiny_pipeline().unet
    no_encoder = write_adapter(tmp_path / "alone", ip_adapter_sd15(unet), encoder=False)
    corrupt = tmp_path / "corrupt" / "ip-adapter_sd15.safetensors"
    write_adapter(corrupt.parent, ip_adapter_sd15(unet))
    corrupt.write_bytes(b"\x00\x01 not a safetensors file")
    other_base = write_adapter(tmp_path / "sd2", ip_adapter_sd15(unet, cross_dim=64))
    return {"no_encoder": (no_encoder, "needs its image encoder"), "corrupt": (corrupt, "not a valid safetensors file"),
            "other_base": (other_base, "cross-attention dim 64, this model's is 32")}


def test_bad_adapters_are_one_line_errors_and_leave_the_model_as_it_was(tmp_path):
    pipe, _ = base_model()
    plain = pipe("a red circle", latents=latents(), **SETTINGS).frames
    for path, message in bad_adapters(tmp_path).values():
        with pytest.raises(VidldmError, match=message) as err:
            pipe.load_ip_adapter(str(path))
        assert "\n" not in str(err.value)
    assert pipe.num_ip_adapters == 0 and pipe.image_encoder is None
    assert np.array_equal(pipe("a red circle", latents=latents(), **SETTINGS).frames, plain)


# ----------------------------------------------------------------------------- the CLI

FAST = ["--frames", "4", "--steps", "2", "--model", "tiny", "--height", "32", "--width", "32", "-q", "--seed", "5"]


def run(*argv):
    from vidldm.cli import main

    return main([str(a) for a in argv])


def frames_of(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("frame_*.png"))])


def test_cli_ip_adapter_with_frame_ranges_is_recorded_and_replayed(tmp_path, adapter):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    still(1).save(a)
    still(2).save(b)
    assert run("generate", "a red circle", *FAST, "-o", tmp_path / "plain/") == 0
    out = tmp_path / "clip/"
    assert run("generate", "a red circle", *FAST, "--ip-adapter", f"{adapter}:0.8", "--ip-image", f"0-1:{a}",
               "--ip-image", f"2-3:{b}", "-o", out) == 0
    side = json.loads((tmp_path / "clip.json").read_text())
    assert side["ip_adapter"] == f"{adapter.resolve()}:0.8"
    assert side["ip_image"] == [f"0-1:{a.resolve()}", f"2-3:{b.resolve()}"]
    assert np.abs(frames_of(out).astype(int) - frames_of(tmp_path / "plain")).max() > 0  # the image prompt acts
    assert run("replay", tmp_path / "clip.json", "-o", tmp_path / "again/", "-q") == 0
    assert np.array_equal(frames_of(out), frames_of(tmp_path / "again"))


def test_cli_bad_ip_adapters_exit_2_with_one_line_and_write_nothing(tmp_path, capsys):
    image = tmp_path / "a.png"
    still(1).save(image)
    cases = [(["--ip-adapter", path, "--ip-image", image], message) for path, message in bad_adapters(tmp_path).values()]
    cases += [(["--ip-image", image], "--ip-image needs an IP-Adapter"),
              (["--ip-adapter", bad_adapters(tmp_path)["other_base"][0]], "--ip-adapter needs an image prompt"),
              (["--ip-adapter", tmp_path / "missing.safetensors", "--ip-image", image], "does not exist"),
              (["--ip-adapter", bad_adapters(tmp_path)["other_base"][0], "--ip-image", image, "--ip-image", f"0-1:{image}"],
               "not both")]
    for i, (flags, message) in enumerate(cases):
        out = tmp_path / f"clip{i}.mp4"
        capsys.readouterr()
        assert run("generate", "a red circle", *FAST, *flags, "-o", out) == 2, flags
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists() and not out.with_suffix(".json").exists()


def test_parse_ip_image():
    from vidldm.sampling_settings import parse_ip_image

    assert parse_ip_image("still.png") == (None, "still.png")
    assert parse_ip_image("0-7:a:b.png") == ((0, 7), "a:b.png")
    assert parse_ip_image("12-15:still.png") == ((12, 15), "still.png")


def test_fused_projections_and_ip_adapters_keep_apart(adapter):
    pipe, _ = base_model()
    pipe.fuse_qkv_projections()
    with pytest.raises(VidldmError, match="unfuse_qkv_projections"):
        pipe.load_ip_adapter(str(adapter))
    pipe.unfuse_qkv_projections()
    pipe.load_ip_adapter(str(adapter))
    want = pipe("a red circle", latents=latents(), ip_adapter_image=still(0), **SETTINGS).frames
    pipe.fuse_qkv_projections()  # the IP-Adapter's cross-attentions stay unfused, and exact
    got = pipe("a red circle", latents=latents(), ip_adapter_image=still(0), **SETTINGS).frames
    assert np.abs(got - want).max() <= 1e-5


def test_image_encoder_and_ip_layers_offload_with_the_model(adapter):
    """Sequential offload covers the image encoder, the image projection and the IP attention layers too (they are
    components and submodules the hooks find): the frames are bitwise those without offload."""
    pipe, _ = base_model()
    pipe.load_ip_adapter(str(adapter))
    want = pipe("a red circle", latents=latents(), ip_adapter_image=still(0), **SETTINGS).frames
    pipe.enable_sequential_cpu_offload(device="cpu")
    assert {p.device.type for p in pipe.image_encoder.parameters()} == {"meta"}
    assert {p.device.type for p in pipe.unet.encoder_hid_proj.parameters()} == {"meta"}
    got = pipe("a red circle", latents=latents(), ip_adapter_image=still(0), **SETTINGS).frames
    assert np.array_equal(got, want)
