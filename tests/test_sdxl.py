"""SDXL: two text encoders, `added_cond_kwargs`, the AnimateDiff SDXL motion module; equal to diffusers on the same weights.

Tiny random SDXL-shaped parts are built with diffusers' and transformers' own classes: a 3-level
`UNet2DConditionModel` with `addition_embed_type="text_time"` (cross-attention width = the two encoders'
widths concatenated), `CLIPTextModel` + `CLIPTextModelWithProjection`, and a diffusers SDXL `MotionAdapter`
(3 down blocks, no mid-block motion, 32 frames), as `guoyww/animatediff-motion-adapter-sdxl-beta` is laid out.
"""


import numpy as np
import pytest
import torch
from diffusers import (
    AnimateDiffSDXLPipeline,
    DDIMScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    UNetMotionModel,
)
from diffusers import (
    MotionAdapter as DiffusersMotionAdapter,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from tests.conftest import seeded
from vidldm.cli import main
from vidldm.errors import VidldmError
from vidldm.loading import load_pipeline
from vidldm.models.motion import MotionAdapter
from vidldm.models.motion_formats import (
    diffusers_to_animatediff,
    from_diffusers,
    load_motion_adapter,
    save_animatediff,
)
from vidldm.models.tiny import byte_tokenizer, randomize_, tiny_vae
from vidldm.models.video_unet import VideoUNet
from vidldm.pipeline import VideoPipeline
from vidldm.schedulers import ANIMATEDIFF_DDIM

FRAMES, SIZE = 3, 16  # 16 px -> 8x8 latents through the 2x tiny VAE
TEXT_WIDTH, PROJECTION = 16, 16


def sdxl_unet():
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4, 8),
        use_linear_projection=True, transformer_layers_per_block=(1, 1, 2), norm_num_groups=32,
        addition_embed_type="text_time", addition_time_embed_dim=8, cross_attention_dim=2 * TEXT_WIDTH,
        projection_class_embeddings_input_dim=8 * 6 + PROJECTION,
    ).eval()


def text_encoder(cls, seed):
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=258, hidden_size=TEXT_WIDTH, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=32, projection_dim=PROJECTION,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return cls(config).eval()


def sdxl_adapter():
    """diffusers' SDXL motion adapter layout, with random (non-zero) temporal outputs so they matter."""
    torch.manual_seed(1)
    adapter = DiffusersMotionAdapter(block_out_channels=(32, 64, 64), motion_layers_per_block=2,
                                     motion_norm_num_groups=32, motion_num_attention_heads=2,
                                     use_motion_mid_block=False, motion_max_seq_length=32)
    return randomize_(adapter, std=0.05).eval()


@pytest.fixture(scope="module")
def parts():
    return dict(vae=tiny_vae(), text_encoder=text_encoder(CLIPTextModel, 1), tokenizer=byte_tokenizer(),
                text_encoder_2=text_encoder(CLIPTextModelWithProjection, 2), tokenizer_2=byte_tokenizer(),
                unet=sdxl_unet())


@pytest.fixture(scope="module")
def adapter():
    return sdxl_adapter()


def motion_unet(unet, adapter):
    """diffusers' `UNetMotionModel.from_unet2d` leaves SDXL's `add_embedding` at its random init (it copies
    only `time_embedding`; raised in diffusers PR #6721's review and left for later), so the model it builds
    is not the SDXL UNet it was given. Copy it, so the comparison is of the same weights."""
    theirs = UNetMotionModel.from_unet2d(unet, adapter).eval()
    assert not torch.equal(theirs.add_embedding.linear_1.weight, unet.add_embedding.linear_1.weight)
    theirs.add_embedding.load_state_dict(unet.add_embedding.state_dict())
    return theirs


def ours(parts, adapter):
    pipe = VideoPipeline(**parts, motion_adapter=from_diffusers(adapter), scheduler=DDIMScheduler(**ANIMATEDIFF_DDIM))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def test_unet_equals_diffusers_unet_motion_model(parts, adapter):
    unet = parts["unet"]
    model = VideoUNet(unet, from_diffusers(adapter))
    g = seeded(0)
    x, ctx = torch.randn(2, 4, FRAMES, 8, 8, generator=g), torch.randn(2, 7, 2 * TEXT_WIDTH, generator=g)
    added = {"text_embeds": torch.randn(2, PROJECTION, generator=g),
             "time_ids": torch.tensor([[SIZE, SIZE, 0, 0, SIZE, SIZE]] * 2, dtype=torch.float32)}
    out = model(x, 321, ctx, added_cond_kwargs=added)
    ref = motion_unet(unet, adapter)(x, 321, ctx.repeat_interleave(FRAMES, 0), added_cond_kwargs=added).sample
    assert out.abs().mean() > 0.01 and (out - ref).abs().max() <= 1e-4
    assert (out - model(x, 321, ctx, added_cond_kwargs=added, temporal=False)).abs().max() > 1e-2  # motion acts
    other = {**added, "text_embeds": added["text_embeds"] + 1}
    assert (out - model(x, 321, ctx, added_cond_kwargs=other)).abs().max() > 1e-3  # and the pooled text reaches it


def diffusers_pipeline(parts, adapter):
    theirs = AnimateDiffSDXLPipeline(**parts | {"unet": motion_unet(parts["unet"], adapter)}, motion_adapter=adapter,
                                     scheduler=DDIMScheduler(**ANIMATEDIFF_DDIM))
    theirs.set_progress_bar_config(disable=True)
    return theirs


