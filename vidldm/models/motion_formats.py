"""Motion-adapter checkpoint formats: AnimateDiff files and diffusers' `MotionAdapter`.

vidldm's own keys *are* AnimateDiff's (see `motion.py`), so an AnimateDiff checkpoint loads
after only inferring its shape from the keys. Diffusers renames the same tensors:

    AnimateDiff / vidldm                                  diffusers
    ...motion_modules.{j}.temporal_transformer.norm       ...motion_modules.{j}.norm
    ...transformer_blocks.{k}.attention_blocks.0.to_q     ...transformer_blocks.{k}.attn1.to_q
    ...transformer_blocks.{k}.attention_blocks.1.to_q     ...transformer_blocks.{k}.attn2.to_q
    ...transformer_blocks.{k}.norms.0 / norms.1           ...transformer_blocks.{k}.norm1 / norm2
    ...transformer_blocks.{k}.ff_norm                     ...transformer_blocks.{k}.norm3
    ...attention_blocks.{0,1}.pos_encoder.pe              ...transformer_blocks.{k}.pos_embed.pe (one, shared)
"""

from __future__ import annotations

import json
import os
import pickle
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from vidldm.errors import CheckpointError
from vidldm.models.motion import MotionAdapter

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

SPARSECTRL_NOT_ADAPTER = ("this has its own conv_in and condition encoder: it is a SparseCtrl model, not a motion adapter; "
                          "pass it with --sparsectrl (Python: pipe.set_controlnet, see docs/control.md)")

# (vidldm/AnimateDiff fragment, diffusers fragment); order matters for the reverse direction.
_RENAMES = [
    (".temporal_transformer.", "."),
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
    (".norms.0.", ".norm1."),
    (".norms.1.", ".norm2."),
    (".ff_norm.", ".norm3."),
]


# ----------------------------------------------------------------------------- files

