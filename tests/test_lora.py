"""LoRAs (image, motion, several with weights, fused) give the same output in vidldm as in diffusers'
`AnimateDiffPipeline` on the same base weights and the same file; bad LoRAs end in one line, exit 2, no file."""

import copy

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import load_file, save_file

from vidldm.errors import VidldmError
from vidldm.loading import tiny_pipeline
from vidldm.models import motion_lora
from vidldm.models.temporal import SelfAttention
from vidldm.models.tiny import tiny_motion_adapter

FRAMES = 4
SETTINGS = dict(num_frames=FRAMES, height=32, width=32, num_inference_steps=2, guidance_scale=7.5, output_type="np")


def base_model():
    """A tiny pipeline whose adapter diffusers runs exactly (per-clip normalisation), and its diffusers twin
    (`to_diffusers` copies the UNet and the adapter; the text encoder is copied too, as LoRAs change it)."""
    base = tiny_pipeline()
    pipe = base.with_parts(motion_adapter=tiny_motion_adapter(base.unet, randomize=True, norm_mode="per_clip"))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe.to_diffusers()
    theirs.register_modules(text_encoder=copy.deepcopy(pipe.text_encoder))
    theirs.set_progress_bar_config(disable=True)
    return pipe, theirs


def random_lora(model, targets, rank=4, seed=1, std=0.05):
    """peft's LoRA layers on a copy of `model` with random A and B: their state dict (peft key names)."""
    torch.manual_seed(seed)
    model = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False),
                                    copy.deepcopy(model))
    return {k: torch.randn_like(v) * std for k, v in get_peft_model_state_dict(model).items()}


def image_lora_file(pipe, path, seed=1, text=True):
    """An image LoRA (UNet + text encoder) written by diffusers' own `save_lora_weights`."""
    unet = random_lora(pipe.unet, ["to_q", "to_k", "to_v", "to_out.0"], seed=seed)
    te = random_lora(pipe.text_encoder, ["q_proj", "k_proj", "v_proj", "out_proj"], seed=seed + 100) if text else None
    StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=unet, text_encoder_lora_layers=te,
                                              weight_name=path.name)
    return path


def animatediff_motion_lora(pipe, rank=4, seed=2, std=0.05) -> dict[str, torch.Tensor]:
    """A motion LoRA in AnimateDiff's original layout (as guoyww's v2_lora_*.ckpt): `processor.to_q_lora.down`."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, module in pipe.motion_adapter.named_modules():
        if isinstance(module, SelfAttention):
            for proj, layer in (("to_q", module.to_q), ("to_k", module.to_k), ("to_v", module.to_v), ("to_out", module.to_out[0])):
                sd[f"{name}.processor.{proj}_lora.down.weight"] = torch.randn(rank, layer.in_features, generator=g) * std
                sd[f"{name}.processor.{proj}_lora.up.weight"] = torch.randn(layer.out_features, rank, generator=g) * std
    return sd


def diffusers_converted(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What diffusers' scripts/convert_animatediff_motion_lora_to_diffusers.py writes for an AnimateDiff motion LoRA
    (its `convert_motion_module` renames, then the `unet.` prefix)."""
    out = {}
    for k, v in sd.items():
        new = (k.replace(".norms.0", ".norm1").replace(".norms.1", ".norm2").replace(".ff_norm", ".norm3")
               .replace(".attention_blocks.0", ".attn1").replace(".attention_blocks.1", ".attn2")
               .replace(".temporal_transformer", ""))
        out[f"unet.{new}"] = v
    return out


def unet_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, FRAMES, 4, 4, generator=g), torch.randn(1, 8, 32, generator=g)


@torch.no_grad()
def unet_diff(pipe, theirs) -> float:
    x, ctx = unet_inputs()
    ours = pipe.video_unet(x, 321, ctx)
    ref = theirs.unet(x, 321, ctx.repeat_interleave(FRAMES, 0)).sample  # diffusers repeats the text per frame
    return (ours - ref).abs().max().item()


def pipeline_diff(pipe, theirs) -> tuple[float, np.ndarray]:
    latents = torch.randn(1, 4, FRAMES, 4, 4, generator=torch.Generator().manual_seed(3))
    ours = pipe("a red circle", latents=latents, **SETTINGS).frames
    ref = theirs("a red circle", latents=latents, **SETTINGS).frames
    return float(np.abs(ours - ref).max()), ours


@pytest.fixture(scope="module")
def plain_frames():
    pipe, theirs = base_model()
    diff, frames = pipeline_diff(pipe, theirs)
    assert diff <= 1e-4
    return frames


# ----------------------------------------------------------------------------- parity with diffusers

def test_image_lora_unet_and_text_encoder_match_diffusers(tmp_path, plain_frames):
    pipe, theirs = base_model()
    path = image_lora_file(pipe, tmp_path / "style.safetensors")
    pipe.load_lora_weights(str(path), adapter_name="style")
    theirs.load_lora_weights(str(path), adapter_name="style")
    assert unet_diff(pipe, theirs) <= 1e-4
    diff, frames = pipeline_diff(pipe, theirs)
    assert diff <= 1e-4
    assert np.abs(frames - plain_frames).max() > 1e-3  # the LoRA acts
    pipe.unload_lora_weights()
    assert pipeline_diff(pipe, base_model()[1])[0] <= 1e-4  # and unloading gives the base model back


@pytest.mark.parametrize("layout", ["animatediff", "diffusers"])
def test_motion_lora_matches_diffusers(tmp_path, layout, plain_frames):
    pipe, theirs = base_model()
    original = animatediff_motion_lora(pipe)
    path = tmp_path / "zoom.safetensors"
    save_file(original if layout == "animatediff" else diffusers_converted(original), str(path))
    pipe.load_lora_weights(str(path), adapter_name="zoom")
    theirs.load_lora_weights(diffusers_converted(original), adapter_name="zoom")
    assert set(pipe.get_list_adapters()) == {"motion_adapter"}  # the image UNet is untouched
    assert unet_diff(pipe, theirs) <= 1e-4
    diff, frames = pipeline_diff(pipe, theirs)
    assert diff <= 1e-4 and np.abs(frames - plain_frames).max() > 1e-3


def test_two_loras_with_weights_then_fuse_and_unfuse_match_diffusers(tmp_path):
    pipe, theirs = base_model()
    style = image_lora_file(pipe, tmp_path / "style.safetensors")
    motion = diffusers_converted(animatediff_motion_lora(pipe))
    for p in (pipe, theirs):
        p.load_lora_weights(str(style), adapter_name="style")
        p.load_lora_weights(motion, adapter_name="zoom")
        p.set_adapters(["style", "zoom"], [0.6, 1.3])
    weighted = pipeline_diff(pipe, theirs)
    assert unet_diff(pipe, theirs) <= 1e-4 and weighted[0] <= 1e-4
    for p in (pipe, theirs):
        p.fuse_lora()
    fused = pipeline_diff(pipe, theirs)
    assert fused[0] <= 1e-4 and np.abs(fused[1] - weighted[1]).max() <= 1e-4  # fusing keeps the output
    for p in (pipe, theirs):
        p.unfuse_lora()
        p.set_adapters(["style", "zoom"], [1.0, 0.0])
    assert pipeline_diff(pipe, theirs)[0] <= 1e-4
