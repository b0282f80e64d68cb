"""ControlNet and SparseCtrl on a `VideoPipeline`: residuals added to the image UNet's skips, with diffusers' names.

    control clip (F, H, W, 3) --resize to the clip--> pixels (B, 3, F, H, W) in [0, 1]
        --ControlNetModel, frame by frame ((B F), ...)--> residuals, one per skip + one for the mid block
    keyframes {index: image} --(RGB SparseCtrl: VAE)--> (B, C, F, ...) zeros off the keyframes, a 0/1 mask
        --SparseControlNetModel, the window at once (it has motion modules)--> residuals
    residuals --GuidedDenoiser--> VideoUNet.forward(down_block_additional_residuals=..., mid_block_additional_residual=...)

The residuals are a conditioning of the one loop (`ControlResiduals`, handed to `GuidedDenoiser`): each model call
computes them for the frames of its context window, with the control frames sliced to the window as the text is.
Classifier-free guidance as diffusers' `AnimateDiffControlNetPipeline`: both halves get the same control; in guess mode
(or for a ControlNet with `global_pool_conditions`) only the conditional half does, the unconditional half gets none
(diffusers' `StableDiffusionControlNetPipeline` pads zeros there; its AnimateDiff pipelines fail on a batch mismatch).
`control_guidance_start` / `control_guidance_end` switch a net on for a fraction of the steps, with diffusers' rule.

Several nets (`controlnet=[a, b]`, diffusers' `MultiControlNetModel`) add their residuals up, each with its own scale,
start and end. A control clip must have the clip's frame count (refused otherwise, never resampled in time: a
control video that silently drifts against the clip is worse than an error); frames of another size are resized and
centre-cropped to the clip's, as input videos are. A one-frame control (an image) holds for every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import ControlNetModel, SparseControlNetModel
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from einops import rearrange

from vidldm.errors import VidldmError
from vidldm.frames import load_frames, resize_center_crop
from vidldm.models.video_unet import VideoUNet

CONTROL_ARGS = ("conditioning_frames", "controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end",
                "guess_mode", "controlnet_frame_indices")


@dataclass
class ControlUnit:
    """One net and its conditioning for the clip: `cond` `(1, C, F, H', W')` (ControlNet: pixels in [0, 1]; SparseCtrl:
    pixels or latents, zeros off the keyframes) and SparseCtrl's `mask` `(1, 1, F, H', W')` (1 on keyframes)."""

    net: ControlNetModel | SparseControlNetModel
    cond: torch.Tensor
    scale: float
    start: float
    end: float
    mask: torch.Tensor | None = None

    def on(self, step: int, num_steps: int) -> bool:
        """diffusers' `controlnet_keep`: on while step i is not before `start` nor (i + 1) past `end` (fractions)."""
        return not (step / num_steps < self.start or (step + 1) / num_steps > self.end)


