"""Benchmark models: random-weight components of a known shape, loaded *with the same weights* into
vidldm's `VideoPipeline` and diffusers' `AnimateDiffPipeline`.

- `"sd15"`: Stable Diffusion 1.5's UNet (`UNet2DConditionModel(cross_attention_dim=768)`) and VAE, a
  CLIP-L-shaped text encoder, and an AnimateDiff-v2-shaped motion adapter (mid block, 32 positions);
- `"tiny"`: the test-sized models of `vidldm.models.tiny`, for CPU runs.

The adapter normalises per clip (`norm_mode="per_clip"`), as diffusers' motion modules do, so both
pipelines compute the same function and their outputs can be compared; AnimateDiff's own
checkpoints normalise per frame in vidldm, at the same cost. Its output projections get ordinary
random weights instead of zeros, so the temporal layers change the result as trained ones do.

Masters are fp32 on the CPU; each benchmark case gets its own copy on its device and dtype (diffusers'
`UNetMotionModel.from_unet2d(unet, to_diffusers(adapter))` is built per case, from the same masters),
so one case's memory or compilation never leaks into another's and only one copy is alive at a time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from diffusers import AnimateDiffPipeline, AutoencoderKL, UNet2DConditionModel, UNetMotionModel
from torch import nn

from vidldm.models.motion import MotionAdapter
from vidldm.models.motion_formats import to_diffusers
from vidldm.models.temporal import TemporalTransformer
from vidldm.models.text import encode_text
from vidldm.pipeline import VideoPipeline
from vidldm.schedulers import ANIMATEDIFF_DDIM, default_scheduler

MODELS = ("sd15", "tiny")

SD15_UNET = dict(cross_attention_dim=768, sample_size=64)  # every other argument: diffusers' default = SD 1.5
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=512,
    block_out_channels=(128, 256, 512, 512), scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
CLIP_L = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=0, eos_token_id=1, pad_token_id=1,
)


@dataclass
class Components:
    """fp32 CPU masters, shared by both pipelines."""

    model: str
    unet: UNet2DConditionModel
    motion_adapter: MotionAdapter
    vae: AutoencoderKL
    text_encoder: nn.Module
    tokenizer: object

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels


def build_components(model: str = "tiny", seed: int = 0) -> Components:
    """Seeded random components of shape `model` ("sd15" or "tiny"); the same seed gives the same weights."""
    if model not in MODELS:
        raise ValueError(f"unknown benchmark model '{model}'; choose one of: {', '.join(MODELS)}")
    from transformers import CLIPTextConfig, CLIPTextModel

    from vidldm.models.tiny import byte_tokenizer, tiny_text_encoder, tiny_unet, tiny_vae

    if model == "tiny":
        unet, vae = tiny_unet(seed), tiny_vae(seed)
        text_encoder, tokenizer = tiny_text_encoder(seed), byte_tokenizer()
        max_frames = 16
    else:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**SD15_UNET).eval()
        vae = AutoencoderKL(**SD15_VAE).eval()
        text_encoder, tokenizer = CLIPTextModel(CLIPTextConfig(**CLIP_L)).eval(), byte_tokenizer(max_length=77)
        max_frames = 32  # AnimateDiff v2's position table
    adapter = random_motion_adapter(unet, seed=seed, max_seq_length=max_frames)
    return Components(model, unet, adapter, vae, text_encoder, tokenizer)


@torch.no_grad()
def random_motion_adapter(unet: UNet2DConditionModel, seed: int = 0, max_seq_length: int = 32) -> MotionAdapter:
    """An adapter shaped for `unet` (mid block included) whose zero-initialised output projections get
    PyTorch's ordinary `nn.Linear` initialisation, so the temporal layers do change the result."""
    torch.manual_seed(seed)
    adapter = MotionAdapter.from_unet_config(unet.config, max_seq_length=max_seq_length, norm_mode="per_clip")
    for m in adapter.modules():
        if isinstance(m, TemporalTransformer):
            m.proj_out.reset_parameters()
    return adapter.eval()


@torch.no_grad()
def prompt_embeddings(c: Components, prompt: str = "a corgi running on the beach", negative: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """`(1, L, D)` embeddings of `prompt` and `negative`, fp32 on the CPU: text encoding happens once,
    outside every timer, and both pipelines receive the same tensors."""
    states = encode_text(c.tokenizer, c.text_encoder, [prompt, negative])
    return states[:1], states[1:]


def _copy(module: nn.Module, device, dtype) -> nn.Module:
    # nn.Module.to, not ModelMixin.to: the latter warns about fp32-only modules these models do not have
    return nn.Module.to(copy.deepcopy(module), device=device, dtype=dtype)


def vidldm_pipeline(c: Components, device, dtype: torch.dtype, *, text_encoder: bool = False,
                    adapter_dtype: torch.dtype | None = None) -> VideoPipeline:
    """vidldm's pipeline on its own copy of the weights.

    No text encoder by default: embeddings are passed in. A training stage holds one, frozen, as a
    training run does (`text_encoder=True`), and trains its adapter in `adapter_dtype` (fp32 under autocast).
    """
    pipe = VideoPipeline(
        vae=_copy(c.vae, device, dtype),
        text_encoder=_copy(c.text_encoder, device, dtype) if text_encoder else None,
        tokenizer=c.tokenizer if text_encoder else None,
        unet=_copy(c.unet, device, dtype),
        motion_adapter=_copy(c.motion_adapter, device, adapter_dtype or dtype), scheduler=default_scheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_unet(c: Components) -> UNetMotionModel:
    """The masters as diffusers' video UNet: `UNetMotionModel.from_unet2d` with the converted adapter (a copy)."""
    return UNetMotionModel.from_unet2d(c.unet, to_diffusers(c.motion_adapter)).eval()


def diffusers_pipeline(c: Components, device, dtype: torch.dtype) -> AnimateDiffPipeline:
    """diffusers' `AnimateDiffPipeline` on its own copy of the same weights, with the same DDIM schedule."""
    from diffusers import DDIMScheduler

    pipe = AnimateDiffPipeline(
        vae=_copy(c.vae, device, dtype), text_encoder=None, tokenizer=None,
        unet=nn.Module.to(diffusers_unet(c), device=device, dtype=dtype), motion_adapter=None,
        scheduler=DDIMScheduler(**ANIMATEDIFF_DDIM),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def initial_latents(c: Components, frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Seeded starting noise `(1, C, F, h, w)`, fp32 on the CPU: both pipelines start from it."""
    s = c.vae_scale_factor
    if height % s or width % s:
        raise ValueError(f"height and width must be multiples of {s} for the {c.model} VAE, got {height}x{width}")
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c.latent_channels, frames, height // s, width // s, generator=g)