@pytest.mark.parametrize("negative", [None, "blurry"])  # None: SDXL's zeroed negative embeddings
def test_pipeline_equals_animatediff_sdxl_pipeline(parts, adapter, negative):
    latents = torch.randn(1, 4, FRAMES, 8, 8, generator=seeded(3))
    call = dict(negative_prompt=negative, num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=3,
                guidance_scale=7.5, output_type="np")
    mine = ours(parts, adapter)("a red circle", latents=latents.clone(), **call).frames
    theirs = diffusers_pipeline(parts, adapter)("a red circle", latents=latents.clone(), **call).frames
    assert mine.shape == theirs.shape == (1, FRAMES, SIZE, SIZE, 3)
    assert np.abs(mine - theirs).max() <= 1e-4


def test_prompt_travel_and_no_guidance_run(parts, adapter):
    pipe = ours(parts, adapter)
    call = dict(num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=2, output_type="np", generator=seeded())
    travel = pipe({0: "a red circle", 2: "a blue square"}, **call).frames
    plain = pipe("a red circle", guidance_scale=1.0, **call).frames
    assert travel.shape == plain.shape == (1, FRAMES, SIZE, SIZE, 3) and np.isfinite(travel).all()


def test_precomputed_embeddings_need_pooled_text(parts, adapter):
    pipe = ours(parts, adapter)
    with pytest.raises(VidldmError, match="pooled_prompt_embeds"):
        pipe(prompt_embeds=torch.zeros(1, 32, 2 * TEXT_WIDTH), num_frames=FRAMES, height=SIZE, width=SIZE,
             num_inference_steps=1)


@pytest.fixture(scope="module")
def sdxl_folders(parts, adapter, tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl")
    StableDiffusionXLPipeline(**parts, scheduler=DDIMScheduler(**ANIMATEDIFF_DDIM)).save_pretrained(root / "model")
    adapter.save_pretrained(root / "adapter")
    torch.save(diffusers_to_animatediff(dict(adapter.state_dict())), root / "mm_sdxl_tiny.ckpt")  # AnimateDiff's layout
    return root


def test_sdxl_folder_loads_and_equals_the_parts(parts, adapter, sdxl_folders):
    pipe = load_pipeline(sdxl_folders / "model", motion_adapter=sdxl_folders / "adapter", device="cpu")
    assert pipe.is_sdxl and pipe.config.force_zeros_for_empty_prompt
    pipe.set_progress_bar_config(disable=True)
    call = dict(num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=2, output_type="np")
    loaded = pipe("a red circle", generator=seeded(), **call).frames
    built = ours(parts, adapter)("a red circle", generator=seeded(), **call).frames
    assert np.abs(loaded - built).max() <= 1e-5


def test_original_layout_sdxl_module_loads_the_same_tensors(adapter, sdxl_folders):
    original = load_motion_adapter(sdxl_folders / "mm_sdxl_tiny.ckpt")
    folder = load_motion_adapter(sdxl_folders / "adapter")
    c = original.config
    assert (tuple(c.block_out_channels), c.use_mid_block, c.max_seq_length) == ((32, 64, 64), False, 32)
    assert c.norm_mode == "per_frame" and folder.config.norm_mode == "per_clip"  # each format's own normalisation
    mine, theirs = original.state_dict(), folder.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_cli_makes_a_clip_from_an_sdxl_folder(sdxl_folders, tmp_path):
    out = tmp_path / "clip.gif"
    argv = ["generate", "a red circle", "--model", str(sdxl_folders / "model"), "--motion-adapter",
            str(sdxl_folders / "mm_sdxl_tiny.ckpt"), "--frames", "3", "--steps", "2", "--height", "16", "--width", "16",
            "--scheduler", "dpmpp_2m_karras", "-o", str(out), "-q"]
    assert main(argv) == 0 and out.exists() and out.with_suffix(".json").exists()


def test_motion_module_of_the_other_family_is_one_line(sdxl_folders, tmp_path, capsys):
    sd15 = MotionAdapter(block_out_channels=(32, 64, 64, 64), layers_per_block=2, use_mid_block=True,
                         num_attention_heads=2)
    save_animatediff(sd15, tmp_path / "mm_sd15.safetensors")
    out = tmp_path / "clip.gif"
    common = ["--frames", "3", "--steps", "1", "--height", "16", "--width", "16", "-o", str(out), "-q"]
    assert main(["generate", "x", "--model", str(sdxl_folders / "model"), "--motion-adapter",
                 str(tmp_path / "mm_sd15.safetensors"), *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Stable Diffusion 1.x/2.x (4-level)" in err[0] and "SDXL (3-level)" in err[0]
    assert main(["generate", "x", "--model", "tiny", "--motion-adapter", str(sdxl_folders / "mm_sdxl_tiny.ckpt"), *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "made for a SDXL (3-level) UNet" in err[0]
    assert not out.exists()


def test_sdxl_unet_without_its_second_encoder_is_refused(parts, adapter):
    without = {k: v for k, v in parts.items() if not k.endswith("_2")}
    with pytest.raises(VidldmError, match="needs text_encoder_2"):
        VideoPipeline(**without, motion_adapter=from_diffusers(adapter), scheduler=DDIMScheduler(**ANIMATEDIFF_DDIM))