class ControlResiduals:
    """The UNet keywords of the control residuals for one model call (see `__call__`)."""

    def __init__(self, units: list[ControlUnit], guess_mode: bool, num_steps: int = 1):
        self.units, self.guess_mode, self.num_steps = units, guess_mode, num_steps

    def for_steps(self, num_steps: int) -> ControlResiduals:
        """The same control for a loop of `num_steps` (start and end are fractions of the loop's steps)."""
        return ControlResiduals(self.units, self.guess_mode, num_steps)

    @property
    def keyframes(self) -> list[int]:
        """The frames a SparseCtrl net pins to a keyframe (its mask's frames), sorted: the pipeline decodes them with
        the image decoder alone, as known frames, so a temporal decoder does not pull them toward their neighbours."""
        pinned = {int(i) for u in self.units if u.mask is not None for i in u.mask[0, 0, :, 0, 0].nonzero().flatten()}
        return sorted(pinned)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, frames, step: int,
                 guided: bool) -> dict[str, Any]:
        """`x` `(N, C, f, h, w)` and `t` `(N, f)` as the UNet gets them (under guidance N = 2B, unconditional half first),
        `context` the window's text `(N, L, D)` or `(N, f, L, D)`, `frames` the window's frames of the clip. Returns
        `down_block_additional_residuals` (folded `((N f), ...)`) and `mid_block_additional_residual`, or {} when no net
        is on at `step` (the same numbers as adding zeros, without running the nets)."""
        units = [u for u in self.units if u.on(step, self.num_steps)]
        if not units:
            return {}
        half = self.guess_mode and guided  # only the conditional half is controlled
        if half:
            x, t, context = x.chunk(2)[1], t.chunk(2)[1], context.chunk(2)[1]
        down, mid = None, None
        for unit in units:
            d, m = _run(unit, x, t, context, frames, self.guess_mode)
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        if half:
            down, mid = [torch.cat([torch.zeros_like(d), d]) for d in down], torch.cat([torch.zeros_like(mid), mid])
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def _run(unit: ControlUnit, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, frames, guess_mode: bool):
    """One net's residuals for the window: the control frames sliced to it and tiled to the batch `N` of `x`."""
    n, f, dtype = x.shape[0], x.shape[2], unit.net.dtype
    tiles = (n // unit.cond.shape[0], 1, 1, 1, 1)  # (1 or B) -> N, the halves in the order of `x`
    cond = unit.cond[:, :, frames].to(x.device, dtype).repeat(tiles)
    text = VideoUNet.frame_embeddings(context, n, f).to(dtype)  # ((N f), L, D), as diffusers repeats it per frame
    kwargs = dict(encoder_hidden_states=text, conditioning_scale=unit.scale, guess_mode=guess_mode, return_dict=False)
    if isinstance(unit.net, SparseControlNetModel):
        # It folds the frames itself and takes one timestep per clip: the loop's level (known frames sit at 0).
        mask = unit.mask[:, :, frames].to(x.device, dtype).repeat(tiles)
        down, mid = unit.net(x.to(dtype), t.amax(dim=1), controlnet_cond=cond, conditioning_mask=mask, **kwargs)
    else:
        sample = rearrange(x, "n c f h w -> (n f) c h w").to(dtype)
        down, mid = unit.net(sample, VideoUNet.frame_timesteps(t, n, f, x.device),
                             controlnet_cond=rearrange(cond, "n c f h w -> (n f) c h w"), **kwargs)
    return [d.to(x.dtype) for d in down], mid.to(x.dtype)


# ----------------------------------------------------------------------------- the pipeline's side

def as_list(value, n: int, name: str) -> list:
    """A per-net setting: one value for every net, or a list of one per net."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise VidldmError(f"{name} has {len(values)} values for {n} ControlNets; give one, or one per net")
    return values


def check_indices(indices, num_frames: int) -> list[int]:
    """SparseCtrl's `controlnet_frame_indices`: whole frame indices within the clip, each once."""
    indices = list(indices)
    bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < num_frames]
    if not indices or bad:
        raise VidldmError(f"keyframe indices must be frames in [0, {num_frames - 1}], got {bad[0] if bad else 'none'}")
    twice = sorted({i for i in indices if indices.count(i) > 1})
    if twice:
        raise VidldmError(f"two keyframes on frame {twice[0]}; give each frame one keyframe")
    return [int(i) for i in indices]


def control_clip(source, num_frames: int, height: int, width: int) -> torch.Tensor:
    """A ControlNet's clip -> `(1, 3, F, H, W)` in [0, 1]: resized and centre-cropped to the clip, an image held for
    every frame; another frame count is refused."""
    frames = load_frames(source)
    if len(frames) == 1:
        frames = np.repeat(frames, num_frames, axis=0)
    if len(frames) != num_frames:
        raise VidldmError(f"the control video has {len(frames)} frames but the clip has {num_frames}; give a control "
                          f"video of {num_frames} frames (or set the clip's frame count to {len(frames)})")
    return pixels(frames, height, width)