def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` or pickled (`.ckpt/.pt/.pth/.bin`) file, unwrapped from `state_dict`.

    Pickles are read with `torch.load(weights_only=True)`: a file that needs arbitrary code to
    unpickle is refused rather than executed.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist; check the path")
    if path.is_dir():
        raise CheckpointError(f"'{path}' is a folder, not a checkpoint file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(path), device="cpu")
        except Exception as err:
            raise CheckpointError(f"cannot read '{path}': not a valid safetensors file ({_short(err)})") from err
    elif suffix in PICKLE_SUFFIXES:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if "GLOBAL" in str(err):  # the weights-only unpickler met a class or function it will not import
                raise CheckpointError(
                    f"refusing to load '{path}': it needs arbitrary code to unpickle (unsafe); "
                    "convert it to .safetensors with a tool you trust"
                ) from err
            raise CheckpointError(f"cannot read '{path}': corrupt or not a PyTorch checkpoint") from err
        except Exception as err:  # torch raises many types for truncated or foreign files
            raise CheckpointError(f"cannot read '{path}': corrupt or not a PyTorch checkpoint ({_short(err)})") from err
    else:
        raise CheckpointError(
            f"unknown checkpoint type '{path.name}'; expected .safetensors, {', '.join(PICKLE_SUFFIXES)} or a folder"
        )
    while isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if isinstance(sd, dict) and sd and all(isinstance(v, dict) for v in sd.values()):  # IP-Adapter .bin: two dicts
        sd = {f"{part}.{k}": v for part, tensors in sd.items() for k, v in tensors.items()}
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"'{path}' holds no tensor state dict; is it a model checkpoint?")
    # Checkpoints saved from DataParallel/DDP wrappers prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _short(err: BaseException) -> str:
    return str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__


# diffusers writes `diffusion_pytorch_model[.VARIANT][-0000k-of-0000n].safetensors` (transformers: `model...`);
# a variant is what `save_pretrained(variant="fp16")` puts before the suffix.
_WEIGHTS_NAME = re.compile(r"(?:diffusion_pytorch_model|model|pytorch_model)(?:\.(\w+?))?(?:-\d+-of-\d+)?\.(?:safetensors|bin)")


def weight_variants(folder: str | os.PathLike) -> set[str | None]:
    """The variants whose weights lie in one model folder: `None` for plain files, e.g. `{None, "fp16"}`."""
    folder = Path(folder)
    names = [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    return {m.group(1) for m in map(_WEIGHTS_NAME.fullmatch, names) if m}


def resolve_variant(folder: str | os.PathLike, variant: str | None = None) -> str | None:
    """The variant to load from a model folder: the one asked for if it is there, else the plain weights
    (as diffusers' pipelines do for a component saved without that variant); with none asked for, the
    plain weights, else the only variant there is. A `CheckpointError` names what the folder holds otherwise."""
    found = weight_variants(folder)
    if variant in found or (variant is not None and None in found):
        return variant if variant in found else None
    held = ", ".join(sorted("plain" if v is None else v for v in found))
    if variant is not None:
        raise CheckpointError(f"'{folder}' has no {variant} weights (it holds: {held or 'none'}); pick one with --variant")
    if not found:
        raise CheckpointError(f"'{folder}' has no weights file (diffusion_pytorch_model.safetensors or model.safetensors); "
                              "the folder is incomplete")
    if len(found) > 1:
        raise CheckpointError(f"'{folder}' holds weights in several variants ({held}) and no plain ones; pick one with --variant")
    return found.pop()


# ----------------------------------------------------------------------------- key layouts

def detect_layout(sd: dict[str, torch.Tensor]) -> str:
    """"animatediff" (also vidldm's own) or "diffusers"; a `CheckpointError` for anything else."""
    keys = [k for k in sd if ".motion_modules." in k]
    if any(".temporal_transformer." in k for k in keys):
        return "animatediff"
    if any(".attn1." in k for k in keys):
        return "diffusers"
    raise CheckpointError("no motion-module weights found (expected keys like 'down_blocks.0.motion_modules.0...')")


def diffusers_to_animatediff(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename diffusers `MotionAdapter` keys to vidldm/AnimateDiff keys (tensors are shared, not copied)."""
    out = {}
    for key, value in sd.items():
        if key.startswith("conv_in."):
            raise CheckpointError(SPARSECTRL_NOT_ADAPTER)
        m = re.match(r"(.*\.motion_modules\.\d+)\.(.*)", key)
        if m is None:
            raise CheckpointError(f"unexpected key in diffusers motion adapter: {key}")
        prefix, rest = m.groups()
        pe = re.match(r"(transformer_blocks\.\d+)\.pos_embed\.pe$", rest)
        if pe:  # diffusers shares one table per block; AnimateDiff stores it in both attentions
            for a in (0, 1):
                out[f"{prefix}.temporal_transformer.{pe.group(1)}.attention_blocks.{a}.pos_encoder.pe"] = value
            continue
        new = "." + rest
        for ours, theirs in _RENAMES[1:]:
            new = new.replace(theirs, ours)
        out[f"{prefix}.temporal_transformer{new}"] = value
    return out


def animatediff_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename vidldm/AnimateDiff keys to diffusers `MotionAdapter` keys."""
    out = {}
    for key, value in sd.items():
        if ".temporal_conv." in key:
            raise CheckpointError("diffusers' MotionAdapter has no temporal convolutions; this adapter cannot convert")
        pe = re.match(r"(.*)\.attention_blocks\.(\d+)\.pos_encoder\.pe$", key)
        if pe:
            if pe.group(2) == "0":
                out[pe.group(1).replace(".temporal_transformer.", ".") + ".pos_embed.pe"] = value
            continue
        new = key
        for ours, theirs in _RENAMES:
            new = new.replace(ours, theirs)
        out[new] = value
    return out


def infer_config(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The `MotionAdapter` config an AnimateDiff-layout state dict was made with.

    Reads channels from the GroupNorm weights, module counts from the indices, the mid block
    from its presence and the position-encoding length from `pos_encoder.pe` (AnimateDiff v1
    used 24 frames, v2/v3 32). The head count is not in the keys; every AnimateDiff release uses 8.
    """
    down: dict[int, dict[int, int]] = {}
    up: dict[int, dict[int, int]] = {}
    mid = False
    max_seq_length, layers, temporal_conv = None, 0, False
    for key, value in sd.items():
        m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.motion_modules\.(\d+)\.temporal_transformer\.norm\.weight$", key)
        if m:
            (down if m.group(1) == "down_blocks" else up).setdefault(int(m.group(2)), {})[int(m.group(3))] = value.shape[0]
        if key.startswith("mid_block.motion_modules."):
            mid = True
        if key.endswith("pos_encoder.pe"):
            max_seq_length = value.shape[1]
        t = re.search(r"\.transformer_blocks\.(\d+)\.", key)
        if t:
            layers = max(layers, int(t.group(1)) + 1)
        temporal_conv = temporal_conv or ".temporal_conv." in key
    if not down:
        raise CheckpointError("no down-block motion modules found; is this a motion-module checkpoint?")
    n = max(down) + 1
    if sorted(down) != list(range(n)) or sorted(up) != list(range(n)):
        raise CheckpointError(f"motion modules found for down blocks {sorted(down)} and up blocks {sorted(up)}; expected matching sets")
    channels = tuple(down[i][0] for i in range(n))
    per_block = tuple(len(down[i]) for i in range(n))
    if tuple(len(up[i]) for i in range(n)) != tuple(k + 1 for k in reversed(per_block)):
        raise CheckpointError("up-block motion module counts do not mirror the down blocks (expected one more each)")
    return dict(
        block_out_channels=channels,
        layers_per_block=per_block[0] if len(set(per_block)) == 1 else per_block,
        use_mid_block=mid,
        transformer_layers=max(layers, 1),
        max_seq_length=max_seq_length or 32,
        temporal_conv=temporal_conv,
    )


# ----------------------------------------------------------------------------- adapters

def adapter_from_state_dict(sd: dict[str, torch.Tensor], **overrides: Any) -> MotionAdapter:
    """Build a `MotionAdapter` from an AnimateDiff or diffusers state dict, strictly (no missing/extra keys)."""
    if any(k.startswith(("conv_in.", "controlnet_cond_embedding.")) for k in sd):
        raise CheckpointError(SPARSECTRL_NOT_ADAPTER)
    layout = detect_layout(sd)
    if layout == "diffusers":
        sd = diffusers_to_animatediff(sd)
        overrides.setdefault("norm_mode", "per_clip")
    config = {**infer_config(sd), **overrides}
    adapter = MotionAdapter(**config)
    own = adapter.state_dict()
    # Some exports drop the position tables (they are a fixed formula); keep the computed ones.
    sd = {**{k: v for k, v in own.items() if k.endswith("pos_encoder.pe")}, **sd}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"motion-module weights do not match the inferred layout: {what}")
    for key, value in sd.items():
        if value.shape != own[key].shape:
            raise CheckpointError(f"motion-module weight {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}")
    adapter.load_state_dict(sd, strict=True)
    return adapter


def load_motion_adapter(path: str | os.PathLike, variant: str | None = None, **overrides: Any) -> MotionAdapter:
    """A vidldm or diffusers adapter folder (plain or a `variant` such as "fp16", found by itself when it is
    the only one there), or an AnimateDiff `.ckpt` / `.safetensors` file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"motion adapter '{path}' does not exist; give a folder or a .ckpt/.safetensors file")
    with _about(path):
        if path.is_file():
            return adapter_from_state_dict(read_state_dict(path), **overrides)
        config = read_config(path / "config.json", "a motion adapter folder")
        variant = resolve_variant(path, variant)
        if "motion_layers_per_block" in config:  # diffusers' MotionAdapter
            weights = _weights_file(path, variant)
            overrides.setdefault("num_attention_heads", _single(config.get("motion_num_attention_heads", 8)))
            overrides.setdefault("norm_num_groups", config.get("motion_norm_num_groups", 32))
            return adapter_from_state_dict(read_state_dict(weights), **overrides)
        try:
            return MotionAdapter.from_pretrained(str(path), variant=variant, **overrides)
        except (OSError, ValueError, RuntimeError) as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(f"cannot load it: {_short(err)}") from err


@contextmanager
def _about(path: Path):
    """Name the adapter in a `CheckpointError` that does not name it yet (key-layout complaints do not)."""
    try:
        yield
    except CheckpointError as err:
        if str(path) in str(err):
            raise
        raise CheckpointError(f"motion adapter '{path}': {err}") from err


def read_config(path: Path, what: str) -> dict[str, Any]:
    """A folder's JSON config as a dict; a `CheckpointError` when it is missing or not a JSON object."""
    if not path.exists():
        raise CheckpointError(f"'{path.parent}' has no {path.name}; is it {what}?")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"'{path}' is not valid JSON ({_short(err)}); restore it from the model's source") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"'{path}' holds no JSON object; restore it from the model's source")
    return config


def diffusers_norm_groups(path: str | os.PathLike) -> int | None:
    """The GroupNorm size a diffusers `MotionAdapter` folder declares (`motion_norm_num_groups`); None for other formats.

    diffusers ignores it when it runs the adapter: `UNetMotionModel` normalises the temporal layers with the
    UNet's `norm_num_groups`. The loader compares the two, so a pair that would compute differently is refused."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return None
    config = read_config(path / "config.json", "a motion adapter folder")
    return config.get("motion_norm_num_groups", 32) if "motion_layers_per_block" in config else None


def _weights_file(folder: Path, variant: str | None = None) -> Path:
    names = [f"diffusion_pytorch_model.{variant}.{ext}" if variant else f"diffusion_pytorch_model.{ext}"
             for ext in ("safetensors", "bin")]
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise CheckpointError(f"'{folder}' has no {names[0]} (sharded adapters are not supported); the adapter folder is incomplete")


def to_diffusers(adapter: MotionAdapter):
    """The same weights as a diffusers `MotionAdapter` (for `UNetMotionModel` / `AnimateDiffPipeline`).

    Diffusers normalises per clip: an adapter with `norm_mode="per_frame"` converts, but gives
    slightly different results there.
    """
    from diffusers import MotionAdapter as DiffusersMotionAdapter

    c = adapter.config
    to_diffusers_check(adapter)
    theirs = DiffusersMotionAdapter(
        block_out_channels=tuple(c.block_out_channels),
        motion_layers_per_block=c.layers_per_block if isinstance(c.layers_per_block, int) else tuple(c.layers_per_block),
        motion_transformer_layers_per_block=c.transformer_layers,
        motion_mid_block_layers_per_block=1,
        motion_transformer_layers_per_mid_block=c.transformer_layers,
        motion_num_attention_heads=c.num_attention_heads,
        motion_norm_num_groups=c.norm_num_groups,
        motion_max_seq_length=c.max_seq_length,
        use_motion_mid_block=c.use_mid_block,
    )
    theirs.load_state_dict(animatediff_to_diffusers(adapter.state_dict()), strict=True)
    return theirs.to(adapter.dtype)


def from_diffusers(theirs, **overrides: Any) -> MotionAdapter:
    """A vidldm `MotionAdapter` from a diffusers one (per-clip normalisation, as diffusers computes)."""
    c = theirs.config
    overrides.setdefault("num_attention_heads", _single(c.motion_num_attention_heads))
    overrides.setdefault("norm_num_groups", c.motion_norm_num_groups)
    return adapter_from_state_dict(dict(theirs.state_dict()), **overrides)


# ----------------------------------------------------------------------------- diffusers' UNetMotionModel

# diffusers' motion blocks are its 2-D blocks with temporal layers added (their keys are the same plus
# `.motion_modules.`), so a `UNetMotionModel` splits into the image UNet and the adapter by key alone.
_IMAGE_BLOCKS = {"CrossAttnDownBlockMotion": "CrossAttnDownBlock2D", "DownBlockMotion": "DownBlock2D",
                 "CrossAttnUpBlockMotion": "CrossAttnUpBlock2D", "UpBlockMotion": "UpBlock2D"}
_MOTION_ONLY = ("motion_max_seq_length", "motion_num_attention_heads", "reverse_motion_num_attention_heads",
                "use_motion_mid_block", "temporal_transformer_layers_per_block", "mid_block_layers",
                "reverse_temporal_transformer_layers_per_block", "temporal_transformer_layers_per_mid_block",
                "transformer_layers_per_mid_block", "num_attention_heads")


def image_unet_config(motion_config: dict[str, Any]) -> dict[str, Any]:
    """The `UNet2DConditionModel` config of the image layers of a `UNetMotionModel` config.

    diffusers' `from_unet2d` copies the 2-D config and renames its blocks; this undoes it. The head
    count goes back to `attention_head_dim`, the name `UNet2DConditionModel` still reads it under."""
    c = {k: v for k, v in motion_config.items() if not k.startswith("_")}
    if c.get("mid_block_layers", 1) != 1:
        raise CheckpointError(f"this UNetMotionModel has {c['mid_block_layers']} mid-block layers; "
                              "a Stable Diffusion UNet has one, so it cannot split into an image UNet")
    per_block = c.get("transformer_layers_per_block", 1)
    last = per_block if isinstance(per_block, int) else per_block[-1]
    if c.get("transformer_layers_per_mid_block") not in (None, last):
        raise CheckpointError("this UNetMotionModel's mid block has its own transformer depth; "
                              "a UNet2DConditionModel cannot hold it")
    unknown = [t for t in (*c["down_block_types"], *c["up_block_types"]) if t not in _IMAGE_BLOCKS]
    if unknown:
        raise CheckpointError(f"UNetMotionModel block type {unknown[0]} is not supported; expected {', '.join(_IMAGE_BLOCKS)}")
    image = {k: v for k, v in c.items() if k not in _MOTION_ONLY}
    image.update(
        down_block_types=[_IMAGE_BLOCKS[t] for t in c["down_block_types"]],
        up_block_types=[_IMAGE_BLOCKS[t] for t in c["up_block_types"]],
        mid_block_type="UNetMidBlock2DCrossAttn",  # with or without the motion mid block, the image part is this
        attention_head_dim=c.get("num_attention_heads", 8),
    )
    return image


def split_motion_unet(motion_unet) -> tuple[Any, MotionAdapter]:
    """A diffusers `UNetMotionModel` (what `AnimateDiffPipeline.save_pretrained` writes to `unet/`) as the
    plain `UNet2DConditionModel` and the vidldm `MotionAdapter` it was made of; tensors are equal, not converted.

    The adapter normalises per clip with the UNet's `norm_num_groups`, as `UNetMotionModel` computes."""
    from diffusers import UNet2DConditionModel

    c = motion_unet.config
    sd = motion_unet.state_dict()
    motion = {k: v for k, v in sd.items() if ".motion_modules." in k}
    image = {k: v for k, v in sd.items() if ".motion_modules." not in k}
    adapter = adapter_from_state_dict(
        motion, num_attention_heads=_single(c.motion_num_attention_heads), norm_num_groups=c.norm_num_groups,
        max_seq_length=c.motion_max_seq_length,
    )
    if adapter.dtype != motion_unet.dtype:
        adapter = adapter.to(dtype=motion_unet.dtype)
    with torch.device("meta"):  # no random init of weights about to be replaced (seconds for SD 1.5)
        unet = UNet2DConditionModel(**image_unet_config(dict(c)))
    missing, unexpected = unet.load_state_dict(image, strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointError(f"the image layers of this UNetMotionModel do not fit a UNet2DConditionModel: "
                              f"{'missing' if missing else 'unexpected'} {(missing or unexpected)[:3]}")
    return unet.eval(), adapter.eval()


def check_diffusers_can_run(adapter: MotionAdapter, unet, lossy: bool = False) -> None:
    """Raise a `CheckpointError` unless diffusers' `UNetMotionModel` computes what vidldm computes with this pair.

    Hard limits: layers diffusers has no class for (`to_diffusers` names them) and a GroupNorm size of its own
    (diffusers normalises temporal layers with the UNet's). With `lossy`, two differences are allowed: per-frame
    normalisation (AnimateDiff's original code; diffusers normalises over the clip, as its own conversions of
    AnimateDiff checkpoints do) and frame conditioning (diffusers' pipeline cannot animate stills)."""
    c = adapter.config
    if c.norm_num_groups != unet.config.norm_num_groups:
        raise CheckpointError(
            f"the motion adapter normalises in {c.norm_num_groups} groups but the UNet in {unet.config.norm_num_groups}; "
            "diffusers' UNetMotionModel uses the UNet's for both, so it would compute another model"
        )
    to_diffusers_check(adapter)
    if lossy:
        return
    if c.norm_mode == "per_frame":
        raise CheckpointError(
            "the motion adapter normalises each frame on its own (AnimateDiff's original code) but diffusers' motion "
            "modules normalise over the whole clip, so diffusers would give slightly different frames; pass --lossy "
            "(lossy=True) to export it anyway, as diffusers' own AnimateDiff conversions are"
        )
    if c.get("frame_conditioning"):
        raise CheckpointError(
            "the motion adapter was trained to animate stills from clean known frames (frame conditioning), which "
            "diffusers' AnimateDiffPipeline cannot do; pass --lossy (lossy=True) to export its text-to-video alone"
        )


def to_diffusers_check(adapter: MotionAdapter) -> None:
    """Raise a `CheckpointError` if the adapter has layers diffusers' `MotionAdapter` cannot hold."""
    if adapter.config.temporal_conv:
        raise CheckpointError("diffusers' MotionAdapter has no temporal convolutions; this adapter cannot convert")
    _check_no_text_attention(adapter, "diffusers' MotionAdapter")


def _single(value: int | list[int] | tuple[int, ...]) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise CheckpointError(f"per-block head counts {tuple(value)} are not supported; vidldm uses one head count")
    return int(value[0])


def save_animatediff(adapter: MotionAdapter, path: str | os.PathLike) -> Path:
    """Write the adapter as an AnimateDiff-style motion-module file (`.safetensors` or `.ckpt`), atomically."""
    path = Path(path)
    _check_no_text_attention(adapter, "AnimateDiff's motion-module format")
    sd = {k: v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(sd, str(tmp))
        elif path.suffix in PICKLE_SUFFIXES:
            torch.save(sd, str(tmp))
        else:
            raise CheckpointError(f"cannot write '{path.name}': use a .safetensors or .ckpt file name")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_no_text_attention(adapter: MotionAdapter, target: str) -> None:
    if adapter.config.get("cross_attention_dim"):
        raise CheckpointError(f"{target} has no text cross-attention in temporal layers; save this adapter "
                              "with save_pretrained (a vidldm adapter folder) instead")
    if adapter.config.get("spatiotemporal_levels"):
        raise CheckpointError(f"{target} has no spatio-temporal attention layers; save this adapter "
                              "with save_pretrained (a vidldm adapter folder) instead")


def read_max_seq_length(path: str | os.PathLike) -> int:
    """The clip length an adapter file or folder was made for (its position table), read from its config or
    tensor headers without building it (training recipes are checked before any model loads)."""
    path = Path(path)
    if path.is_dir():
        config = read_config(path / "config.json", "a motion adapter folder")
        return int(config.get("max_seq_length", config.get("motion_max_seq_length", 32)))
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                if key.endswith("pos_encoder.pe") or key.endswith("pos_embed.pe"):
                    return f.get_slice(key).get_shape()[1]
        return 32
    sd = read_state_dict(path)
    return next((v.shape[1] for k, v in sd.items() if k.endswith(("pos_encoder.pe", "pos_embed.pe"))), 32)
