"""`VideoUNet`: a diffusers image UNet, untouched, with a `MotionAdapter` run between its layers.

    latents (B, C, F, H, W) --fold--> ((B F), C, H, W) --image UNet layers + motion modules--> unfold

The image UNet stays a plain `UNet2DConditionModel` (Stable Diffusion weights load into it as
they are); this module walks its blocks and, after each resnet (+ cross-attention) pair,
runs the matching temporal module, as AnimateDiff does. Because frames are folded into the
batch, every frame can have its own timestep and its own text embedding at no extra cost:
that is how known frames (t = 0) and prompt travel work in the sampler.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidldm.errors import ShapeError
from vidldm.models.motion import MotionAdapter

_SUPPORTED_BLOCKS = {
    "CrossAttnDownBlock2D", "DownBlock2D", "UNetMidBlock2DCrossAttn", "CrossAttnUpBlock2D", "UpBlock2D",
}


class VideoUNet(nn.Module):
    """Image UNet + motion adapter; `forward` maps noisy latents `(B, C, F, H, W)` to `(B, C, F, H, W)`."""

    def __init__(self, unet: UNet2DConditionModel, motion_adapter: MotionAdapter):
        super().__init__()
        blocks = [*unet.down_blocks, *([unet.mid_block] if unet.mid_block is not None else []), *unet.up_blocks]
        for block in blocks:
            if type(block).__name__ not in _SUPPORTED_BLOCKS:
                raise ShapeError(
                    f"UNet block type {type(block).__name__} is not supported; vidldm runs Stable-Diffusion-style "
                    f"UNets ({', '.join(sorted(_SUPPORTED_BLOCKS))})"
                )
        motion_adapter.check_fits(unet)
        self.unet = unet
        self.motion_adapter = motion_adapter
        self.gradient_checkpointing = False

    # ------------------------------------------------------------------ conveniences
    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def max_seq_length(self) -> int:
        return self.motion_adapter.max_seq_length

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each (resnet, attention, motion module) step in backward instead of storing it."""
        self.gradient_checkpointing = enabled

    # ------------------------------------------------------------------ inputs
    def _check_inputs(self, sample: torch.Tensor) -> tuple[int, int]:
        if sample.ndim != 5:
            raise ShapeError(f"expected latents of shape (B, C, F, H, W), got a {sample.ndim}-D tensor {tuple(sample.shape)}")
        b, c, f = sample.shape[:3]
        if c != self.unet.config.in_channels:
            raise ShapeError(f"latents have {c} channels but the UNet takes {self.unet.config.in_channels}")
        if f > self.max_seq_length:
            raise ShapeError(
                f"{f} frames exceed the motion adapter's position encoding ({self.max_seq_length} frames); "
                f"generate longer clips with context windows (the pipeline does this when num_frames > {self.max_seq_length})"
            )
        return b, f

    @staticmethod
    def frame_timesteps(timestep: torch.Tensor | float | int, b: int, f: int, device: torch.device) -> torch.Tensor:
        """Timesteps as `((B F),)`: from a scalar, `(B,)`, or per frame `(B, F)`."""
        t = torch.as_tensor(timestep, device=device)
        if t.ndim == 0 or t.shape == (1,):
            return t.reshape(()).expand(b * f)
        if t.shape == (b,):
            return repeat(t, "b -> (b f)", f=f)
        if t.shape == (b, f):
            return rearrange(t, "b f -> (b f)")
        raise ShapeError(f"timestep must be a scalar, ({b},) or ({b}, {f}) per frame; got shape {tuple(t.shape)}")

    @staticmethod
    def frame_embeddings(states: torch.Tensor, b: int, f: int) -> torch.Tensor:
        """Text embeddings as `((B F), L, D)`: from `(B, L, D)` shared by the frames or `(B, F, L, D)` per frame."""
        if states.ndim == 3 and states.shape[0] == b:
            return repeat(states, "b l d -> (b f) l d", f=f)
        if states.ndim == 4 and states.shape[:2] == (b, f):
            return rearrange(states, "b f l d -> (b f) l d")
        raise ShapeError(
            f"encoder_hidden_states must be ({b}, L, D) or ({b}, {f}, L, D) per frame; got {tuple(states.shape)}"
        )

    @staticmethod
    def frame_added(name: str, value: torch.Tensor | list[torch.Tensor], b: int, f: int) -> torch.Tensor | list[torch.Tensor]:
        """An `added_cond_kwargs` value as `((B F), ...)`: SDXL's shared by the frames `(B, ...)`, or the pooled text
        per frame `(B, F, P)` (prompt travel); IP-Adapter `image_embeds`, a list (one per adapter) always per frame
        `(B, F, N, ...)`, so that frame ranges may hold different image prompts."""
        if name == "image_embeds":
            if any(e.shape[:2] != (b, f) for e in value):
                raise ShapeError(f"image_embeds must be one ({b}, {f}, N, ...) tensor per IP-Adapter (a frame axis); got "
                                 f"{[tuple(e.shape) for e in value]}")
            return [rearrange(e, "b f ... -> (b f) ...") for e in value]
        if name == "text_embeds" and value.ndim == 3:
            if value.shape[:2] != (b, f):
                raise ShapeError(f"per-frame text_embeds must be ({b}, {f}, P); got {tuple(value.shape)}")
            return rearrange(value, "b f p -> (b f) p")
        if value.shape[0] != b:
            raise ShapeError(f"added_cond_kwargs['{name}'] must have batch {b}; got shape {tuple(value.shape)}")
        return repeat(value, "b ... -> (b f) ...", f=f)

    @staticmethod
    def add_residuals(skips: list[torch.Tensor], residuals: list[torch.Tensor]) -> list[torch.Tensor]:
        """The skips `((B F), C_i, H_i, W_i)` (conv_in's output, then every resnet's and downsampler's) plus a ControlNet's
        residuals of the same shapes, as diffusers' `UNetMotionModel` adds them: the up blocks read the sums, the mid
        block the plain last down output."""
        if len(residuals) != len(skips) or any(r.shape[1:] != s.shape[1:] for r, s in zip(residuals, skips)):
            raise ShapeError(f"the ControlNet makes {len(residuals)} residuals {[tuple(r.shape[1:]) for r in residuals]} but "
                             f"this UNet has {len(skips)} skips {[tuple(s.shape[1:]) for s in skips]}; it was made for another base model")
        return [s + r for s, r in zip(skips, residuals)]

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        temporal: bool = True,
        down_block_additional_residuals: list[torch.Tensor] | None = None, mid_block_additional_residual=None,
    ) -> torch.Tensor:
        """Predict noise (or v) for a clip.

        sample: `(B, C, F, H, W)`; timestep: scalar, `(B,)` or `(B, F)`; encoder_hidden_states:
        `(B, L, D)` or `(B, F, L, D)`; added_cond_kwargs (SDXL): `text_embeds` `(B, P)` or per frame `(B, F, P)`,
        `time_ids` `(B, 6)`; IP-Adapter `image_embeds` per frame (see `frame_added`). ControlNet residuals, folded
        `((B F), C_i, H_i, W_i)`, one per skip and one for the mid block (diffusers' names; see `add_residuals`).
        `temporal=False` skips the motion modules: the image UNet alone, every frame on its own. Returns `(B, C, F, H, W)`.
        """
        b, f = self._check_inputs(sample)
        unet = self.unet
        x = rearrange(sample, "b c f h w -> (b f) c h w")
        t = self.frame_timesteps(timestep, b, f, x.device)
        context = self.frame_embeddings(encoder_hidden_states, b, f)
        if added_cond_kwargs:
            added_cond_kwargs = {k: self.frame_added(k, v, b, f) for k, v in added_cond_kwargs.items()}

        emb = unet.time_embedding(unet.get_time_embed(sample=x, timestep=t), None)
        if unet.get_class_embed(sample=x, class_labels=None) is not None:
            raise ShapeError("UNets with class embeddings are not supported")
        aug_emb = unet.get_aug_embed(emb=emb, encoder_hidden_states=context, added_cond_kwargs=added_cond_kwargs or {})
        if aug_emb is not None:
            emb = emb + aug_emb
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        text = context  # the motion modules' text attention reads the text alone, never image tokens
        # With an IP-Adapter: (text, [image tokens ((B F), N, T, D) per adapter]) for its attention processors
        context = unet.process_encoder_hidden_states(encoder_hidden_states=context, added_cond_kwargs=added_cond_kwargs or {})

        step = _Step(emb, context, f, cross_attention_kwargs, self.gradient_checkpointing and torch.is_grad_enabled(),
                     temporal, text)
        adapter = self.motion_adapter

        x = unet.conv_in(x)
        skips = [x]
        for block, motion in zip(unet.down_blocks, adapter.down_blocks):
            attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for resnet, attn, motion_module in zip(block.resnets, attentions, motion.motion_modules):
                x = step(x, resnet, attn, motion_module)
                skips.append(x)
            for down in block.downsamplers or []:
                x = down(x)
                skips.append(x)
        if down_block_additional_residuals is not None:
            skips = self.add_residuals(skips, down_block_additional_residuals)

        if unet.mid_block is not None:
            mid = unet.mid_block
            x = mid.resnets[0](x, emb)
            motion_modules = adapter.mid_block.motion_modules if adapter.mid_block is not None else [None] * len(mid.attentions)
            for attn, resnet, motion_module in zip(mid.attentions, mid.resnets[1:], motion_modules):
                x = step(x, None, attn, motion_module)
                x = resnet(x, emb)
        if mid_block_additional_residual is not None:
            x = x + mid_block_additional_residual

        # Sizes not divisible by the total upsampling need the skip's size passed to each upsampler.
        forward_size = any(s % 2**unet.num_upsamplers for s in sample.shape[-2:])
        for i, (block, motion) in enumerate(zip(unet.up_blocks, adapter.up_blocks)):
            attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for resnet, attn, motion_module in zip(block.resnets, attentions, motion.motion_modules):
                x = torch.cat([x, skips.pop()], dim=1)
                x = step(x, resnet, attn, motion_module)
            upsample_size = skips[-1].shape[2:] if forward_size and i < len(unet.up_blocks) - 1 else None
            for up in block.upsamplers or []:
                x = up(x, upsample_size)

        if unet.conv_norm_out is not None:
            x = unet.conv_act(unet.conv_norm_out(x))
        x = unet.conv_out(x)
        return rearrange(x, "(b f) c h w -> b c f h w", b=b)


class _Step:
    """One `resnet -> cross-attention -> motion module` step on folded frames `((B F), C, H, W)`.

    Holds what every step shares, so the UNet walk above reads as the block structure it mirrors.
    With `checkpointing`, the step's activations are recomputed in backward; without `temporal`,
    the motion module is skipped.
    """

    def __init__(self, emb, context, num_frames, cross_attention_kwargs, checkpointing, temporal=True, text=None):
        self.emb, self.context, self.num_frames = emb, context, num_frames
        self.text = context if text is None else text
        self.cross_attention_kwargs = cross_attention_kwargs
        self.checkpointing = checkpointing
        self.temporal = temporal

    def __call__(self, x, resnet, attn, motion_module):
        if self.checkpointing:
            return checkpoint(self._run, x, resnet, attn, motion_module, use_reentrant=False)
        return self._run(x, resnet, attn, motion_module)

    def _run(self, x, resnet, attn, motion_module):
        if resnet is not None:
            x = resnet(x, self.emb)
        if attn is not None:
            x = attn(x, encoder_hidden_states=self.context, cross_attention_kwargs=self.cross_attention_kwargs,
                     return_dict=False)[0]
        if motion_module is not None and self.temporal:
            x = motion_module(x, self.num_frames, self.text)
        return x