def pixels(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """`(F, H', W', 3)` uint8 -> `(1, 3, F, height, width)` float in [0, 1] (diffusers' control image processing)."""
    resized = np.stack([resize_center_crop(f, height, width) for f in frames])
    return rearrange(torch.from_numpy(resized).float() / 255.0, "f h w c -> 1 c f h w")


class VideoControlNetMixin:
    """ControlNet / SparseCtrl for `VideoPipeline`: `set_controlnet`, and the `__call__` arguments of `CONTROL_ARGS`."""

    def set_controlnet(self, controlnet) -> None:
        """Use `controlnet` (a `ControlNetModel`, a `SparseControlNetModel`, a list of them or a `MultiControlNetModel`;
        None: none) in later calls; a net made for another base model is refused."""
        nets = _nets(controlnet)
        if nets and self.offloaded:  # its groups (its hooked layers) were fixed when offload was enabled
            raise VidldmError("set the ControlNet before enabling CPU offload (it must move with the UNet); call "
                              "pipe.remove_all_hooks() first")
        for i, net in enumerate(nets):
            check_fits(net, self.unet, f"ControlNet {i + 1}" if len(nets) > 1 else "the ControlNet")
        if len(nets) > 1 and not isinstance(controlnet, MultiControlNetModel):
            controlnet = MultiControlNetModel(nets)
        elif len(nets) == 1:
            controlnet = nets[0]
        self.register_modules(controlnet=controlnet)

    @property
    def controlnets(self) -> list:
        return _nets(getattr(self, "controlnet", None))

    def control_residuals(self, video_vae, given: dict[str, Any], num_frames: int, size: tuple[int, int],
                          device) -> ControlResiduals | None:
        """The call's control (`given`: its `CONTROL_ARGS`), checked and prepared (RGB SparseCtrl keyframes encoded with
        `video_vae`), or None without a ControlNet."""
        def encode(frames, device):  # (K, H, W, 3) uint8 -> (1, C, K, h, w), the posterior mean as for known frames
            return self._encode_frames(video_vae, [frames], *size, device)

        nets, frames = self.controlnets, given["conditioning_frames"]
        if not nets:
            if frames is not None:
                raise VidldmError("conditioning_frames need a ControlNet: pipe.set_controlnet(...) first (CLI: --controlnet "
                                  "or --sparsectrl)")
            return None
        if frames is None:
            raise VidldmError("a ControlNet is set: give conditioning_frames (CLI: --control, or --keyframe for SparseCtrl), "
                              "or pipe.set_controlnet(None)")
        per_net = as_list(frames, len(nets), "conditioning_frames") if len(nets) > 1 else [frames]
        scales = as_list(given["controlnet_conditioning_scale"], len(nets), "controlnet_conditioning_scale")
        starts = as_list(given["control_guidance_start"], len(nets), "control_guidance_start")
        ends = as_list(given["control_guidance_end"], len(nets), "control_guidance_end")
        units = []
        for net, source, scale, start, end in zip(nets, per_net, scales, starts, ends):
            check_range(scale, start, end)
            if isinstance(net, SparseControlNetModel):
                cond, mask = sparse_conditioning(net, source, given["controlnet_frame_indices"], num_frames, size, device,
                                                 encode)
            else:
                cond, mask = control_clip(source, num_frames, *size), None
            # on the device once: the loop slices them for every model call
            mask = None if mask is None else mask.to(device)
            units.append(ControlUnit(net, cond.to(device), float(scale), float(start), float(end), mask))
        guess = bool(given["guess_mode"]) or bool(nets[0].config.get("global_pool_conditions", False))
        return ControlResiduals(units, guess)


def check_range(scale, start, end) -> None:
    for name, value in (("controlnet_conditioning_scale", scale), ("control_guidance_start", start),
                        ("control_guidance_end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise VidldmError(f"{name} must be a number, got {value!r}")
    if not 0.0 <= start < end <= 1.0:
        raise VidldmError(f"control guidance must start before it ends, within 0-1 (fractions of the steps); got start "
                          f"{start} and end {end}")


def sparse_conditioning(net, source, indices, num_frames: int, size: tuple[int, int], device,
                        encode) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseCtrl's conditioning as diffusers' `prepare_sparse_control_conditioning`: the keyframes (images, or VAE
    latents for the RGB model, `use_simplified_condition_embedding`) at `indices`, zeros elsewhere `(1, C, F, H', W')`,
    and the mask `(1, 1, F, H', W')`, 1 on the keyframes."""
    images = source if isinstance(source, (list, tuple)) else [source]
    indices = check_indices([0] if indices is None else indices, num_frames)
    if len(images) != len(indices):
        raise VidldmError(f"{len(images)} keyframe images for {len(indices)} controlnet_frame_indices; give one index per image")
    stills = [load_frames(im, image=True)[0] for im in images]
    if net.config.use_simplified_condition_embedding:
        keys = encode(np.stack([resize_center_crop(s, *size) for s in stills]), device).float()
    else:
        keys = pixels(np.stack(stills), *size)
    cond = torch.zeros(*keys.shape[:2], num_frames, *keys.shape[3:])
    mask = torch.zeros(1, 1, num_frames, *keys.shape[3:])
    cond[:, :, indices], mask[:, :, indices] = keys.cpu(), 1.0
    return cond, mask


def _nets(controlnet) -> list:
    if controlnet is None:
        return []
    if isinstance(controlnet, MultiControlNetModel):
        return list(controlnet.nets)
    nets = list(controlnet) if isinstance(controlnet, (list, tuple)) else [controlnet]
    for net in nets:
        if not isinstance(net, (ControlNetModel, SparseControlNetModel)):
            raise VidldmError(f"a ControlNet must be a diffusers ControlNetModel or SparseControlNetModel, got "
                              f"{type(net).__name__}")
    return nets


def check_fits(net, unet, name: str) -> None:
    """Refuse a net made for another base model: its cross-attention width and block widths must be the UNet's."""
    ours, theirs = unet.config, net.config
    if ours.get("addition_embed_type") or theirs.get("addition_embed_type"):
        # an SDXL ControlNet needs the pooled text and size ids, which the control path does not pass yet
        raise VidldmError(f"{name}: SDXL ControlNets are not supported yet; vidldm runs ControlNets for SD 1.x/2.x bases")
    if theirs.cross_attention_dim != ours.cross_attention_dim:
        raise VidldmError(f"{name} was made for a base model with cross-attention dim {theirs.cross_attention_dim}, this "
                          f"model's is {ours.cross_attention_dim} (SD 1.x: 768, SD 2.x: 1024, SDXL: 2048); use one made for this base")
    if tuple(theirs.block_out_channels) != tuple(ours.block_out_channels) or (
            theirs.get("layers_per_block") != ours.layers_per_block):
        raise VidldmError(f"{name} has blocks {list(theirs.block_out_channels)} x {theirs.get('layers_per_block')}, this "
                          f"UNet {list(ours.block_out_channels)} x {ours.layers_per_block}; it was made for another base model")


# ----------------------------------------------------------------------------- files

KINDS = {"controlnet": ControlNetModel, "sparsectrl": SparseControlNetModel}
FLAGS = {"controlnet": "--controlnet", "sparsectrl": "--sparsectrl"}


def load_control_model(path, kind: str, unet, dtype: torch.dtype = torch.float32, device="cpu"):
    """A ControlNet (`kind` "controlnet") or SparseCtrl ("sparsectrl") for `unet` from a diffusers folder (config.json +
    weights) or a single file: diffusers' layout, SD's original ControlNet layout (`control_model.input_blocks...`,
    converted by diffusers' own single-file code) or AnimateDiff's SparseCtrl layout (motion modules renamed as
    diffusers' `convert_animatediff_sparsectrl_to_diffusers` does). A file's config is the UNet's, with what only
    the weights say read from them. One `VidldmError` line for a missing, corrupt or misfitting file."""
    from pathlib import Path

    from vidldm.errors import CheckpointError, first_line
    from vidldm.models.motion_formats import read_state_dict

    path, cls = Path(path), KINDS[kind]
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise CheckpointError(f"'{path}' is a folder without config.json; give a diffusers {cls.__name__} folder or a file")
        other = _declared_kind(config)
        if other is not None and other != kind:
            raise VidldmError(f"'{path}' is a {KINDS[other].__name__}; pass it with {FLAGS[other]}")
        try:
            net = cls.from_pretrained(str(path), local_files_only=True, low_cpu_mem_usage=False)
        except Exception as err:  # diffusers raises OSError, ValueError, safetensors errors...
            raise CheckpointError(f"cannot read the {cls.__name__} folder '{path}': {first_line(err)[:200]}") from err
    else:
        sd = read_state_dict(path)
        try:
            net = (sparsectrl_from_state_dict if kind == "sparsectrl" else controlnet_from_state_dict)(sd, unet)
        except VidldmError:
            raise
        except (RuntimeError, KeyError, ValueError, IndexError) as err:
            raise CheckpointError(f"'{path}' does not fit this model as a {cls.__name__} ({first_line(err)[:200]})") from err
    check_fits(net, unet, f"this {cls.__name__}")
    return net.to(device=device, dtype=dtype).eval()


def _declared_kind(config) -> str | None:
    """The kind a folder's config.json declares (None: neither); a corrupt one is a `CheckpointError` line."""
    from vidldm.models.motion_formats import read_config

    name = read_config(config, f"a diffusers {' or '.join(cls.__name__ for cls in KINDS.values())} folder").get("_class_name")
    return {"ControlNetModel": "controlnet", "SparseControlNetModel": "sparsectrl"}.get(name)


def _cross_attention_width(sd: dict[str, torch.Tensor]) -> int | None:
    """The text width the file's (spatial) cross-attentions take, in either layout."""
    for key, value in sd.items():
        if key.endswith("attn2.to_k.weight") and "motion_modules" not in key:
            return value.shape[1]
    return None


def _check_base(sd: dict[str, torch.Tensor], unet, what: str) -> None:
    width = _cross_attention_width(sd)
    if width is not None and width != unet.config.cross_attention_dim:
        raise VidldmError(f"this {what} was made for a base model with cross-attention dim {width}, this model's is "
                          f"{unet.config.cross_attention_dim} (SD 1.x: 768, SD 2.x: 1024, SDXL: 2048); use one made for this base")


def _embedding_channels(sd: dict[str, torch.Tensor]) -> tuple[int, tuple[int, ...]]:
    """(conditioning channels, `conditioning_embedding_out_channels`) of a conditioning embedding in diffusers' keys:
    `conv_in` then pairs of convolutions, the second of each pair widening."""
    prefix = "controlnet_cond_embedding."
    widths = [sd[prefix + "conv_in.weight"].shape[0]]
    i = 1
    while f"{prefix}blocks.{i}.weight" in sd:
        widths.append(sd[f"{prefix}blocks.{i}.weight"].shape[0])
        i += 2
    return sd[prefix + "conv_in.weight"].shape[1], tuple(widths)


def controlnet_from_state_dict(sd: dict[str, torch.Tensor], unet) -> ControlNetModel:
    """A `ControlNetModel` shaped as `unet` from tensors in diffusers' or SD's original layout."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    _check_base(sd, unet, "ControlNet")
    if "time_embedding.linear_1.weight" not in sd:
        if not any(k.startswith(("control_model.", "time_embed.0.")) for k in sd):
            raise VidldmError("no ControlNet weights found (expected diffusers keys like 'controlnet_down_blocks.0.weight' or "
                              "the original 'control_model.input_blocks...'); is it a ControlNet?")
        sd = convert_controlnet_checkpoint(sd, {"layers_per_block": unet.config.layers_per_block})
        _check_base(sd, unet, "ControlNet")
    channels, widths = _embedding_channels(sd)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=widths, load_weights_from_unet=False,
                                    conditioning_channels=channels)
    net.load_state_dict(sd, strict=True)
    return net


def sparsectrl_from_state_dict(sd: dict[str, torch.Tensor], unet) -> SparseControlNetModel:
    """A `SparseControlNetModel` shaped as `unet` from tensors in diffusers' or AnimateDiff's (v3) layout."""
    from vidldm.models.motion_formats import animatediff_to_diffusers

    if any(".temporal_transformer." in k for k in sd):  # AnimateDiff's names for the motion modules
        sd = animatediff_to_diffusers(sd)
    if not any(".motion_modules." in k for k in sd) or not any(k.startswith("controlnet_cond_embedding.") for k in sd):
        raise VidldmError("no SparseCtrl weights found (expected motion modules and a controlnet_cond_embedding); is it a "
                          "SparseCtrl file (v3_sd15_sparsectrl_rgb / _scribble)?")
    _check_base(sd, unet, "SparseCtrl")
    simplified = "controlnet_cond_embedding.weight" in sd
    if simplified:  # RGB: one convolution over latents (+ the mask channel)
        channels, widths = sd["controlnet_cond_embedding.weight"].shape[1], (16, 32, 96, 256)
    else:
        channels, widths = _embedding_channels(sd)
    pe = [v for k, v in sd.items() if k.endswith("pos_embed.pe")]
    net = _sparsectrl_like(unet, channels - 1, widths, simplified, pe[0].shape[1] if pe else 32)
    missing, unexpected = net.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("pos_embed.pe")]  # a fixed table, the same for every file
    if missing or unexpected:
        raise VidldmError(f"the SparseCtrl weights do not fit this model ({len(missing)} missing, e.g. "
                          f"{(missing or unexpected)[0]}); it was made for another base model")
    return net


def _sparsectrl_like(unet, channels: int, widths: tuple[int, ...], simplified: bool, max_seq_length: int) -> SparseControlNetModel:
    """A `SparseControlNetModel` with `unet`'s blocks taking `channels` conditioning channels (the mask comes on top)."""
    c = unet.config
    return SparseControlNetModel(
        in_channels=c.in_channels, conditioning_channels=channels, flip_sin_to_cos=c.flip_sin_to_cos,
        freq_shift=c.freq_shift, block_out_channels=c.block_out_channels, layers_per_block=c.layers_per_block,
        down_block_types=tuple("CrossAttnDownBlockMotion" if "CrossAttn" in t else "DownBlockMotion" for t in c.down_block_types),
        downsample_padding=c.downsample_padding, mid_block_scale_factor=c.mid_block_scale_factor, act_fn=c.act_fn,
        norm_num_groups=c.norm_num_groups, norm_eps=c.norm_eps, cross_attention_dim=c.cross_attention_dim,
        attention_head_dim=c.attention_head_dim, num_attention_heads=c.num_attention_heads,
        use_linear_projection=c.use_linear_projection, upcast_attention=c.upcast_attention,
        conditioning_embedding_out_channels=widths, use_simplified_condition_embedding=simplified,
        motion_max_seq_length=max_seq_length)


def new_keyframe_encoder(unet, motion_adapter) -> SparseControlNetModel:
    """A keyframe encoder to train for `unet` and its `motion_adapter` (`vidldm train`, stage `keyframe`): an RGB
    SparseCtrl (AnimateDiff v3's kind: the keyframes' VAE latents and a mask, one zero-initialised convolution in)
    whose blocks start as copies of the UNet's encoder half and whose motion modules start as the adapter's temporal
    attention where their shapes fit (vidldm's extra layers have no place in diffusers' modules and start fresh).

    Its output convolutions start at zero, as every ControlNet's do: untrained, it adds nothing, and the model is
    the one it was made from."""
    net = _sparsectrl_like(unet, unet.config.in_channels, (16, 32, 96, 256), True, motion_adapter.max_seq_length)
    for name in ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block"):
        getattr(net, name).load_state_dict(getattr(unet, name).state_dict(), strict=False)
    own = net.state_dict()
    from vidldm.models.motion_formats import animatediff_to_diffusers

    temporal = {k: v for k, v in motion_adapter.state_dict().items()
                if k.startswith("down_blocks.") and ".temporal_transformer." in k}
    fitting = {k: v for k, v in animatediff_to_diffusers(temporal).items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(fitting, strict=False)
    return net
