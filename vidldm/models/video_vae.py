"""`VideoVAE`: an image `AutoencoderKL` applied frame by frame, in chunks, with optional temporal decoder layers.

    video (B, 3, F, H, W) in [-1, 1] --encode--> latents (B, C, F, H/s, W/s), scaled
    latents                          --decode--> video (B, 3, F, H, W) in [-1, 1]

Latents are scaled (and shifted, for VAEs that say so) exactly as the image pipeline scales
them, so the UNet sees what it was trained on. Frames go through the VAE `chunk_size` at a
time: peak memory depends on the chunk, not on the clip length.

The optional `TemporalDecoder` (Video LDM's decoder finetuning against flicker) adds a
zero-initialised `TemporalConvBlock` after every resnet of the decoder's mid and up blocks;
it is a separate model with its own keys, so the VAE's weights stay untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from vidldm.errors import ShapeError
from vidldm.models.temporal import TemporalConvBlock


class TemporalDecoder(ModelMixin, ConfigMixin):
    """Temporal conv layers for a VAE decoder: `mid_block.temporal_layers.{j}`, `up_blocks.{i}.temporal_layers.{j}`."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, mid_channels: int, mid_layers: int, up_channels: Sequence[int], up_layers: int,
                 norm_num_groups: int = 32, learned_mix: bool = True):
        super().__init__()

        def layers(channels: int, n: int) -> nn.Module:
            block = nn.Module()
            block.temporal_layers = nn.ModuleList(
                [TemporalConvBlock(channels, norm_num_groups=norm_num_groups, learned_mix=learned_mix) for _ in range(n)]
            )
            return block

        self.mid_block = layers(mid_channels, mid_layers)
        self.up_blocks = nn.ModuleList([layers(c, up_layers) for c in up_channels])

    @classmethod
    def from_vae_config(cls, vae_config, **overrides) -> TemporalDecoder:
        """Shaped for a diffusers `AutoencoderKL` config (decoder: mid block with 2 resnets, up blocks with layers+1)."""
        c = dict(vae_config)
        channels = tuple(c["block_out_channels"])
        kwargs = dict(mid_channels=channels[-1], mid_layers=2, up_channels=tuple(reversed(channels)),
                      up_layers=c.get("layers_per_block", 1) + 1, norm_num_groups=c.get("norm_num_groups", 32))
        kwargs.update(overrides)
        return cls(**kwargs)


