"""Motion LoRAs: the key layouts of AnimateDiff and diffusers, and vidldm's module names peft injects into.

    AnimateDiff (v2_lora_ZoomIn.ckpt ...)
        down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0
        .processor.to_q_lora.down.weight                                  (and .up.; to_out_lora = to_out.0)
    diffusers (what `AnimateDiffPipeline.load_lora_weights` reads into `UNetMotionModel`)
        unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.lora_A.weight      (peft names)
        unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight
                                                        (diffusers' scripts/convert_animatediff_motion_lora_to_diffusers.py)
    vidldm (peft on `MotionAdapter`, whose module names are AnimateDiff's)
        down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.lora_A.weight

AnimateDiff adds `up @ down` at scale 1, which is peft's `lora_alpha = r` and diffusers' default for a file
without alphas, so no scale travels with the keys. Module names are renamed with `motion_formats`' table;
the LoRA suffixes (`to_q_lora.down` -> `to_q.lora_A`) with diffusers' own converter.
"""

from __future__ import annotations

import re

import torch

from vidldm.errors import CheckpointError
from vidldm.models.motion_formats import animatediff_to_diffusers, diffusers_to_animatediff

_ANIMATEDIFF_LORA = re.compile(r"(.*)\.(to_q|to_k|to_v|to_out\.0)\.lora_([AB])\.weight$")


def is_motion_lora(sd: dict[str, torch.Tensor]) -> bool:
    """Whether a LoRA state dict holds motion-module weights (in any of the layouts above)."""
    return any(".motion_modules." in k for k in sd)


def to_vidldm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Motion-module LoRA keys of either layout -> peft keys on vidldm's `MotionAdapter` (tensors shared)."""
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    if any(k.endswith(".alpha") for k in sd):  # neither AnimateDiff nor diffusers writes them for motion LoRAs
        raise CheckpointError("this motion LoRA carries per-layer alphas (kohya-style), which vidldm does not read for "
                              "motion modules; convert it to AnimateDiff's or diffusers' layout")
    sd = {k.removeprefix("unet."): v for k, v in sd.items()}
    if not any(".temporal_transformer." in k for k in sd):  # diffusers' module names
        sd = diffusers_to_animatediff(sd)
    sd = convert_unet_state_dict_to_peft(sd)  # `.processor.to_q_lora.down` -> `.to_q.lora_A`, `.lora.up` -> `.lora_B`
    odd = [k for k in sd if ".lora_A." not in k and ".lora_B." not in k]
    if odd:
        raise CheckpointError(f"unexpected key in a motion LoRA: {odd[0]} (expected LoRA down/up or lora_A/lora_B weights)")
    return sd


def to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """vidldm peft keys -> diffusers' `UNetMotionModel` peft keys, without the `unet.` prefix
    (diffusers' `save_lora_weights(unet_lora_layers=...)` adds it)."""
    return animatediff_to_diffusers(sd)


def to_animatediff(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """vidldm peft keys -> AnimateDiff's original motion-LoRA keys (its loader knows only the attention
    projections, so a LoRA on other layers is refused)."""
    out = {}
    for key, value in sd.items():
        m = _ANIMATEDIFF_LORA.match(key)
        if m is None:
            raise CheckpointError(f"AnimateDiff's motion-LoRA layout holds only to_q/to_k/to_v/to_out LoRAs, not {key}")
        prefix, layer, side = m.groups()
        name = layer.removesuffix(".0")
        out[f"{prefix}.processor.{name}_lora.{'down' if side == 'A' else 'up'}.weight"] = value
    return out
