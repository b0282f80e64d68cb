"""Tiny Stable-Diffusion-shaped models built from configs in code, for tests and offline demos.

Same block types and layouts as SD 1.5 (cross-attention down/up blocks, a plain last down
block, a cross-attention mid block), at a size that runs in milliseconds on a CPU.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from vidldm.models.motion import MotionAdapter

TINY_UNET_CONFIG = dict(
    sample_size=16,  # latents 16x16 -> 32x32 frames through the 2x tiny VAE
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)

TINY_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64),
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=32,
    sample_size=32,
)


def tiny_unet(seed: int = 0, **overrides) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**{**TINY_UNET_CONFIG, **overrides}).eval()


def tiny_vae(seed: int = 0, **overrides) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(**{**TINY_VAE_CONFIG, **overrides}).eval()


def tiny_motion_adapter(unet: UNet2DConditionModel, seed: int = 0, randomize: bool = False, **overrides) -> MotionAdapter:
    """A motion adapter for `unet`; `randomize=True` replaces the zero-initialised outputs with
    small random weights, so the temporal layers actually change the result (for tests)."""
    torch.manual_seed(seed)
    adapter = MotionAdapter.from_unet_config(unet.config, max_seq_length=overrides.pop("max_seq_length", 16), **overrides)
    if randomize:
        randomize_(adapter)
    return adapter.eval()


@torch.no_grad()
def randomize_(module: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter (not buffers) with seeded noise, norms around 1, in place."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=g) * std
        p.copy_(noise + 1 if name.endswith("weight") and p.ndim == 1 else noise)
    return module


def byte_tokenizer(max_length: int = 32):
    """A byte-level tokenizer built in code (no vocabulary files to download): any text -> byte ids.

    Behaves like CLIP's tokenizer for the pipeline: start/end tokens, padding to `max_length`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{ch: i + 2 for i, ch in enumerate(alphabet)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>", model_max_length=max_length,
    )


def tiny_text_encoder(seed: int = 0, hidden_size: int = 32, vocab_size: int = 258, max_length: int = 32):
    """A 2-layer CLIP text transformer, randomly initialised, sized for `byte_tokenizer`."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=max_length, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    return CLIPTextModel(config).eval()
