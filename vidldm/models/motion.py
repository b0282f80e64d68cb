"""`MotionAdapter`: the temporal layers for one image UNet, saved and loaded on their own.

Layout (the same keys as AnimateDiff's motion-module checkpoints, so those load as they are):

    down_blocks.{i}.motion_modules.{j}.temporal_transformer.*   one per resnet of down block i
    mid_block.motion_modules.0.temporal_transformer.*           optional (AnimateDiff v2+)
    up_blocks.{i}.motion_modules.{j}.temporal_transformer.*     one per resnet of up block i
    ...motion_modules.{j}.temporal_conv.*                       optional Video-LDM temporal conv

`VideoUNet` runs module `j` of block `i` right after the `j`-th resnet (+ attention) of that
block of the image UNet, at the block's channel width. Reading and writing other checkpoint
formats (AnimateDiff files, diffusers' `MotionAdapter`) lives in `motion_formats.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from vidldm.errors import CheckpointError, ShapeError
from vidldm.models.temporal import NormMode, SpatioTemporalTransformer, TemporalConvBlock, TemporalTransformer


class MotionModule(nn.Module):
    """The temporal layers that follow one spatial layer: `((B F), C, H, W)` in and out."""

    def __init__(self, channels: int, *, heads: int, num_layers: int, max_seq_length: int, norm_num_groups: int,
                 norm_mode: NormMode, temporal_conv: bool, cross_attention_dim: int | None = None,
                 spatiotemporal: bool = False):
        super().__init__()
        self.channels = channels
        self.temporal_conv = TemporalConvBlock(channels, norm_num_groups=norm_num_groups) if temporal_conv else None
        self.temporal_transformer = TemporalTransformer(
            channels, heads=heads, num_layers=num_layers, max_seq_length=max_seq_length,
            norm_num_groups=norm_num_groups, norm_mode=norm_mode, cross_attention_dim=cross_attention_dim,
        )
        self.spatiotemporal = SpatioTemporalTransformer(
            channels, heads=heads, norm_num_groups=norm_num_groups, cross_attention_dim=cross_attention_dim,
        ) if spatiotemporal else None

    def forward(self, x: torch.Tensor, num_frames: int, context: torch.Tensor | None = None) -> torch.Tensor:
        """x `((B F), C, H, W)`; context `((B F), L, D)` text per frame (read only by text cross-attention)."""
        if self.temporal_conv is not None:
            x = self.temporal_conv(x, num_frames)
        x = self.temporal_transformer(x, num_frames, context)
        if self.spatiotemporal is not None:
            x = self.spatiotemporal(x, num_frames, context)
        return x


class MotionBlock(nn.Module):
    """Holds the motion modules of one UNet block (a container, so keys read `...motion_modules.{j}`)."""

    def __init__(self, channels: int, count: int, **kwargs: Any):
        super().__init__()
        self.motion_modules = nn.ModuleList([MotionModule(channels, **kwargs) for _ in range(count)])


def _per_block(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries but there are {n} blocks")
    return tuple(int(v) for v in value)


class MotionAdapter(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """Temporal layers laid out for a UNet with `block_out_channels` and `layers_per_block`.

    `PeftAdapterMixin` gives it diffusers' LoRA methods (`load_lora_adapter`, `set_adapters`, `fuse_lora`...):
    motion LoRAs are injected by peft, as into diffusers' `UNetMotionModel` (see `motion_lora.py`).

    Down block `i` gets `layers_per_block[i]` modules at `block_out_channels[i]` channels; up
    block `i` (reversed order) gets `layers_per_block + 1`, matching the UNet's extra up resnet.
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int | Sequence[int] = 2,
        use_mid_block: bool = True,
        num_attention_heads: int = 8,
        transformer_layers: int = 1,
        max_seq_length: int = 32,
        norm_num_groups: int = 32,
        norm_mode: NormMode = "per_frame",
        temporal_conv: bool = False,
        frame_conditioning: bool = False,
        cross_attention_dim: int | None = None,
        spatiotemporal_levels: Sequence[int] | None = None,
        sparse_frame_conditioning: bool = False,
    ):
        """`frame_conditioning` records that the adapter was trained with clean known frames at t = 0,
        so the pipeline may animate images with per-frame timesteps ("clean") by default;
        `sparse_frame_conditioning`, that they were at any frames (`train.known_frames: sparse`), so keyframes
        and `interpolate-frames` inputs are clean too. Both only describe the weights.
        `cross_attention_dim` (the text encoder's width) adds text cross-attention to every temporal
        transformer, so motion words reach the temporal layers directly; AnimateDiff and diffusers
        adapters have none (None), and an adapter with it cannot be written in their formats.
        `spatiotemporal_levels` (UNet levels, 0 = finest) adds a `SpatioTemporalTransformer` after each
        temporal transformer of those levels (the mid block counts as the last level): for small
        latents only, its attention is quadratic in frames x height x width."""
        super().__init__()
        n = len(block_out_channels)
        layers = _per_block(layers_per_block, n, "layers_per_block")
        spatiotemporal_at = set(spatiotemporal_levels or ())
        if not spatiotemporal_at <= set(range(n)):
            raise ValueError(f"spatiotemporal_levels must be UNet levels 0..{n - 1}, got {sorted(spatiotemporal_at)}")
        common = dict(heads=num_attention_heads, num_layers=transformer_layers, max_seq_length=max_seq_length,
                      norm_num_groups=norm_num_groups, norm_mode=norm_mode, temporal_conv=temporal_conv,
                      cross_attention_dim=cross_attention_dim)
        self.down_blocks = nn.ModuleList([MotionBlock(c, k, spatiotemporal=i in spatiotemporal_at, **common)
                                          for i, (c, k) in enumerate(zip(block_out_channels, layers))])
        self.mid_block = MotionBlock(block_out_channels[-1], 1, spatiotemporal=n - 1 in spatiotemporal_at, **common) if use_mid_block else None
        self.up_blocks = nn.ModuleList(
            [MotionBlock(c, k + 1, spatiotemporal=n - 1 - i in spatiotemporal_at, **common)
             for i, (c, k) in enumerate(zip(reversed(block_out_channels), reversed(layers)))]
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs: Any):
        """diffusers' loader, but a folder missing some of the config's weights is an error: diffusers
        would leave those as uninitialised (meta) tensors and fail later, far from the cause."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, output_loading_info=True, **kwargs)
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise CheckpointError(
                f"motion adapter '{pretrained_model_name_or_path}' lacks {len(missing)} weights its config.json needs "
                f"(first: {missing[0]}); the weights file is incomplete or from another adapter"
            )
        return (model, info) if want_info else model

    @classmethod
    def from_unet_config(cls, unet_config: dict[str, Any] | Any, **overrides: Any) -> MotionAdapter:
        """A fresh (zero-output) adapter shaped for a `UNet2DConditionModel` config (SD 1.x/2.x, SDXL, tiny)."""
        config = dict(unet_config)
        kwargs: dict[str, Any] = dict(
            block_out_channels=tuple(config["block_out_channels"]),
            layers_per_block=config.get("layers_per_block", 2),
            use_mid_block=config.get("mid_block_type", "UNetMidBlock2DCrossAttn") is not None,
            norm_num_groups=config.get("norm_num_groups", 32),
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def with_spatiotemporal(self, levels: Sequence[int]) -> MotionAdapter:
        """This adapter plus spatio-temporal attention at `levels`: its weights are kept, the new layers
        start as the identity (zero output), so training can add them to an adapter that already works."""
        levels = sorted(set(levels) | set(self.config.get("spatiotemporal_levels") or ()))
        grown = type(self)(**{**self.config, "spatiotemporal_levels": levels}).to(self.device)
        if grown.dtype != self.dtype:
            grown = grown.to(dtype=self.dtype)
        missing, unexpected = grown.load_state_dict(self.state_dict(), strict=False)
        if unexpected or any(".spatiotemporal." not in k for k in missing):
            raise ValueError(f"cannot grow the adapter: keys {(unexpected or missing)[:3]} do not match")
        return grown

    @property
    def max_seq_length(self) -> int:
        return self.config.max_seq_length

    def block_modules(self) -> dict[str, nn.ModuleList]:
        """`{"down_blocks.0": modules, ..., "mid_block": modules, "up_blocks.0": ...}` in UNet order."""
        out = {f"down_blocks.{i}": b.motion_modules for i, b in enumerate(self.down_blocks)}
        if self.mid_block is not None:
            out["mid_block"] = self.mid_block.motion_modules
        out.update({f"up_blocks.{i}": b.motion_modules for i, b in enumerate(self.up_blocks)})
        return out

    def check_fits(self, unet: nn.Module) -> None:
        """Raise a `ShapeError` naming the first UNet block whose layout the adapter does not match."""
        def spatial(block: nn.Module) -> tuple[int, int]:
            n = len(block.attentions) if block.__class__.__name__.startswith("UNetMid") else len(block.resnets)
            return n, block.resnets[-1].out_channels

        text_dim = self.config.get("cross_attention_dim")
        if text_dim and text_dim != unet.config.cross_attention_dim:
            raise ShapeError(
                f"motion adapter does not fit the UNet: its temporal layers read {text_dim}-d text embeddings but the "
                f"UNet's text encoder gives {unet.config.cross_attention_dim}-d; use an adapter made for this base model"
            )
        if len(self.down_blocks) != len(unet.down_blocks):
            raise ShapeError(
                f"motion adapter does not fit the UNet: it is made for a {_family(len(self.down_blocks))} UNet but the "
                f"model is {_family(len(unet.down_blocks))}; use a motion module made for this base model"
            )
        expected = {f"down_blocks.{i}": spatial(b) for i, b in enumerate(unet.down_blocks)}
        if unet.mid_block is not None:
            expected["mid_block"] = spatial(unet.mid_block)
        expected.update({f"up_blocks.{i}": spatial(b) for i, b in enumerate(unet.up_blocks)})
        ours = self.block_modules()
        for name, modules in ours.items():
            if name not in expected:
                raise ShapeError(f"motion adapter does not fit the UNet: the adapter has {name} but the UNet does not")
            count, channels = expected[name]
            if modules[0].channels != channels:
                raise ShapeError(
                    f"motion adapter does not fit the UNet: {name} has {channels} channels in the UNet but "
                    f"{modules[0].channels} in the adapter; use an adapter made for this base model"
                )
            if len(modules) != count:
                raise ShapeError(
                    f"motion adapter does not fit the UNet: {name} has {count} layers in the UNet but "
                    f"{len(modules)} motion modules in the adapter; use an adapter made for this base model"
                )
        missing = [name for name in expected if name not in ours and not name.startswith("mid")]
        if missing:
            raise ShapeError(f"motion adapter does not fit the UNet: it has no motion modules for {missing[0]}")


def _family(levels: int) -> str:
    """What a UNet with `levels` down blocks is, in the words users know (SD 1.x/2.x have 4, SDXL 3)."""
    known = {4: "Stable Diffusion 1.x/2.x (4-level)", 3: "SDXL (3-level)"}
    return known.get(levels, f"{levels}-level")