class VideoVAE(nn.Module):
    """Frame-wise, chunked encode/decode of clips with a diffusers `AutoencoderKL`."""

    def __init__(self, vae: AutoencoderKL, chunk_size: int | None = 8, temporal_decoder: TemporalDecoder | None = None):
        super().__init__()
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None (all frames at once), got {chunk_size}")
        self.vae = vae
        self.chunk_size = chunk_size
        self.temporal_decoder = temporal_decoder

    @property
    def scaling_factor(self) -> float:
        return self.vae.config.scaling_factor

    @property
    def shift_factor(self) -> float:
        return getattr(self.vae.config, "shift_factor", None) or 0.0

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    def _chunks(self, f: int) -> list[slice]:
        size = self.chunk_size or f
        return [slice(s, min(s + size, f)) for s in range(0, f, size)]

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False) -> torch.Tensor:
        """`(B, 3, F, H, W)` in [-1, 1] -> scaled latents `(B, C, F, H/s, W/s)`.

        `sample=False` takes the posterior mean (deterministic, what conditioning frames want);
        `sample=True` draws from it with `generator` (what training on clips usually does).
        """
        if video.ndim != 5 or video.shape[1] != self.vae.config.in_channels:
            raise ShapeError(
                f"expected video of shape (B, {self.vae.config.in_channels}, F, H, W), got {tuple(video.shape)}"
            )
        s = self.downsample_factor
        if video.shape[-2] % s or video.shape[-1] % s:
            raise ShapeError(f"video height and width must be multiples of {s}, got {video.shape[-2]}x{video.shape[-1]}")
        b = video.shape[0]
        out = []
        for chunk in self._chunks(video.shape[2]):
            frames = rearrange(video[:, :, chunk], "b c f h w -> (b f) c h w").to(self.vae.dtype)
            dist = self.vae.encode(frames).latent_dist
            z = dist.sample(generator) if sample else dist.mode()
            out.append(rearrange(z, "(b f) c h w -> b c f h w", b=b))
        # contiguous: the posterior's mean is a strided view of the encoder's moments
        return ((torch.cat(out, dim=2) - self.shift_factor) * self.scaling_factor).contiguous()

    def decode(self, latents: torch.Tensor, keep: Sequence[int] = ()) -> torch.Tensor:
        """Scaled latents `(B, C, F, h, w)` -> video `(B, 3, F, h*s, w*s)` in about [-1, 1].

        `keep`: frames the user gave (known frames: keyframes, an animated still), decoded by the image decoder
        alone even with a temporal decoder, which would blend them with neighbours that differ a lot (measured on
        the shapes model's in-betweening: keyframe PSNR 30.0 -> 26.5 dB blended; kept, 30.0 dB with the other
        frames still smoother than frame by frame).

        With a temporal decoder all frames go through at once, whatever `chunk_size` says: its temporal
        layers were trained on whole clips, and a chunk's edges (zero-padded in time) left a seam. Measured
        on the shapes model's stage 1c: chunks of 8 put a jump at frames 6-8 of every real clip (centroid
        second difference 1.1 px/frame² there, 0.08 elsewhere). Memory then grows with the clip's length.
        """
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ShapeError(f"expected latents of shape (B, {self.latent_channels}, F, h, w), got {tuple(latents.shape)}")
        b = latents.shape[0]
        z = latents / self.scaling_factor + self.shift_factor
        out = []
        chunks = self._chunks(z.shape[2]) if self.temporal_decoder is None else [slice(0, z.shape[2])]
        for chunk in chunks:
            frames = rearrange(z[:, :, chunk], "b c f h w -> (b f) c h w").to(self.vae.dtype)
            if self.temporal_decoder is None:
                x = self.vae.decode(frames).sample
            else:
                x = self._decode_temporal(frames, chunk.stop - chunk.start)
            out.append(rearrange(x, "(b f) c h w -> b c f h w", b=b))
        video = torch.cat(out, dim=2)
        if self.temporal_decoder is not None and len(keep):
            keep = sorted(set(keep))
            frames = rearrange(z[:, :, keep], "b c f h w -> (b f) c h w").to(self.vae.dtype)
            video[:, :, keep] = rearrange(self.vae.decode(frames).sample, "(b f) c h w -> b c f h w", b=b).to(video.dtype)
        return video

    def _decode_temporal(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The image decoder's own layers, walked in order, with a temporal layer after each resnet."""
        vae, decoder, temporal_decoder = self.vae, self.vae.decoder, self.temporal_decoder
        if vae.post_quant_conv is not None:
            z = vae.post_quant_conv(z)
        x = decoder.conv_in(z)
        mid, mid_t = decoder.mid_block, temporal_decoder.mid_block.temporal_layers
        x = mid_t[0](mid.resnets[0](x, None), num_frames)
        for attn, resnet, temporal in zip(mid.attentions, mid.resnets[1:], mid_t[1:]):
            if attn is not None:
                x = attn(x, temb=None)
            x = temporal(resnet(x, None), num_frames)
        for block, temporal_block in zip(decoder.up_blocks, temporal_decoder.up_blocks):
            for resnet, temporal in zip(block.resnets, temporal_block.temporal_layers):
                x = temporal(resnet(x, temb=None), num_frames)
            for up in block.upsamplers or []:
                x = up(x)
        x = decoder.conv_act(decoder.conv_norm_out(x))
        return decoder.conv_out(x)
